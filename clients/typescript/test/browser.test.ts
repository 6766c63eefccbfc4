// The demo agent desktop in a real browser (Debian's Chromium, headless,
// driven by playwright-core): the page is served from one origin
// (127.0.0.1:<A>, demo/serve.mjs) and talks gRPC-Web to authzd on another
// (127.0.0.1:<B>), which allows the page's origin with --cors-allowed-origin.
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import type { Server } from "node:http";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { createAuthzdClient } from "../src/index.js";
import { createNodeTransport } from "../src/node.js";
// @ts-expect-error: a plain ES module without types
import { serveDemo } from "../demo/serve.mjs";
import { putWebCallbackAgentRole, WEB_CALLBACK_PRIVILEGES } from "./support/demo.js";
import { AuthzdServer, repoRoot } from "./support/server.js";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SHOTS = join(repoRoot, "target", "ts-client");

let web: Server;
let origin: string;
let server: AuthzdServer;
let browser: Browser;
let page: Page;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (scripts/test-clients.sh does), or set CHROMIUM_BIN`);
  }
  if (!existsSync(new URL("../demo/dist/app.js", import.meta.url))) {
    throw new Error("demo/dist/app.js is missing: npm run bundle:demo");
  }
  web = await serveDemo(0);
  const addr = web.address();
  assert.ok(addr && typeof addr === "object");
  origin = `http://127.0.0.1:${addr.port}`;
  server = await AuthzdServer.start({ args: ["--cors-allowed-origin", origin] });
  assert.notEqual(new URL(server.url).origin, origin, "the page and the API must be different origins");
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  page.on("console", (m) => {
    if (m.type() === "error") console.error(`[page] ${m.text()}`);
  });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await new Promise((ok) => (web ? web.close(ok) : ok(undefined)));
});

/** The enabled state of each button, by its label. */
async function buttons(): Promise<Record<string, boolean>> {
  return page.$$eval("button[data-privilege]", (bs) =>
    Object.fromEntries(bs.map((b) => [b.textContent!.trim(), !(b as HTMLButtonElement).disabled])),
  );
}

const ALL_ENABLED = {
  Cancel: true,
  Decline: true,
  Reject: true,
  Reschedule: true,
  "Reschedule Before Call": true,
  "Reschedule On New Number": true,
  "Set Disposition": true,
  "Mark Done": true,
};

test("the agent desktop follows the agent's privileges across a role change and a server restart, with no reload", async () => {
  const admin = createAuthzdClient(createNodeTransport({ baseUrl: server.url }));
  let navigations = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations++;
  });

  await page.goto(`${origin}/?api=${encodeURIComponent(server.url)}&tenant=acme&person=wcb-agent-full`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 10_000 });
  assert.equal(new URL(page.url()).origin, origin);
  assert.deepEqual(await buttons(), ALL_ENABLED, "wcb-agent-full holds every Web Callback privilege");
  assert.equal(WEB_CALLBACK_PRIVILEGES.length, 9); // 8 buttons + "Can Use Web Callback Channel"
  await page.screenshot({ path: join(SHOTS, "agent-desktop-1-initial.png") });

  // A role change through the admin API disables Reschedule within 1 s, no reload.
  await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
  const t0 = Date.now();
  const rev1 = await putWebCallbackAgentRole(admin, ["Web Callback - Can Reschedule"]);
  await page.waitForFunction(
    () => document.querySelector<HTMLButtonElement>('button[data-privilege="Web Callback - Can Reschedule"]')?.disabled === true,
    undefined,
    { timeout: 1000, polling: 10 },
  );
  const ms = Date.now() - t0;
  assert.ok(ms < 1000, `Reschedule disabled after ${ms} ms`);
  console.log(`# Reschedule disabled ${ms} ms after the write was sent`);
  assert.deepEqual(await buttons(), { ...ALL_ENABLED, Reschedule: false, "Reschedule Before Call": false });
  assert.equal(await page.getAttribute("body", "data-revision"), String(rev1));
  await page.screenshot({ path: join(SHOTS, "agent-desktop-2-reschedule-removed.png") });

  // The server is killed; a change is made while it is down (another authzd
  // on the same store); the server comes back on the same port.
  await server.stop("SIGKILL");
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 10_000 });
  await page.screenshot({ path: join(SHOTS, "agent-desktop-3-reconnecting.png") });
  const other = await AuthzdServer.start({ dir: server.dir });
  const rev2 = await putWebCallbackAgentRole(createAuthzdClient(createNodeTransport({ baseUrl: other.url })), [
    "Web Callback - Can Reschedule",
    "Web Callback - Can Mark Done",
  ]);
  await other.stop();
  assert.ok(rev2 > rev1);
  assert.equal((await buttons())["Mark Done"], true, "nothing changes on the page while the server is down");
  await server.restart();
  await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });
  await page.waitForFunction(
    () => document.querySelector<HTMLButtonElement>('button[data-privilege="Web Callback - Can Mark Done"]')?.disabled === true,
    undefined,
    { timeout: 5000, polling: 10 },
  );
  assert.deepEqual(await buttons(), { ...ALL_ENABLED, Reschedule: false, "Reschedule Before Call": false, "Mark Done": false });
  assert.equal(await page.getAttribute("body", "data-revision"), String(rev2));
  assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), 42, "the page was not reloaded");
  assert.equal(navigations, 1, "one navigation: the first load");
  const logText = await page.textContent("#log");
  assert.match(logText ?? "", /resync \(reconnected\) at revision \d+: lost Web Callback - Can Mark Done/);
  await page.screenshot({ path: join(SHOTS, "agent-desktop-4-after-restart.png") });
});

test("an origin the server does not allow is refused by the browser", async () => {
  // The same page from a second origin (localhost instead of 127.0.0.1) that is not in --cors-allowed-origin.
  const addr = web.address();
  assert.ok(addr && typeof addr === "object");
  const foreign = `http://localhost:${addr.port}`;
  const p = await browser.newPage();
  try {
    await p.goto(`${foreign}/?api=${encodeURIComponent(server.url)}&tenant=acme&person=wcb-agent-full`);
    await p.waitForSelector('#status[data-state="reconnecting"]', { timeout: 10_000 });
    assert.equal(await p.getAttribute("body", "data-revision"), null, "no state reached the page");
    assert.deepEqual(
      Object.values(await p.$$eval("button[data-privilege]", (bs) => bs.map((b) => (b as HTMLButtonElement).disabled))).every(Boolean),
      true,
      "every button stays disabled",
    );
  } finally {
    await p.close();
  }
});
