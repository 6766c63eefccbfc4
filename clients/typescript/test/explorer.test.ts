// The access explorer in a real browser (Debian's Chromium, headless, driven
// by playwright-core), served by a real authzd (`serve --demo --explorer`,
// with an admin and a decision token) from its own gRPC port. Every answer
// the page shows is compared with the same question asked of the API
// directly; a what-if is dry-run, refused, then applied, and a second page
// sees the change live; the controls are reached with the keyboard.
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { ConnectError, createClient } from "@connectrpc/connect";
import { chromium, type Browser, type Page } from "playwright-core";
import { createAuthzdClient, type AuthzdClient } from "../src/index.js";
import { createNodeTransport } from "../src/node.js";
import type { Mutation } from "../src/gen/authzd/v1/types_pb.js";
import { Permission } from "../src/gen/authzd/v1/types_pb.js";
import { EntityKind, ReadService } from "../src/gen/authzd/v1/read_pb.js";
import { TENANT, WCB_AGENT, WCB_APP } from "./support/demo.js";
import { AuthzdServer, repoRoot } from "./support/server.js";

const CHROMIUM = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
const SHOTS = join(process.env.CARGO_TARGET_DIR ? resolve(repoRoot, process.env.CARGO_TARGET_DIR) : join(repoRoot, "target"), "explorer-screenshots");
const ADMIN_TOKEN = "explorer-admin-t0ken";
const DECISION_TOKEN = "explorer-decision-t0ken";

let server: AuthzdServer;
let browser: Browser;
let api: AuthzdClient;
let read: ReturnType<typeof createClient<typeof ReadService>>;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (scripts/test-clients.sh does), or set CHROMIUM_BIN`);
  }
  server = await AuthzdServer.start({ args: ["--explorer", "--admin-token", ADMIN_TOKEN, "--decision-token", DECISION_TOKEN] });
  const transport = createNodeTransport({ baseUrl: server.url, token: ADMIN_TOKEN });
  api = createAuthzdClient(transport);
  read = createClient(ReadService, transport);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  mkdirSync(SHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function newPage(): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  page.on("console", (m) => {
    if (m.type() === "error") console.error(`[page] ${m.text()}`);
  });
  page.on("pageerror", (e) => console.error(`[page error] ${e.message}`));
  return page;
}

/** Opens the explorer on the demo tenant and types both tokens (the page keeps them in memory only). */
async function openExplorer(query = ""): Promise<Page> {
  const page = await newPage();
  await page.goto(`${server.url}/explorer/?tenant=${TENANT}${query}`);
  await page.fill("#decision-token", DECISION_TOKEN);
  await page.fill("#admin-token", ADMIN_TOKEN);
  await page.click("#open-tenant");
  await page.waitForSelector('#live[data-state="live"]', { timeout: 10_000 });
  return page;
}

/** Submits a view's form and waits until the page marks the view ready again. */
async function submitAndWait(page: Page, form: string, view: string): Promise<void> {
  await page.evaluate(() => delete document.body.dataset.ready);
  await page.click(`${form} button[type=submit]`);
  await page.waitForSelector(`body[data-ready="${view}"]`, { timeout: 10_000 });
}

async function texts(page: Page, selector: string): Promise<string[]> {
  return page.$$eval(selector, (els) => els.map((e) => (e.textContent ?? "").trim()));
}

async function allSubjects(object: { type: string; id: string }, permission: Permission, atLeastRevision = 0n): Promise<string[]> {
  const out: string[] = [];
  let pageToken = "";
  do {
    const r = await read.listSubjects({ tenant: TENANT, object, permission, pageSize: 1000, pageToken, atLeastRevision });
    out.push(...r.subjects.map((s) => s.person));
    pageToken = r.nextPageToken;
  } while (pageToken !== "");
  return out;
}

async function visibleCount(person: string, type: string): Promise<number> {
  let n = 0;
  let pageToken = "";
  do {
    const r = await api.decisions.listVisible({ tenant: TENANT, person, type, pageSize: 10_000, pageToken });
    n += r.objects.length;
    pageToken = r.nextPageToken;
  } while (pageToken !== "");
  return n;
}

/** The person view's answer compared with EffectivePrivileges and ListVisible. */
async function checkPersonView(page: Page, person: string): Promise<number> {
  const apps = await page.$$eval("#person-result .app", (as) => as.map((a) => (a as HTMLElement).dataset.app!));
  const tenants = await api.admin.listTenants({});
  const expectedApps = tenants.tenants.find((t) => t.id === TENANT)!.applications;
  assert.deepEqual([...apps].sort(), [...expectedApps].sort(), "one block per application of the tenant");
  for (const app of apps) {
    const e = (await api.decisions.effectivePrivileges({ tenant: TENANT, person, application: app })).effective!;
    const block = `#person-result .app[data-app="${app}"]`;
    assert.deepEqual(await texts(page, `${block} [data-field=privileges] li`), e.privileges, `${person} in ${app}: privileges`);
    assert.equal((await texts(page, `${block} [data-field=primary-role]`))[0], e.primaryRole ?? "none", `${person} in ${app}: primary role`);
    assert.deepEqual(await texts(page, `${block} [data-field=unmet] li`), e.unmet, `${person} in ${app}: unmet`);
  }
  const types = await page.$$eval("#type-list option", (os) => os.map((o) => (o as HTMLOptionElement).value));
  assert.ok(types.includes("Script") && types.includes("Metric"), `the demo's object types are known: ${types}`);
  let shown = 0;
  for (const type of types.filter((t) => !["Folder", "Person", "AccessGroup", "Role"].includes(t))) {
    const want = await visibleCount(person, type);
    const got = await page.$$eval(`#person-result article.type[data-type="${type}"]`, (as) => as.map((a) => Number((a as HTMLElement).dataset.count)));
    assert.deepEqual(got, want === 0 ? [] : [want], `${person}: visible ${type}`);
    if (want > 0) {
      const ids = await page.$$eval(`#person-result article.type[data-type="${type}"] li.object`, (ls) => ls.map((l) => (l as HTMLElement).dataset.id!));
      if (want <= 200) assert.equal(ids.length, want, `${person}: every visible ${type} is listed`);
      shown += want;
    }
  }
  return shown;
}

