// The page for people: ask by national ID (any digit script) or by the booklet's barcode,
// show what the USSD answer shows (status, coverage end, tracking code; never a name), in
// Persian (right to left) or English. Talks only to this server (POST /v1/public/credit).
import { PATTERNS, STOP, START_A, START_B, START_C } from "/code128.js";

const TEXT = {
  fa: {
    title: "استعلام اعتبار دفترچه بیمه", switchTo: "English", label: "کد ملی",
    hint: "ده رقم، با ارقام فارسی یا انگلیسی", submit: "استعلام", scan: "خواندن بارکد دفترچه",
    asking: "در حال استعلام…", scanning: "بارکد دفترچه را جلوی دوربین بگیرید…",
    offline: "شما آفلاین هستید. صفحه باز است، اما استعلام به اینترنت نیاز دارد.",
    noNetwork: "اتصال به اینترنت برقرار نیست. استعلام به اینترنت نیاز دارد؛ دوباره تلاش کنید.",
    invalid: "کد ملی نامعتبر است. ده رقم کد ملی را وارد کنید.",
    notFound: "فردی با این کد ملی در سامانه نیست.",
    bookletNotFound: "دفترچه‌ای با این شماره در سامانه نیست.",
    limited: (s) => `تعداد استعلام‌ها زیاد است. ${digits(String(s), "fa")} ثانیه دیگر دوباره تلاش کنید.`,
    failed: "استعلام انجام نشد. کمی بعد دوباره تلاش کنید.",
    camera: "دوربین در دسترس نیست.",
    until: "اعتبار تا", open: "بدون تاریخ پایان", tracking: "کد پیگیری", booklet: "شماره دفترچه",
    status: {
      active: "دفترچه اعتبار دارد", expired: "اعتبار دفترچه تمام شده است", suspended: "بیمه معلق است",
      deceased: "فوت شده", main_insured_inactive: "بیمه‌شده اصلی اعتبار ندارد",
      main_insured_not_found: "بیمه‌شده اصلی یافت نشد", service_not_covered: "این خدمت پوشش ندارد",
    },
  },
  en: {
    title: "Insurance booklet credit", switchTo: "فارسی", label: "National ID",
    hint: "10 digits, in Persian or English digits", submit: "Check", scan: "Read the booklet's barcode",
    asking: "Checking…", scanning: "Hold the booklet's barcode in front of the camera…",
    offline: "You are offline. The page works, but checking needs the network.",
    noNetwork: "No network connection. Checking needs the network; please try again.",
    invalid: "This national ID is not valid. Enter the 10 digits of the national ID.",
    notFound: "Nobody with this national ID is insured.",
    bookletNotFound: "No booklet has this number.",
    limited: (s) => `Too many checks. Try again in ${s} seconds.`,
    failed: "The check did not go through. Please try again shortly.",
    camera: "No camera is available.",
    until: "Covered until", open: "no end date", tracking: "Tracking code", booklet: "Booklet number",
    status: {
      active: "Covered", expired: "Coverage has ended", suspended: "Insurance suspended",
      deceased: "Deceased", main_insured_inactive: "The main insured's coverage is not active",
      main_insured_not_found: "The main insured was not found", service_not_covered: "This service is not covered",
    },
  },
};

const $ = (id) => document.getElementById(id);
let lang = localStorage.getItem("lang") === "en" ? "en" : "fa";
let last = null; // the last answer, re-rendered when the language changes

/** ASCII digits as Persian digits (for Persian), or as they are. */
function digits(s, to) {
  return to === "fa" ? s.replace(/[0-9]/g, (d) => "۰۱۲۳۴۵۶۷۸۹"[d]) : s;
}

/** A national ID as typed or pasted: any digit script, separators dropped, leading zeros
 *  restored. `null` when it cannot be one. */
export function normalise(raw) {
  const ascii = raw.replace(/[۰-۹]/g, (d) => String(d.charCodeAt(0) - 0x06f0))
    .replace(/[٠-٩]/g, (d) => String(d.charCodeAt(0) - 0x0660))
    .replace(/[\s\-\u200c-\u200f\u202a-\u202e\u2066-\u2069]/g, "");
  if (!/^[0-9]{8,10}$/.test(ascii)) return null;
  return ascii.padStart(10, "0");
}

function applyLanguage() {
  const t = TEXT[lang];
  document.documentElement.lang = lang;
  document.documentElement.dir = lang === "fa" ? "rtl" : "ltr";
  document.title = t.title;
  $("title").textContent = t.title;
  $("lang").textContent = t.switchTo;
  $("lang").lang = lang === "fa" ? "en" : "fa";
  $("lang").dir = lang === "fa" ? "ltr" : "rtl";
  $("id-label").textContent = t.label;
  $("id-hint").textContent = t.hint;
  $("submit").textContent = t.submit;
  $("scan").textContent = t.scan;
  $("offline").textContent = t.offline;
  if (last) render(last);
}

function render(result) {
  last = result;
  const t = TEXT[lang];
  const box = $("answer");
  box.replaceChildren();
  if (result.message) {
    const p = document.createElement("p");
    p.className = "error";
    p.id = "error";
    p.textContent = typeof result.message === "function" ? result.message(t) : t[result.message];
    box.append(p);
    return;
  }
  const a = result.answer;
  const card = document.createElement("div");
  card.className = "card " + (a.eligible ? "ok" : "bad");
  const status = document.createElement("p");
  status.className = "status";
  status.id = "status";
  status.dataset.status = a.status;
  status.textContent = t.status[a.status] || a.status;
  const dl = document.createElement("dl");
  const row = (term, value, id) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.id = id;
    dl.append(dt, dd);
  };
  const until = lang === "fa"
    ? (a.coverage_until_jalali ? digits(a.coverage_until_jalali, "fa") : t.open)
    : (a.coverage_until || t.open);
  row(t.until, until, "until");
  row(t.tracking, digits(a.tracking_code, lang), "tracking");
  if (result.booklet) row(t.booklet, digits(result.booklet, lang), "booklet");
  card.append(status, dl);
  box.append(card);
}

