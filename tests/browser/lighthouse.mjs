// Lighthouse (npm `lighthouse`, its default mobile run: a Moto G Power's screen, a slow 4G
// link and a 4x slower CPU, simulated) on the page for people, in Debian's headless Chromium.
// Fails when a category it reports scores below MIN (0.95 unless set), or when the audits
// this page is held to do not pass: text compressed, a meta description.
// Started by tests/it/web_page.rs, which starts eligd and passes BASE (and OUT, where the
// report is written as lighthouse.json).
import { launch } from "chrome-launcher";
import lighthouse from "lighthouse";
import { writeFileSync } from "node:fs";

const BASE = process.env.BASE;
if (!BASE) throw new Error("BASE is not set");
const MIN = Number(process.env.MIN || "0.95");

const chrome = await launch({
  chromePath: process.env.CHROMIUM || "/usr/bin/chromium",
  chromeFlags: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  logLevel: "silent",
});
let result;
try {
  result = await lighthouse(`${BASE}/`, { port: chrome.port, output: "json", logLevel: "error" });
} finally {
  await chrome.kill();
}
const { lhr } = result;
if (process.env.OUT) writeFileSync(`${process.env.OUT}/lighthouse.json`, result.report);

const failures = [];
if (lhr.runtimeError) failures.push(`runtime error: ${lhr.runtimeError.code} ${lhr.runtimeError.message}`);
const categories = Object.values(lhr.categories);
if (categories.length === 0) failures.push("no category reported");
for (const c of categories) {
  console.log(`${c.id}: ${c.score}`);
  if (c.score === null || c.score < MIN) {
    const lost = c.auditRefs
      .filter((r) => r.weight > 0 && lhr.audits[r.id].score !== null && lhr.audits[r.id].score < 1)
      .map((r) => `${r.id} (${lhr.audits[r.id].score})`);
    failures.push(`${c.id} scores ${c.score}, below ${MIN}: ${lost.join(", ")}`);
  }
}
// Held to besides the scores (Lighthouse weighs neither into performance).
for (const id of ["uses-text-compression", "meta-description"]) {
  const audit = lhr.audits[id];
  if (!audit) failures.push(`no ${id} audit in this Lighthouse`);
  else if (audit.score !== null && audit.score < 1) failures.push(`${id}: ${audit.title} (${audit.displayValue || audit.score})`);
}
console.log(`lighthouse ${lhr.lighthouseVersion}, ${lhr.configSettings.formFactor}, ${lhr.configSettings.throttlingMethod}`);
if (failures.length) {
  console.error("FAILED:\n- " + failures.join("\n- "));
  process.exit(1);
}
console.log("lighthouse: every category at least " + MIN);