test("the explorer is served from the binary only when turned on, with a strict content security policy", async () => {
  const r = await fetch(`${server.url}/explorer?tenant=acme`, { redirect: "manual" });
  assert.equal(r.status, 308);
  assert.equal(r.headers.get("location"), "/explorer/?tenant=acme");
  const page = await fetch(`${server.url}/explorer/`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(page.headers.get("cache-control"), "no-cache");
  const csp = page.headers.get("content-security-policy") ?? "";
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /connect-src 'self'/);
  assert.match(await page.text(), /<script type="module" src="app.js"><\/script>/);
  const js = await fetch(`${server.url}/explorer/app.js`);
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  const etag = js.headers.get("etag")!;
  assert.ok(etag);
  assert.equal((await fetch(`${server.url}/explorer/app.js`, { headers: { "if-none-match": etag } })).status, 304);
  assert.equal((await fetch(`${server.url}/explorer/app.css`)).headers.get("content-type"), "text/css; charset=utf-8");

  // Off by default: 404 with a JSON error saying how to turn it on; on by environment variable.
  const off = await AuthzdServer.start();
  try {
    const r = await fetch(`${off.url}/explorer/`);
    assert.equal(r.status, 404);
    const body = (await r.json()) as { code: string; message: string };
    assert.equal(body.code, "NOT_FOUND");
    assert.match(body.message, /--explorer/);
  } finally {
    await off.stop();
  }
  const byEnv = await AuthzdServer.start({ env: { AUTHZD_EXPLORER: "true" } });
  try {
    assert.equal((await fetch(`${byEnv.url}/explorer/`)).status, 200);
  } finally {
    await byEnv.stop();
  }
});

test("without the tokens the page says what is missing; the tokens stay in memory", async () => {
  const page = await newPage();
  try {
    await page.goto(`${server.url}/explorer/?tenant=${TENANT}&view=person&person=${WCB_AGENT}`);
    await page.waitForSelector("#settings-error:not([hidden])", { timeout: 10_000 });
    assert.match((await page.textContent("#settings-error")) ?? "", /UNAUTHENTICATED.*token/);
    await page.fill("#decision-token", DECISION_TOKEN);
    await page.fill("#admin-token", ADMIN_TOKEN);
    await page.click("#open-tenant");
    await page.waitForSelector('body[data-ready="person"]', { timeout: 10_000 });
    const kept = await page.evaluate(() => ({
      local: localStorage.length,
      session: sessionStorage.length,
      cookie: document.cookie,
      url: location.href,
    }));
    assert.deepEqual({ ...kept, url: undefined }, { local: 0, session: 0, cookie: "", url: undefined });
    assert.ok(!kept.url.includes("t0ken"), `no token in the URL: ${kept.url}`);
  } finally {
    await page.close();
  }
});