async function ask(body, booklet) {
  $("answer").textContent = TEXT[lang].asking;
  let response;
  try {
    response = await fetch("/v1/public/credit", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    render({ message: "noNetwork" });
    return;
  }
  let json = null;
  try { json = await response.json(); } catch { /* not JSON: a proxy's page */ }
  if (response.ok && json) {
    render({ answer: json, booklet });
    return;
  }
  const code = json && json.error && json.error.code;
  if (code === "invalid_national_id") render({ message: "invalid" });
  else if (code === "member_not_found") render({ message: "notFound" });
  else if (code === "booklet_not_found") render({ message: "bookletNotFound" });
  else if (code === "rate_limited") {
    const wait = Number(response.headers.get("retry-after")) || 60;
    render({ message: (t) => t.limited(wait) });
  } else render({ message: "failed" });
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = normalise($("id").value);
  if (!id) {
    render({ message: "invalid" });
    $("id").focus();
    return;
  }
  ask({ national_id: id });
});

$("lang").addEventListener("click", () => {
  lang = lang === "fa" ? "en" : "fa";
  localStorage.setItem("lang", lang);
  applyLanguage();
});

function showOnline() {
  $("offline").hidden = navigator.onLine;
}
window.addEventListener("online", showOnline);
window.addEventListener("offline", showOnline);

// The barcode: the browser's BarcodeDetector where there is one, else the reader below.
let scanning = false;
async function scan() {
  if (scanning) return;
  const video = $("camera");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch {
    render({ message: "camera" });
    return;
  }
  scanning = true;
  $("answer").textContent = TEXT[lang].scanning;
  video.hidden = false;
  video.srcObject = stream;
  await video.play();
  const detector = "BarcodeDetector" in window
    ? new window.BarcodeDetector({ formats: ["code_128"] }) : null;
  const canvas = $("frame");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const started = Date.now();
  while (scanning && Date.now() - started < 30000) {
    let text = null;
    if (detector) {
      const found = await detector.detect(video).catch(() => []);
      text = found.length ? found[0].rawValue : null;
    } else if (video.videoWidth) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      ctx.drawImage(video, 0, 0);
      text = readCode128(ctx.getImageData(0, 0, canvas.width, canvas.height));
    }
    if (text && /^[0-9]{1,18}$/.test(text)) {
      scanning = false;
      stream.getTracks().forEach((track) => track.stop());
      video.hidden = true;
      await ask({ booklet_no: text }, text);
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  scanning = false;
  stream.getTracks().forEach((track) => track.stop());
  video.hidden = true;
}
$("scan").addEventListener("click", scan);
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) $("scan").hidden = false;

/** Reads a Code 128 barcode from an image: scans rows across the middle, each as runs of
 *  dark and light, and decodes the first row whose symbols, checksum and stop agree. */
export function readCode128(image) {
  const { width, height, data } = image;
  for (const fraction of [0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65]) {
    const y = Math.floor(height * fraction);
    const row = new Float32Array(width);
    let min = 255, max = 0;
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 4;
      const v = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      row[x] = v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    if (max - min < 40) continue;
    const threshold = (min + max) / 2;
    const runs = [];
    let dark = row[0] < threshold, length = 0;
    for (let x = 0; x < width; x++) {
      const d = row[x] < threshold;
      if (d === dark) length++;
      else {
        runs.push(length);
        dark = d;
        length = 1;
      }
    }
    runs.push(length);
    const startsDark = row[0] < threshold;
    const text = decodeRuns(runs, startsDark ? 0 : 1);
    if (text !== null) return text;
  }
  return null;
}

function widthsOf(runs, at, count) {
  const slice = runs.slice(at, at + count);
  if (slice.length < count) return null;
  const modules = count === 7 ? 13 : 11;
  const unit = slice.reduce((a, b) => a + b, 0) / modules;
  return slice.map((r) => Math.min(4, Math.max(1, Math.round(r / unit)))).join("");
}

/** Decodes runs (alternating dark/light, the first dark one at `firstDark`). */
function decodeRuns(runs, firstDark) {
  for (let start = firstDark; start + 6 < runs.length; start += 2) {
    const first = PATTERNS.indexOf(widthsOf(runs, start, 6));
    if (first !== START_A && first !== START_B && first !== START_C) continue;
    const values = [first];
    let at = start + 6, ok = false;
    while (at + 6 < runs.length) {
      if (widthsOf(runs, at, 7) === STOP) { ok = true; break; }
      const v = PATTERNS.indexOf(widthsOf(runs, at, 6));
      if (v < 0) break;
      values.push(v);
      at += 6;
    }
    if (!ok || values.length < 3) continue;
    const check = values.pop();
    const sum = values.reduce((acc, v, i) => acc + v * Math.max(1, i), 0);
    if (sum % 103 !== check) continue;
    let set = first === START_A ? "A" : first === START_B ? "B" : "C", text = "";
    for (const v of values.slice(1)) {
      if (v === 99) set = "C";
      else if (v === 100) set = "B";
      else if (v === 101) set = "A";
      else if (v > 101) continue;
      else if (set === "C") text += String(v).padStart(2, "0");
      else if (set === "B") text += String.fromCharCode(v + 32);
      else text += v < 64 ? String.fromCharCode(v + 32) : String.fromCharCode(v - 64);
    }
    return text;
  }
  return null;
}

if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => {});
showOnline();
applyLanguage();
