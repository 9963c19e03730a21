// The playground in a real browser: Debian's Chromium, headless, driven by Playwright.
//
//   node playground.mjs URL SCREENSHOT.png
//
// Types into the page as a person would, streams its sample lines with the keyboard, and makes a
// call fail (the server under test is started with a small --max-message-bytes). Prints what the
// page showed as one JSON object for the Rust test to check, and saves a screenshot of the page
// as a person would see it. Chromium comes from CHROMIUM (the test finds it), else /usr/bin/chromium.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "formatdata-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 900, height: 1000 },
});
const seen = { console: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (message) => seen.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => seen.console.push(`pageerror: ${error.message}`));
  await page.goto(url);
  seen.title = await page.title();

  // Uppercase as you type: one key at a time, found by its label.
  const text = page.getByLabel("Text", { exact: true });
  await text.pressSequentially("hello, wörld", { delay: 20 });
  const reply = page.locator("#reply");
  await page.waitForFunction(() => document.getElementById("reply").textContent === "HELLO, WÖRLD");
  seen.reply = await reply.textContent();
  await page.waitForFunction(() => document.getElementById("unary-status").textContent.startsWith("OK"));
  seen.status = await page.locator("#unary-status").textContent();

  // Stream the sample lines, with the keyboard only: from the text area, Tab to the button.
  await page.getByRole("textbox", { name: /^Lines/ }).focus();
  await page.keyboard.press("Tab");
  seen.focused = await page.evaluate(() => document.activeElement.id);
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.getElementById("stream-status").textContent.startsWith("OK"));
  seen.lines = await page.locator("#replies .text").allTextContents();
  seen.streamStatus = await page.locator("#stream-status").textContent();
  await page.screenshot({ path: screenshot, fullPage: true });

  // A call the server refuses shows its gRPC status.
  await text.fill("x".repeat(200));
  await page.waitForFunction(() => !document.getElementById("unary-status").textContent.startsWith("OK"));
  seen.errorStatus = await page.locator("#unary-status").textContent();
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(seen));