test("person view: effective privileges with their sources and visible objects per type, as the API answers", async () => {
  const page = await openExplorer();
  try {
    const seen = new Map<string, number>();
    for (const person of ["sales-agent-1", "adv-user-a", "cb-super-monitor", "cb-annex-admin", "wcb-agent-broken", WCB_AGENT]) {
      await page.fill("#person", person);
      await submitAndWait(page, "#person-form", "person");
      seen.set(person, await checkPersonView(page, person));
    }
    assert.ok(seen.get("sales-agent-1")! > 0 && seen.get("adv-user-a")! > 0, `objects shown: ${[...seen]}`);
    // cb-annex-admin: the legacy annex decides (source and role shown).
    await page.fill("#person", "cb-annex-admin");
    await submitAndWait(page, "#person-form", "person");
    assert.match((await texts(page, '#person-result .app[data-app="Callback"] [data-field=source]'))[0]!, /legacy annex \(ges\.role = Administrator\)/);
    // A disabled person is said to be.
    await page.fill("#person", "dz-former");
    await submitAndWait(page, "#person-form", "person");
    assert.match((await page.textContent("[data-field=person]")) ?? "", /disabled/);
    await page.fill("#person", "no-such-person");
    await submitAndWait(page, "#person-form", "person");
    assert.match((await page.textContent("#person-result .error")) ?? "", /NOT_FOUND/);
    await page.fill("#person", "sales-agent-1");
    await submitAndWait(page, "#person-form", "person");
    await page.screenshot({ path: join(SHOTS, "1-person.png"), fullPage: true });
    await page.setViewportSize({ width: 1000, height: 860 });
    await page.screenshot({ path: join(SHOTS, "person-readme.png") });
  } finally {
    await page.close();
  }
});

test("object view: who may do each permission on an object and why, and the entries on it, as the API answers", async () => {
  const page = await openExplorer();
  try {
    await page.click('.tab[data-view="object"]');
    for (const object of [
      { type: "Script", id: "ges_Sales_VQ" },
      { type: "Folder", id: "Scripts/Callback" },
    ]) {
      await page.fill("#object-type", object.type);
      await page.dispatchEvent("#object-type", "change");
      await page.waitForFunction((id) => [...document.querySelectorAll<HTMLOptionElement>("#object-list option")].some((o) => o.value === id), object.id);
      await page.fill("#object-id", object.id);
      await submitAndWait(page, "#object-form", "object");
      for (const [permission, name] of [
        [Permission.READ, "Read"],
        [Permission.CHANGE, "Change"],
        [Permission.CHANGE_PERMISSIONS, "ChangePermissions"],
      ] as const) {
        const want = await allSubjects(object, permission);
        const got = await texts(page, `#object-result section[data-permission="${name}"] table.subjects tbody th`);
        assert.deepEqual(got, want, `${name} on ${object.type} ${object.id}`);
      }
      const target = object.type === "Folder" ? { case: "folder" as const, value: object.id } : { case: "object" as const, value: object };
      const entries = await read.listEntries({ tenant: TENANT, target: { kind: target } });
      assert.equal((await texts(page, "#object-result table.entries tbody tr")).length, entries.entries.length, "entries on it");
      assert.equal((await texts(page, "#object-result table.effective tbody tr")).length, entries.effective.length, "entries after inheritance");
    }
    // The evidence names the entry that decided (ges_Sales_VQ: the Sales group's entry).
    await page.fill("#object-type", "Script");
    await page.fill("#object-id", "ges_Sales_VQ");
    await submitAndWait(page, "#object-form", "object");
    const readers = await allSubjects({ type: "Script", id: "ges_Sales_VQ" }, Permission.READ);
    assert.ok(readers.includes("sales-agent-1") && !readers.includes("service-agent-1"), `readers of ges_Sales_VQ: ${readers}`);
    const row = await texts(page, '#object-result section[data-permission="Read"] table.subjects tbody tr:has(th:text-is("sales-agent-1")) ul.aces li');
    assert.ok(row.length > 0, "the entries that decided are shown");
    await page.screenshot({ path: join(SHOTS, "2-object.png") });
  } finally {
    await page.close();
  }
});

