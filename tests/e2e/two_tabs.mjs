// Two pages of the todo demo in headless Chromium: one adds and renames a todo, the other
// shows it within a second; the server restarts (the Rust test does it when this script
// prints RESTART and answers RESTARTED on stdin); both pages reconnect and changes flow
// again. Usage: node two_tabs.mjs URL SCREENSHOT.png
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, screenshot] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const fail = async (message) => {
  console.error(message);
  await browser.close();
  process.exit(1);
};

try {
  const context = await browser.newContext();
  const [a, b] = [await context.newPage(), await context.newPage()];
  for (const [page, user] of [[a, "ann"], [b, "ben"]]) {
    page.on("pageerror", (error) => console.error("page error:", error.message));
    page.on("console", (message) => { if (message.type() === "error") console.error("console:", message.text()); });
    await page.goto(`${url}?user=${user}`);
    await page.waitForSelector("#status.connected", { timeout: 5000 });
  }
  const within = { timeout: 1000 };

  // A adds; B shows it within a second.
  await a.fill("#new-title", "milk");
  await a.click("#add");
  await b.waitForFunction(
    () => [...document.querySelectorAll("li input.title")].some((i) => i.value === "milk"),
    null, within);
  console.log("B sees the new todo");

  // Presence: each page shows that the other has the todo open (a presence request, then
  // joins and leaves).
  for (const [page, other] of [[a, "ben"], [b, "ann"]]) {
    try {
      await page.waitForFunction(
        (other) => [...document.querySelectorAll("li .viewers")].some((v) => v.textContent === `also here: ${other}`),
        other, { timeout: 5000, polling: 50 });
    } catch (error) {
      const seen = await page.evaluate(() => [...document.querySelectorAll("li .viewers")].map((v) => v.textContent));
      await fail(`a page does not show ${other} looking at the todo: ${JSON.stringify(seen)}`);
    }
  }
  console.log("each page shows the other looking at the todo");

  // A renames; B shows it within a second.
  const row = a.locator("li").filter({ has: a.locator('input.title') }).first();
  await row.locator("input.title").fill("oat milk");
  await row.locator("button.rename").click();
  await b.waitForFunction(
    () => [...document.querySelectorAll("li input.title")].some((i) => i.value === "oat milk"),
    null, within);
  console.log("B sees the rename");

  // B's connection drops while A edits: B shows the changes once it is back, replayed by
  // the server from B's last position, without a reload and without fetching the list.
  // A's own push of the rename must have arrived first: it would set A's input back.
  // (Polled by time: a background tab gets no animation frames.)
  await a.waitForFunction(
    () => (window.rohrpostDemo.positions()["todo-1"]?.offset ?? 0) >= 2, null,
    { timeout: 2000, polling: 50 });
  const fetchesBefore = await b.evaluate(() => window.rohrpostDemo.listFetches());
  await b.evaluate(() => window.rohrpostDemo.drop());
  await b.waitForSelector("#status.reconnecting", within);
  await row.locator("input.title").fill("soy milk");
  await row.locator("button.rename").click();
  await a.fill("#new-title", "eggs");
  await a.click("#add");
  for (const title of ["soy milk", "eggs"]) {
    try {
      await b.waitForFunction(
        (title) => [...document.querySelectorAll("li input.title")].some((i) => i.value === title),
        title, { timeout: 5000 });
    } catch (error) {
      const seen = await b.evaluate(() => ({
        status: document.getElementById("status").textContent,
        titles: [...document.querySelectorAll("li input.title")].map((i) => i.value),
        fetches: window.rohrpostDemo.listFetches(),
        positions: window.rohrpostDemo.positions(),
      }));
      await fail(`B does not show ${title} after its reconnection: ${JSON.stringify(seen)}`);
    }
  }
  await b.waitForSelector("#status.connected", within);
  const fetchesAfter = await b.evaluate(() => window.rohrpostDemo.listFetches());
  if (fetchesAfter !== fetchesBefore) await fail(`B fetched the list again (${fetchesBefore} -> ${fetchesAfter})`);
  console.log("B resumed and shows what it missed without refetching");

  // The server restarts; both pages notice, reconnect and resubscribe.
  console.log("RESTART");
  const answer = await lines.next();
  if (answer.value !== "RESTARTED") await fail(`unexpected answer ${answer.value}`);
  for (const page of [a, b]) {
    await page.waitForSelector("#status.connected", { timeout: 10000 });
  }
  console.log("both pages reconnected");

  // Changes flow again, both ways.
  await b.fill("#new-title", "bread");
  await b.click("#add");
  await a.waitForFunction(
    () => [...document.querySelectorAll("li input.title")].some((i) => i.value === "bread"),
    null, { timeout: 2000 });
  console.log("A sees B's todo after the restart");

  await a.screenshot({ path: screenshot, fullPage: true });
  console.log("DONE");
  await browser.close();
  process.exit(0);
} catch (error) {
  await fail(`e2e failed: ${error.message}`);
}
