// How fast the explorer's person view is ready on the benchmark tenant
// (10,000 persons, 100,000 metrics: `authzd bench`'s generated tenant).
// A benchmark, not a test: it prints p50 / p90, it asserts nothing.
//
//   npm run bench:explorer                      # release build if there, else debug
//   AUTHZD_BIN=/path/to/authzd npm run bench:explorer -- --loads 30
//
// 1. starts `authzd serve --explorer` on a fresh SQLite store (a free port);
// 2. imports the benchmark tenant with `authzd bench` and a run of the
//    health workload only, 100 ms long (the import is what is wanted);
// 3. opens /explorer/?tenant=bench&view=person&person=<p> in headless
//    Chromium, --loads times (a fresh page each, persons spread over the
//    tenant), and takes "ready": the `explorer-ready` performance mark the page
//    sets once the person view is rendered (milliseconds since navigation
//    start, so it includes loading the page and the script);
// 4. prints each load, then p50 / p90 / max, the objects rendered, and when
//    the last answer had arrived (`explorer-fetched`: the rest is rendering).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const loads = Number(opt("loads", "20"));
const persons = Number(opt("persons", "10000"));
const target = process.env.CARGO_TARGET_DIR ? resolve(root, process.env.CARGO_TARGET_DIR) : join(root, "target");
const bin =
  process.env.AUTHZD_BIN ?? [join(target, "release", "authzd"), join(target, "debug", "authzd")].find((b) => existsSync(b));
if (!bin || !existsSync(bin)) {
  console.error(`no authzd binary (set AUTHZD_BIN, or cargo build --release --bin authzd); looked in ${target}`);
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";

const freePort = () =>
  new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

const dir = mkdtempSync(join(tmpdir(), "authzd-explorer-bench-"));
const port = await freePort();
const metrics = await freePort();
const url = `http://127.0.0.1:${port}`;
console.log(`server: ${bin}`);
const server = spawn(
  bin,
  ["serve", "--explorer", "--store", `sqlite://${join(dir, "authzd.db")}`, "--listen", `127.0.0.1:${port}`, "--metrics-listen", `127.0.0.1:${metrics}`],
  { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } },
);
const stop = () => server.kill("SIGTERM");
process.on("exit", stop);
try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${metrics}/readyz`)).status === 200) break;
    } catch {}
    if (i > 400) throw new Error("authzd did not become ready");
    await new Promise((ok) => setTimeout(ok, 50));
  }
  const t0 = Date.now();
  const imp = spawnSync(
    bin,
    ["bench", "--server", url, "--persons", String(persons), "--workloads", "health", "--duration", "100ms", "--warmup", "0s", "--quiet"],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  if (imp.status !== 0) throw new Error(`authzd bench (the import) failed with ${imp.status}`);
  console.log(`benchmark tenant imported (${persons} persons) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  const times = [];
  const fetched = [];
  let objects = 0;
  try {
    for (let i = 0; i < loads + 1; i++) {
      const person = `p${String(Math.floor((i * 7919) % persons)).padStart(6, "0")}`;
      const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
      await page.goto(`${url}/explorer/?tenant=bench&view=person&person=${person}`);
      await page.waitForSelector('body[data-ready="person"]', { timeout: 60_000 });
      const r = await page.evaluate(() => {
        const m = performance.getEntriesByName("explorer-ready").at(-1);
        const f = performance.getEntriesByName("explorer-fetched").at(-1);
        const counts = [...document.querySelectorAll("article.type")].map((a) => Number(a.dataset.count || 0));
        return { ms: m ? m.startTime : NaN, fetched: f ? f.startTime : NaN, objects: counts.reduce((a, b) => a + b, 0), error: document.querySelector("#person-result .error")?.textContent ?? "" };
      });
      await page.close();
      if (r.error) throw new Error(`the person view of ${person} shows an error: ${r.error}`);
      if (i === 0) {
        console.log(`warm-up load (${person}): ${r.ms.toFixed(0)} ms, not counted`);
        continue;
      }
      times.push(r.ms);
      fetched.push(r.fetched);
      objects += r.objects;
      console.log(`load ${i} (${person}): ready in ${r.ms.toFixed(0)} ms (answers in at ${r.fetched.toFixed(0)} ms), ${r.objects} visible objects`);
    }
  } finally {
    await browser.close();
  }
  times.sort((a, b) => a - b);
  fetched.sort((a, b) => a - b);
  const q = (p, v = times) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
  console.log(
    `person view ready (${times.length} loads, ${Math.round(objects / times.length)} visible objects on average): ` +
      `p50 ${q(0.5).toFixed(0)} ms, p90 ${q(0.9).toFixed(0)} ms, max ${times.at(-1).toFixed(0)} ms ` +
      `(every answer in: p50 ${q(0.5, fetched).toFixed(0)} ms, p90 ${q(0.9, fetched).toFixed(0)} ms)`,
  );
} finally {
  stop();
}