test("privilege view: holders, the dependency chain and the roles that grant it, as the API answers", async () => {
  const page = await openExplorer();
  try {
    await page.click('.tab[data-view="privilege"]');
    const cases = [
      { app: "Callback", privilege: "Callback - Export Reports" },
      { app: WCB_APP, privilege: "Web Callback - Can Reschedule Before Call" },
    ];
    for (const c of cases) {
      await page.selectOption("#privilege-app", c.app);
      await page.fill("#privilege", c.privilege);
      await submitAndWait(page, "#privilege-form", "privilege");
      const holders = await read.listHolders({ tenant: TENANT, application: c.app, privilege: c.privilege, pageSize: 1000 });
      assert.equal(holders.nextPageToken, "");
      assert.deepEqual(await texts(page, "#privilege-result table.holders tbody th"), holders.holders.map((x) => x.person), `holders of ${c.privilege}`);
      const cat = await read.getEntity({ tenant: TENANT, kind: EntityKind.CATALOG, id: c.app });
      assert.equal(cat.entity?.kind.case, "catalog");
      const catalog = cat.entity!.kind.value as { privileges: { name: string; requires: string[]; aliases: string[] }[] };
      const spellings = [c.privilege, ...(catalog.privileges.find((p) => p.name === c.privilege)?.aliases ?? [])];
      const closure = new Set<string>();
      const walk = (n: string) => {
        for (const r of catalog.privileges.find((p) => p.name === n)?.requires ?? []) {
          closure.add(r);
          walk(r);
        }
      };
      walk(c.privilege);
      const chain = await page.$$eval("#privilege-result .requires li", (ls) => ls.map((l) => (l.firstElementChild?.firstChild?.textContent ?? "").trim()));
      assert.deepEqual(new Set(chain), closure, `the dependency chain of ${c.privilege}`);
      const roles = await read.listEntities({ tenant: TENANT, kind: EntityKind.ROLE, pageSize: 1000 });
      const granting = roles.entities
        .flatMap((e) => (e.kind.case === "role" ? [e.kind.value] : []))
        .filter((r) => (r.privileges[c.app]?.names ?? []).some((n) => spellings.includes(n)))
        .map((r) => r.name);
      assert.deepEqual(await texts(page, "#privilege-result table.roles tbody th"), granting, `roles granting ${c.privilege}`);
    }
    // Web Callback's Before Call requires Can Reschedule, which requires the channel.
    assert.match((await page.textContent("#privilege-result .requires")) ?? "", /Can Reschedule Before Call requires.*Can Reschedule/s);
    await page.screenshot({ path: join(SHOTS, "3-privilege.png") });
  } finally {
    await page.close();
  }
});

