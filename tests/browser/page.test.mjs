// What a person does with the page, in headless Chromium (Debian's), with a screenshot of
// each step: types a national ID in Persian digits and reads the answer; switches to
// English; goes offline and reloads (the app opens, and says asking needs the network); reads
// the booklet's barcode from a (fake) camera. axe-core checks accessibility at each step.
// Started by tests/it/web_page.rs, which starts eligd and passes:
//   BASE, OUT, ID (Persian digits), ID_STATUS, BOOKLET, BOOKLET_STATUS, VIDEO (a .y4m file)
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const [BASE, OUT] = [env("BASE"), env("OUT")];
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const failures = [];
const check = (ok, what) => { if (!ok) failures.push(what); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    `--use-file-for-fake-video-capture=${env("VIDEO")}`,
  ],
});
const context = await browser.newContext({ viewport: { width: 360, height: 740 }, deviceScaleFactor: 1 });
await context.grantPermissions(["camera"], { origin: BASE });
const page = await context.newPage();
const outside = [];
page.on("request", (r) => { if (!r.url().startsWith(BASE) && !r.url().startsWith("data:") && !r.url().startsWith("blob:")) outside.push(r.url()); });
const consoleErrors = [];
// The offline step's failed fetch is expected and reported by the browser itself.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().includes("ERR_INTERNET_DISCONNECTED")) consoleErrors.push(m.text());
});

async function accessibility(step) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) failures.push(`${step}: axe ${v.impact} ${v.id}: ${v.help}`);
  return result.violations.length;
}

// 1. Persian, an ID typed in Persian digits.
await page.goto(`${BASE}/`);
await page.evaluate(() => navigator.serviceWorker.ready);
check(await page.evaluate(() => document.documentElement.lang) === "fa", "the page opens in Persian");
check(await page.evaluate(() => document.documentElement.dir) === "rtl", "right to left");
const width = await page.evaluate(() => document.documentElement.scrollWidth);
check(width <= 360, `fits a 360 px screen (scroll width ${width})`);
await page.fill("#id", env("ID"));
await page.click("#submit");
await page.waitForSelector("#status");
check(await page.getAttribute("#status", "data-status") === env("ID_STATUS"), "the answer's status");
const untilFa = await page.textContent("#until");
check(/[۰-۹]/.test(untilFa) || untilFa.includes("بدون"), `coverage end in Persian digits (${untilFa})`);
check(/^[۰-۹]+$/.test(await page.textContent("#tracking")), "tracking code in Persian digits");
check(!(await page.textContent("#answer")).match(/[A-Za-z]{3,}/), "no Latin text (no name) in the Persian answer");
await accessibility("Persian answer");
await page.screenshot({ path: `${OUT}/1-persian-answer.png`, fullPage: true });

// An ID that cannot be one: said clearly, without asking the server.
await page.fill("#id", "۱۲۳");
await page.click("#submit");
await page.waitForSelector("#error");
check((await page.textContent("#error")).includes("نامعتبر"), "an invalid ID is said to be invalid");

// 2. English.
await page.click("#lang");
check(await page.evaluate(() => document.documentElement.lang) === "en", "switched to English");
check(await page.evaluate(() => document.documentElement.dir) === "ltr", "left to right");
// The last answer is shown again in English (the invalid ID's message, here): ask again.
await page.fill("#id", env("ID"));
await page.click("#submit");
await page.waitForSelector("#status");
const untilEn = await page.textContent("#until");
check(/^\d{4}-\d{2}-\d{2}$/.test(untilEn) || untilEn === "no end date", `coverage end in ISO (${untilEn})`);
await accessibility("English answer");
await page.screenshot({ path: `${OUT}/2-english-answer.png`, fullPage: true });

// 3. Offline: the app still opens, and says asking needs the network.
await context.setOffline(true);
await page.reload();
await page.waitForSelector("#offline:not([hidden])");
await page.fill("#id", env("ID"));
await page.click("#submit");
await page.waitForSelector("#error");
check((await page.textContent("#error")).includes("network"), "offline: asking needs the network");
await accessibility("offline");
await page.screenshot({ path: `${OUT}/3-offline.png`, fullPage: true });
await context.setOffline(false);

// 4. The booklet's barcode, from the camera.
await page.reload();
await page.click("#scan");
await page.waitForSelector("#booklet", { timeout: 30000 });
check(await page.textContent("#booklet") === env("BOOKLET"), "the barcode's booklet number");
check(await page.getAttribute("#status", "data-status") === env("BOOKLET_STATUS"), "the booklet holder's status");
await page.screenshot({ path: `${OUT}/4-barcode.png`, fullPage: true });

check(outside.length === 0, `loads nothing from outside (${outside.join(", ")})`);
check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(" | ")})`);
await browser.close();
if (failures.length) {
  console.error("FAILED:\n- " + failures.join("\n- "));
  process.exit(1);
}
console.log("page: all steps passed");