test("what-if: a dry run shows gains and losses per person as the API computes them; a refused edit shows the server's message next to it; applying updates another page live", async () => {
  const watcher = await openExplorer(`&view=person&person=${WCB_AGENT}`);
  const page = await openExplorer("&view=whatif");
  try {
    await watcher.waitForSelector('body[data-ready="person"]');
    const before = await texts(watcher, `#person-result .app[data-app="${WCB_APP}"] [data-field=privileges] li`);
    assert.ok(before.length > 0, "the agent holds Web Callback privileges before");

    // A refused edit: the server's message next to it.
    await page.selectOption("#edit-kind", "join");
    await page.fill("#edit-group", "no-such-group");
    await page.fill("#edit-person", WCB_AGENT);
    await page.click("#edit-add");
    await page.click("#dry-run");
    await page.waitForSelector('[data-outcome="rejected"]');
    const bad: Mutation[] = [{ op: { case: "addGroupMember", value: { group: "no-such-group", person: WCB_AGENT } } } as Mutation];
    const refused = await api.admin.write({ tenant: TENANT, mutations: bad, dryRun: true }).then(
      () => undefined,
      (e: unknown) => e as ConnectError,
    );
    assert.ok(refused instanceof ConnectError, "the API refuses it too");
    const shown = (await page.textContent("#batch li.edit.rejected .error")) ?? "";
    assert.ok(shown.includes(refused.rawMessage), `the page shows "${refused.rawMessage}" next to the edit: ${shown}`);
    await page.screenshot({ path: join(SHOTS, "4-whatif-refused.png") });
    await page.click("#clear-batch");

    // The dry run: the same changes as the API's.
    await page.selectOption("#edit-kind", "leave");
    await page.fill("#edit-group", "web-callback-agents");
    await page.fill("#edit-person", WCB_AGENT);
    await page.click("#edit-add");
    await page.click("#dry-run");
    await page.waitForSelector('[data-outcome="dry-run"]');
    const leave: Mutation[] = [{ op: { case: "removeGroupMember", value: { group: "web-callback-agents", person: WCB_AGENT } } } as Mutation];
    const dry = await api.admin.write({ tenant: TENANT, mutations: leave, dryRun: true });
    assert.deepEqual(await texts(page, "#whatif-result table.changes tbody th"), dry.changes.map((c) => c.person), "persons changed");
    const mine = dry.changes.find((c) => c.person === WCB_AGENT)!;
    const lost = mine.privileges.flatMap((p) => p.lost.map((l) => `${p.application}: ${l}`));
    assert.ok(lost.length > 0);
    assert.deepEqual(await texts(page, `#whatif-result table.changes tbody tr:has(th:text-is("${WCB_AGENT}")) ul.lost li`), lost, "privileges lost");
    await page.screenshot({ path: join(SHOTS, "5-whatif-dry-run.png") });
    assert.deepEqual(
      await texts(watcher, `#person-result .app[data-app="${WCB_APP}"] [data-field=privileges] li`),
      before,
      "a dry run changes nothing",
    );

    // Apply (with the admin token typed into the page): the other page updates by itself.
    await page.click("#apply");
    await page.waitForSelector('[data-outcome="applied"]');
    const applied = BigInt(/revision (\d+)/.exec((await page.textContent('[data-outcome="applied"]')) ?? "")![1]!);
    await watcher.waitForFunction((r) => BigInt(document.body.dataset.revision ?? "0") >= BigInt(r) && document.body.dataset.ready === "person", String(applied), {
      timeout: 5000,
    });
    const after = (await api.decisions.effectivePrivileges({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP, atLeastRevision: applied })).effective!;
    assert.deepEqual(await texts(watcher, `#person-result .app[data-app="${WCB_APP}"] [data-field=privileges] li`), after.privileges);
    assert.ok(after.privileges.length < before.length, "the agent lost privileges");
    await checkPersonView(watcher, WCB_AGENT);
    await watcher.screenshot({ path: join(SHOTS, "6-person-live-after-apply.png") });

    // A write made elsewhere (the API) shows up too; then the demo is restored.
    const back = await api.admin.write({
      tenant: TENANT,
      mutations: [{ op: { case: "addGroupMember", value: { group: "web-callback-agents", person: WCB_AGENT } } } as Mutation],
    });
    await watcher.waitForFunction((r) => BigInt(document.body.dataset.revision ?? "0") >= BigInt(r) && document.body.dataset.ready === "person", String(back.revision), {
      timeout: 5000,
    });
    assert.deepEqual(await texts(watcher, `#person-result .app[data-app="${WCB_APP}"] [data-field=privileges] li`), before);
  } finally {
    await page.close();
    await watcher.close();
  }
});

test("with the decision token only, the person view still updates live (followPrivileges instead of the raw stream)", async () => {
  const page = await newPage();
  try {
    await page.goto(`${server.url}/explorer/?tenant=${TENANT}&view=person&person=${WCB_AGENT}`);
    await page.fill("#decision-token", DECISION_TOKEN);
    await page.click("#open-tenant");
    await page.waitForSelector('#live[data-state="partial"]', { timeout: 10_000 });
    await page.waitForSelector('body[data-ready="person"]');
    const privileges = () => texts(page, `#person-result .app[data-app="${WCB_APP}"] [data-field=privileges] li`);
    const before = await privileges();
    assert.ok(before.length > 0);
    const leave = await api.admin.write({
      tenant: TENANT,
      mutations: [{ op: { case: "removeGroupMember", value: { group: "web-callback-agents", person: WCB_AGENT } } } as Mutation],
    });
    await page.waitForFunction((r) => BigInt(document.body.dataset.revision ?? "0") >= BigInt(r) && document.body.dataset.ready === "person", String(leave.revision), {
      timeout: 5000,
    });
    const after = (await api.decisions.effectivePrivileges({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP, atLeastRevision: leave.revision })).effective!;
    assert.deepEqual(await privileges(), after.privileges);
    assert.ok(after.privileges.length < before.length);
    // The what-if cannot apply without the admin token: the server's refusal is shown next to the edit.
    await page.click('.tab[data-view="whatif"]');
    await page.selectOption("#edit-kind", "join");
    await page.fill("#edit-group", "web-callback-agents");
    await page.fill("#edit-person", WCB_AGENT);
    await page.click("#edit-add");
    await page.click("#apply");
    await page.waitForSelector('[data-outcome="rejected"]');
    assert.match((await page.textContent("#batch li.edit.rejected .error")) ?? "", /UNAUTHENTICATED|PERMISSION_DENIED/);
  } finally {
    await api.admin.write({
      tenant: TENANT,
      mutations: [{ op: { case: "addGroupMember", value: { group: "web-callback-agents", person: WCB_AGENT } } } as Mutation],
    });
    await page.close();
  }
});

test("every control is reached with the keyboard, has an accessible name and a visible focus", async () => {
  const page = await openExplorer(`&view=person&person=${WCB_AGENT}`);
  try {
    await page.waitForSelector('body[data-ready="person"]');
    for (const view of ["person", "object", "privilege", "whatif"]) {
      await page.click(`.tab[data-view="${view}"]`);
      if (view === "whatif") await page.selectOption("#edit-kind", "ace");
      // The controls a keyboard user must reach: those of the header, the tabs and the view's form.
      const wanted = await page.$$eval(
        `header input, header button, nav button, #view-${view} form input, #view-${view} form select, #view-${view} form button, #view-${view} .actions button`,
        (els) => els.filter((e) => (e as HTMLElement).offsetParent !== null).map((e) => e.id || `${e.tagName}:${(e.textContent ?? "").trim() || (e as HTMLInputElement).value}`),
      );
      assert.ok(wanted.length >= 8, `${view}: ${wanted}`);
      await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
      await page.focus("body");
      const reached = new Map<string, { name: string; outline: string }>();
      for (let i = 0; i < 150; i++) {
        await page.keyboard.press("Tab");
        const f = await page.evaluate(() => {
          const el = document.activeElement as HTMLElement | null;
          if (!el || el === document.body) return null;
          const labels = (el as HTMLInputElement).labels;
          const name =
            el.getAttribute("aria-label") ??
            (labels && labels.length > 0 ? [...labels].map((l) => (l.textContent ?? "").trim()).join(" ") : "") ??
            "";
          const text = el.tagName === "BUTTON" || el.tagName === "SUMMARY" ? (el.textContent ?? "").trim() : "";
          return {
            key: el.id || `${el.tagName}:${(el.textContent ?? "").trim() || (el as HTMLInputElement).value}`,
            name: (name || text).trim(),
            outline: getComputedStyle(el).outlineStyle,
          };
        });
        if (f === null) continue;
        if (!reached.has(f.key)) reached.set(f.key, { name: f.name, outline: f.outline });
        if (wanted.every((w) => reached.has(w))) break;
      }
      for (const w of wanted) assert.ok(reached.has(w), `${view}: ${w} is reached by Tab (reached: ${[...reached.keys()]})`);
      for (const [key, r] of reached) {
        assert.notEqual(r.name, "", `${view}: ${key} has an accessible name`);
        assert.notEqual(r.outline, "none", `${view}: ${key} shows its focus`);
      }
    }
    // The tabs work from the keyboard too.
    await page.focus('.tab[data-view="privilege"]');
    await page.keyboard.press("Enter");
    assert.equal(await page.getAttribute('.tab[data-view="privilege"]', "aria-current"), "page");
    assert.equal(await page.isVisible("#view-privilege"), true);
  } finally {
    await page.close();
  }
});
