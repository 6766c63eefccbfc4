// The access explorer (served by authzd at /explorer/ with --explorer):
// "who can see this, and why?" for administrators. Plain DOM, gRPC-Web to
// the page's own origin through @authzd/client's generated code. Tokens are
// held in this module's variables only: never in storage, cookies or URLs.
//
// Query string (all optional): tenant, view (person|object|privilege|whatif),
// person, type, id, app, privilege — so a view can be linked and benchmarked.
// When a view has rendered its answer, <body data-ready="<view>"> is set with
// data-revision, and performance.mark("explorer-ready") is recorded.
import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createAuthzdClient, type Follower, type PrivilegesUpdate } from "../src/index.js";
import { AdminService, type PersonChange, type TenantSummary } from "../src/gen/authzd/v1/admin_pb.js";
import { DecisionService, Reason, type Evidence, type MatchedAce } from "../src/gen/authzd/v1/decision_pb.js";
import { type AllowedSubject, EntityKind, ReadService, type Entity } from "../src/gen/authzd/v1/read_pb.js";
import {
  type Catalog,
  type EffectivePrivileges,
  type Folder,
  type Mutation,
  Permission,
  PrivilegeSource,
  type Role,
  type Subject,
  type Target,
  type VisibleObject,
} from "../src/gen/authzd/v1/types_pb.js";
import { WatchService } from "../src/gen/authzd/v1/watch_pb.js";

// ---------------------------------------------------------------- clients

let decisionToken = "";
let adminToken = "";

function bearer(which: "decision" | "admin"): Interceptor {
  return (next) => (req) => {
    const t = which === "admin" ? adminToken : decisionToken || adminToken;
    if (t !== "") req.header.set("authorization", `Bearer ${t}`);
    return next(req);
  };
}

const decisionTransport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [bearer("decision")] });
const adminTransport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [bearer("admin")] });
const decisions: Client<typeof DecisionService> = createClient(DecisionService, decisionTransport);
const read: Client<typeof ReadService> = createClient(ReadService, decisionTransport);
const admin: Client<typeof AdminService> = createClient(AdminService, adminTransport);
const rawWatch: Client<typeof WatchService> = createClient(WatchService, adminTransport);
const authz = createAuthzdClient(decisionTransport);

// ---------------------------------------------------------------- DOM helpers

type Kid = Node | string | number | bigint | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...kids: Kid[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") el.className = String(v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`#${id} is missing from the page`);
  return el as T;
}

const inputValue = (id: string): string => $<HTMLInputElement>(id).value.trim();

function list(items: Kid[], cls = "names"): HTMLElement {
  if (items.length === 0) return h("span", { class: "none" }, "none");
  return h("ul", { class: cls }, ...items.map((i) => h("li", {}, i)));
}

/** A long list folded behind a summary ("12 privileges"). */
function folded(label: string, items: Kid[], cls = "names", open = false): HTMLElement {
  if (items.length === 0) return h("span", { class: "none" }, `no ${label}`);
  const what = items.length === 1 ? label.replace(/s$/, "") : label;
  return h("details", { open }, h("summary", {}, `${items.length} ${what}`), list(items, cls));
}

function table(caption: string, head: string[], rows: Kid[][], cls = ""): HTMLElement {
  return h(
    "table",
    { class: cls },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ...head.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c, i) => (i === 0 ? h("th", { scope: "row" }, c) : h("td", {}, c)))))),
  );
}

function errorText(e: unknown): string {
  if (e instanceof ConnectError) {
    const hint =
      e.code === Code.Unauthenticated
        ? " — type the decision token (or the admin token) above"
        : e.code === Code.PermissionDenied
          ? " — this needs the admin token"
          : e.code === Code.Unimplemented
            ? " — this server does not implement that call (an older authzd?)"
            : "";
    const code = (Code[e.code] ?? String(e.code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
    return `${code}: ${e.rawMessage || "(no message)"}${hint}`;
  }
  return e instanceof Error ? e.message : String(e);
}

function errorBox(e: unknown): HTMLElement {
  return h("p", { class: "error", role: "alert" }, errorText(e));
}

// ---------------------------------------------------------------- names

const PERMISSIONS: [Permission, string][] = [
  [Permission.READ, "Read"],
  [Permission.CREATE, "Create"],
  [Permission.CHANGE, "Change"],
  [Permission.EXECUTE, "Execute"],
  [Permission.DELETE, "Delete"],
  [Permission.READ_PERMISSIONS, "ReadPermissions"],
  [Permission.CHANGE_PERMISSIONS, "ChangePermissions"],
];
const permName = (p: Permission): string => PERMISSIONS.find(([v]) => v === p)?.[1] ?? (p === Permission.ALL ? "All" : `#${p}`);

function sourceName(s: PrivilegeSource): string {
  switch (s) {
    case PrivilegeSource.ROLES:
      return "roles";
    case PrivilegeSource.LEGACY_ANNEX:
      return "legacy annex";
    case PrivilegeSource.OPEN_WHEN_UNCONFIGURED:
      return "open when unconfigured";
    default:
      return "–";
  }
}

const reasonName = (r: Reason): string => (Reason[r] ?? `REASON_${r}`).replace(/^REASON_/, "");

function subjectName(s: Subject | undefined): string {
  switch (s?.kind.case) {
    case "everyone":
      return "everyone";
    case "person":
      return `person ${s.kind.value}`;
    case "group":
      return `group ${s.kind.value}`;
    default:
      return "?";
  }
}

function targetName(t: Target | undefined): string {
  switch (t?.kind.case) {
    case "folder":
      return `folder ${t.kind.value}`;
    case "person":
      return `person ${t.kind.value}`;
    case "group":
      return `group ${t.kind.value}`;
    case "role":
      return `role ${t.kind.value}`;
    case "object":
      return `${t.kind.value.type} ${t.kind.value.id}`;
    default:
      return "?";
  }
}

function aceText(a: { allow: Permission[]; deny: Permission[]; propagate: boolean }): string {
  const parts: string[] = [];
  if (a.allow.length) parts.push(`allow ${a.allow.map(permName).join(", ")}`);
  if (a.deny.length) parts.push(`deny ${a.deny.map(permName).join(", ")}`);
  if (a.propagate) parts.push("propagating");
  return parts.join("; ") || "nothing";
}

function matchedAce(m: MatchedAce): string {
  const where = m.inheritedFrom ? `inherited from folder ${m.inheritedFrom}` : `on ${targetName(m.target)}`;
  return `${subjectName(m.principal)}: ${aceText(m)} (${where})`;
}

// ---------------------------------------------------------------- paging

/**
 * Every page of a listing. All pages of one listing are read at its first
 * page's revision; when the server no longer keeps that revision (writes went
 * on for longer than it keeps replaced ones) it refuses the continuation with
 * FAILED_PRECONDITION, and the listing starts again from the first page (a
 * few times at most).
 */
async function allPages<R extends { nextPageToken: string }>(page: (token: string) => Promise<R>, max = 1000): Promise<R[]> {
  for (let attempt = 0; ; attempt++) {
    const out: R[] = [];
    let token = "";
    try {
      do {
        const r = await page(token);
        out.push(r);
        token = r.nextPageToken;
      } while (token !== "" && out.length < max);
      return out;
    } catch (e) {
      const expired = e instanceof ConnectError && e.code === Code.FailedPrecondition && token !== "";
      if (!expired || attempt >= 3) throw e;
    }
  }
}

// ---------------------------------------------------------------- tenant state

interface TenantInfo {
  id: string;
  catalogs: Map<string, Catalog>;
  /** Applications when the catalogs cannot be read (ListTenants). */
  applications: string[];
  folders: Map<string, Folder>;
  types: string[];
  catalogError?: unknown;
}

let tenant: TenantInfo | undefined;
let revision = 0n;
let view: View = "person";
type View = "person" | "object" | "privilege" | "whatif";
const VIEWS: View[] = ["person", "object", "privilege", "whatif"];

function seen(r: bigint): void {
  if (r > revision) revision = r;
  $("revision").textContent = String(revision);
}

function applications(): string[] {
  if (!tenant) return [];
  return tenant.catalogs.size > 0 ? [...tenant.catalogs.keys()] : tenant.applications;
}

function fillDatalist(id: string, options: [string, string?][]): void {
  $(id).replaceChildren(...options.map(([v, label]) => h("option", { value: v }, label && label !== v ? label : undefined)));
}

function fillSelect(id: string, options: string[], first?: string): void {
  const sel = $<HTMLSelectElement>(id);
  const keep = sel.value;
  sel.replaceChildren(...(first !== undefined ? [h("option", { value: "" }, first)] : []), ...options.map((o) => h("option", { value: o }, o)));
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
}

async function loadTenants(): Promise<TenantSummary[]> {
  try {
    const r = await admin.listTenants({});
    seen(r.revision);
    fillDatalist(
      "tenant-list",
      r.tenants.map((t) => [t.id, t.name]),
    );
    return r.tenants;
  } catch {
    // ListTenants is an admin call: without the admin credential, the tenant is typed.
    return [];
  }
}

async function openTenant(id: string, tenants: Promise<TenantSummary[]> = loadTenants()): Promise<void> {
  // The answers shown (and any still on their way) belong to the tenant and
  // credentials before this one: no view is ready until it is answered again.
  for (const [target, gen] of generations) generations.set(target, gen + 1);
  for (const v of VIEWS) busy(v);
  const err = $("settings-error");
  err.hidden = true;
  const info: TenantInfo = { id, catalogs: new Map(), applications: [], folders: new Map(), types: [] };
  preferredApp = "";
  const [summaries, catalogs, folders, objects, persons, groups, roles] = await Promise.allSettled([
    allPages((pageToken) => read.listEntities({ tenant: id, kind: EntityKind.CATALOG, pageSize: 1000, pageToken })),
    allPages((pageToken) => read.listEntities({ tenant: id, kind: EntityKind.FOLDER, pageSize: 1000, pageToken })),
    read.listEntities({ tenant: id, kind: EntityKind.OBJECT, pageSize: 1000 }),
    read.listEntities({ tenant: id, kind: EntityKind.PERSON, pageSize: 1000 }),
    read.listEntities({ tenant: id, kind: EntityKind.ACCESS_GROUP, pageSize: 1000 }),
    read.listEntities({ tenant: id, kind: EntityKind.ROLE, pageSize: 1000 }),
  ]).then(async (r) => [await tenants, ...r] as const);
  info.applications = summaries.find((t) => t.id === id)?.applications ?? [];
  // Suggestions for the forms (the first 1,000 of each; any id may be typed).
  if (groups.status === "fulfilled") {
    fillDatalist("group-list", groups.value.entities.flatMap((e) => (e.kind.case === "group" ? [[e.kind.value.id, e.kind.value.name] as [string, string]] : [])));
  }
  if (roles.status === "fulfilled") {
    fillDatalist("role-list", roles.value.entities.flatMap((e) => (e.kind.case === "role" ? [[e.kind.value.id, e.kind.value.name] as [string, string]] : [])));
  }
  if (catalogs.status === "fulfilled") {
    for (const p of catalogs.value) {
      seen(p.revision);
      for (const e of p.entities) if (e.kind.case === "catalog") info.catalogs.set(e.kind.value.name, e.kind.value);
    }
  } else {
    info.catalogError = catalogs.reason;
    if (info.applications.length === 0) {
      err.textContent = `Cannot read tenant ${id}: ${errorText(catalogs.reason)}`;
      err.hidden = false;
    }
  }
  if (folders.status === "fulfilled") {
    for (const p of folders.value) for (const e of p.entities) if (e.kind.case === "folder") info.folders.set(e.kind.value.id, e.kind.value);
  }
  // Object types: those the catalogs guard or restrict, and those of the first
  // 1,000 objects (a tenant of 100,000 metrics is not listed to find types).
  const types = new Set<string>();
  for (const c of info.catalogs.values()) {
    for (const g of c.typeGuards) types.add(g.type);
    for (const g of c.propertyGuards) types.add(g.type);
    for (const t of c.restrictedTypes) types.add(t);
  }
  if (objects.status === "fulfilled") {
    seen(objects.value.revision);
    for (const e of objects.value.entities) if (e.kind.case === "object") types.add(e.kind.value.type);
  }
  for (const builtin of ["Person", "AccessGroup", "Role", "Folder"]) types.delete(builtin);
  info.types = [...types].sort();
  if (persons.status === "fulfilled") {
    fillDatalist(
      "person-list",
      persons.value.entities.flatMap((e) => (e.kind.case === "person" ? [[e.kind.value.id, e.kind.value.username] as [string, string]] : [])),
    );
  }
  tenant = info;
  fillDatalist("folder-list", [...info.folders.values()].map((f) => [f.id, f.name]));
  fillDatalist("type-list", [...info.types, "Folder", "Person", "AccessGroup", "Role"].map((t) => [t]));
  fillDatalist("target-type-list", ["Folder", ...info.types].map((t) => [t]));
  fillSelect("object-app", applications(), "none");
  fillSelect("privilege-app", applications());
  updatePrivilegeList();
  startLive();
}

// ---------------------------------------------------------------- views

const params = new URLSearchParams(location.search);

function setParams(p: Record<string, string>): void {
  for (const [k, v] of Object.entries(p)) {
    if (v === "") params.delete(k);
    else params.set(k, v);
  }
  history.replaceState(null, "", `${location.pathname}?${params.toString()}`);
}

function showView(v: View, focus = false): void {
  view = v;
  for (const name of VIEWS) {
    $(`view-${name}`).hidden = name !== v;
    const tab = document.querySelector<HTMLButtonElement>(`.tab[data-view="${name}"]`);
    if (tab) {
      if (name === v) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
  }
  setParams({ view: v });
  if (focus) $(`h-${v}`).focus();
}

function ready(v: View): void {
  document.body.dataset.ready = v;
  document.body.dataset.revision = String(revision);
  performance.mark("explorer-ready", { detail: { view: v, revision: String(revision) } });
}

function busy(v: View): void {
  if (document.body.dataset.ready === v) delete document.body.dataset.ready;
}

/** Renders `run`'s answer into `target`, discarding answers overtaken by a newer call. */
const generations = new Map<string, number>();
async function render(v: View, target: HTMLElement, run: () => Promise<(Node | null)[]>): Promise<void> {
  const gen = (generations.get(target.id) ?? 0) + 1;
  generations.set(target.id, gen);
  busy(v);
  target.setAttribute("aria-busy", "true");
  let nodes: Node[];
  try {
    nodes = (await run()).filter((n): n is Node => n !== null);
  } catch (e) {
    nodes = [errorBox(e)];
  }
  if (generations.get(target.id) !== gen) return;
  target.replaceChildren(...nodes);
  target.removeAttribute("aria-busy");
  ready(v);
}

// ---- person

/** Builds the folder tree of `objects`, with counts including subfolders. */
function folderTree(objects: VisibleObject[], type: string): HTMLElement {
  const folders = tenant?.folders ?? new Map<string, Folder>();
  const byFolder = new Map<string, VisibleObject[]>();
  for (const o of objects) {
    const l = byFolder.get(o.folder);
    if (l) l.push(o);
    else byFolder.set(o.folder, [o]);
  }
  const children = new Map<string, string[]>();
  const counted = new Map<string, number>();
  const parentOf = (id: string): string | undefined => folders.get(id)?.parent;
  // Every folder holding a visible object, and its ancestors.
  const shown = new Set<string>();
  for (const [f, objs] of byFolder) {
    let id: string | undefined = f;
    const guard = new Set<string>();
    while (id !== undefined && !guard.has(id)) {
      guard.add(id);
      counted.set(id, (counted.get(id) ?? 0) + objs.length);
      if (!shown.has(id)) {
        shown.add(id);
        const p = parentOf(id);
        if (p !== undefined) {
          const c = children.get(p);
          if (c) c.push(id);
          else children.set(p, [id]);
        }
      }
      id = parentOf(id);
    }
  }
  const roots = [...shown].filter((id) => {
    const p = parentOf(id);
    return p === undefined || !shown.has(p);
  });
  const node = (id: string): HTMLElement => {
    const name = folders.get(id)?.name ?? id;
    const objs = byFolder.get(id) ?? [];
    const kids = (children.get(id) ?? []).sort();
    const LIMIT = 200;
    const items: HTMLElement[] = [
      ...kids.map(node),
      ...objs.slice(0, LIMIT).map((o) => h("li", { class: "object", "data-id": o.id }, o.name || o.id, o.name && o.name !== o.id ? h("span", { class: "id" }, ` (${o.id})`) : null)),
    ];
    if (objs.length > LIMIT) items.push(h("li", { class: "more" }, `… and ${objs.length - LIMIT} more`));
    return h(
      "li",
      { class: "folder" },
      h("details", { open: counted.get(id)! <= 50 }, h("summary", {}, `${name} `, h("span", { class: "count" }, `${counted.get(id)}`)), h("ul", {}, ...items)),
    );
  };
  return h("ul", { class: "tree", "aria-label": `Folders with visible ${type} objects` }, ...roots.sort().map(node));
}

function privilegesRow(app: string, e: EffectivePrivileges): HTMLElement {
  return h(
    "tr",
    { class: "app", "data-app": app },
    h("th", { scope: "row" }, app),
    h("td", { "data-field": "source" }, sourceName(e.source), e.legacySection ? ` (${e.legacySection}.role = ${e.legacyRole ?? ""})` : ""),
    h("td", { "data-field": "primary-role" }, e.primaryRole ?? "none"),
    h(
      "td",
      {},
      list(e.roles),
      e.unreadableRoles.length > 0 ? h("p", { class: "none" }, `not applied (not readable): ${e.unreadableRoles.join(", ")}`) : null,
    ),
    h("td", { "data-field": "privileges" }, folded("privileges", e.privileges, "names privileges", e.privileges.length <= 6)),
    h("td", { "data-field": "unmet" }, e.unmet.length > 0 ? list(e.unmet) : ""),
  );
}

function privilegesTable(rows: HTMLElement[]): HTMLElement {
  return h(
    "table",
    { class: "apps" },
    h("caption", {}, "Per application: where the privileges come from, the roles that applied, what is granted but unmet"),
    h("thead", {}, h("tr", {}, ...["Application", "Source", "Primary role", "Roles applied", "Effective privileges", "Unmet"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, ...rows),
  );
}

async function personView(atLeast = 0n): Promise<void> {
  const person = inputValue("person");
  const out = $("person-result");
  if (!tenant || person === "") return;
  setParams({ person });
  watchPerson(person);
  const t = tenant;
  await render("person", out, async () => {
    const apps = applications();
    const privs = Promise.all(
      apps.map((application) =>
        decisions.effectivePrivileges({ tenant: t.id, person, application, atLeastRevision: atLeast }).then(
          (r) => {
            seen(r.revision);
            return r.effective ? privilegesRow(application, r.effective) : h("tr", {}, h("th", { scope: "row" }, application));
          },
          (e: unknown) => h("tr", { class: "app", "data-app": application }, h("th", { scope: "row" }, application), h("td", { colspan: "5" }, errorBox(e))),
        ),
      ),
    );
    const visible = Promise.all(
      t.types.map(async (type) => {
        try {
          const pages = await allPages((pageToken) =>
            decisions.listVisible({ tenant: t.id, person, type, pageSize: 10_000, pageToken, atLeastRevision: atLeast }),
          );
          const objects = pages.flatMap((p) => p.objects);
          for (const p of pages) seen(p.revision);
          return { type, objects: objects as VisibleObject[] | undefined, error: undefined as unknown };
        } catch (e) {
          return { type, objects: undefined, error: e };
        }
      }),
    );
    const who = read.getEntity({ tenant: t.id, kind: EntityKind.PERSON, id: person, atLeastRevision: atLeast }).then(
      (r) => (r.entity?.kind.case === "person" ? r.entity.kind.value : undefined),
      (e: unknown) => {
        if (e instanceof ConnectError && e.code === Code.NotFound) throw e;
        return undefined;
      },
    );
    const [p, blocks, lists] = await Promise.all([who, privs, visible]);
    performance.mark("explorer-fetched", { detail: { view: "person" } });
    const most = blocks
      .map((b) => ({ app: b.dataset.app ?? "", n: b.querySelectorAll("[data-field=privileges] li").length }))
      .sort((a, b) => b.n - a.n)[0];
    if (most && most.n > 0 && most.app !== preferredApp) {
      preferredApp = most.app;
      watchPerson(person);
    }
    const visibleRows = lists
      .filter((l) => l.objects === undefined || l.objects.length > 0)
      .map((l) =>
        h(
          "article",
          { class: "type", "data-type": l.type, "data-count": l.objects ? String(l.objects.length) : "" },
          h("h4", {}, `${l.type} `, h("span", { class: "count" }, l.objects ? `${l.objects.length} visible` : "")),
          l.objects ? folderTree(l.objects, l.type) : errorBox(l.error),
        ),
      );
    const hidden = lists.filter((l) => l.objects !== undefined && l.objects.length === 0).map((l) => l.type);
    return [
      p
        ? h(
            "p",
            { class: "who", "data-field": "person" },
            h("b", {}, p.id),
            ` — user name ${p.username}, in folder ${p.folder || "Persons"}, `,
            p.enabled === false ? h("strong", { class: "bad" }, "disabled (denied everything)") : "enabled",
          )
        : null,
      h("h3", {}, `Effective privileges of ${person}`),
      privilegesTable(blocks),
      h("h3", {}, `Objects ${person} may read`),
      ...visibleRows,
      hidden.length > 0 ? h("p", { class: "none" }, `Nothing visible of type ${hidden.join(", ")}.`) : null,
    ];
  });
}

// ---- object

function evidenceCells(e: Evidence | undefined): Kid[] {
  if (!e) return ["", "", "", ""];
  return [
    list(e.aces.map(matchedAce), "names aces"),
    list(e.groups),
    list(e.roles),
    list(e.privileges.map((p) => `${p.name}${p.effective ? "" : " (not effective)"}`)),
  ];
}

async function objectView(atLeast = 0n): Promise<void> {
  const type = inputValue("object-type");
  const id = inputValue("object-id");
  const application = $<HTMLSelectElement>("object-app").value;
  if (!tenant || type === "" || id === "") return;
  setParams({ type, id, app: application });
  const t = tenant;
  const target: Target =
    type === "Folder"
      ? ({ kind: { case: "folder", value: id } } as Target)
      : type === "Person"
        ? ({ kind: { case: "person", value: id } } as Target)
        : type === "AccessGroup"
          ? ({ kind: { case: "group", value: id } } as Target)
          : type === "Role"
            ? ({ kind: { case: "role", value: id } } as Target)
            : ({ kind: { case: "object", value: { type, id } } } as Target);
  await render("object", $("object-result"), async () => {
    const [entries, ...perms] = await Promise.all([
      read.listEntries({ tenant: t.id, target, atLeastRevision: atLeast }),
      ...PERMISSIONS.map(async ([permission, name]) => {
        try {
          const pages = await allPages((pageToken) =>
            read.listSubjects({
              tenant: t.id,
              object: { type, id },
              permission,
              application: application || undefined,
              pageSize: 1000,
              pageToken,
              atLeastRevision: atLeast,
            }),
          );
          for (const p of pages) seen(p.revision);
          return { name, subjects: pages.flatMap((p) => p.subjects) as AllowedSubject[] | undefined, error: undefined as unknown };
        } catch (e) {
          return { name, subjects: undefined, error: e };
        }
      }),
    ]);
    seen(entries.revision);
    const sections = perms.map((p) =>
      h(
        "section",
        { class: "permission", "data-permission": p.name },
        h("h4", {}, `${p.name} `, h("span", { class: "count" }, p.subjects ? `${p.subjects.length} ${p.subjects.length === 1 ? "person" : "persons"}` : "")),
        p.subjects
          ? p.subjects.length === 0
            ? h("p", { class: "none" }, "Nobody.")
            : table(
                `Who may ${p.name} ${type} ${id}${application ? ` in ${application}` : ""}, and why`,
                ["Person", "Reason", "Entries that decided", "Groups", "Roles", "Privileges"],
                p.subjects.map((s) => [s.person, reasonName(s.reason), ...evidenceCells(s.evidence)]),
                "subjects",
              )
          : errorBox(p.error),
      ),
    );
    return [
      h("h3", {}, `Entries on ${type} ${id}`),
      entries.entries.length === 0
        ? h("p", { class: "none" }, "No entry on the object itself.")
        : table("Entries attached to the object", ["Subject", "Entry"], entries.entries.map((a) => [subjectName(a.subject), aceText(a)]), "entries"),
      entries.effective.length === 0
        ? h("p", { class: "none" }, "No entry applies after inheritance.")
        : table(
            "Entries that apply after inheritance",
            ["Subject", "Entry", "From"],
            entries.effective.map((m) => [subjectName(m.principal), aceText(m), m.inheritedFrom ? `folder ${m.inheritedFrom}` : "the object itself"]),
            "effective",
          ),
      h("h3", {}, "Who may do what"),
      ...sections,
    ];
  });
}

// ---- privilege

function requiresChain(c: Catalog, name: string, seenNames = new Set<string>()): HTMLElement {
  const p = c.privileges.find((d) => d.name === name || d.aliases.includes(name));
  if (!p) return h("span", {}, name, " (not in the catalog)");
  const reqs = p.requires;
  if (reqs.length === 0 || seenNames.has(p.name)) return h("span", {}, p.name);
  const next = new Set(seenNames).add(p.name);
  return h("span", {}, p.name, " requires", h("ul", { class: "chain" }, ...reqs.map((r) => h("li", {}, requiresChain(c, r, next)))));
}

/** Suggestions for the object id: the first 1,000 entities of the type typed. */
async function updateObjectList(): Promise<void> {
  const type = inputValue("object-type");
  if (!tenant || type === "") return;
  const kinds: Record<string, EntityKind> = {
    Folder: EntityKind.FOLDER,
    Person: EntityKind.PERSON,
    AccessGroup: EntityKind.ACCESS_GROUP,
    Role: EntityKind.ROLE,
  };
  const kind = kinds[type] ?? EntityKind.OBJECT;
  try {
    const r = await read.listEntities({ tenant: tenant.id, kind, type: kind === EntityKind.OBJECT ? type : "", pageSize: 1000 });
    fillDatalist(
      "object-list",
      r.entities.map((e): [string, string?] => {
        const v = e.kind.value;
        if (v === undefined) return [""];
        const name = "username" in v ? v.username : "name" in v ? v.name : "";
        return ["id" in v ? v.id : name, name];
      }),
    );
  } catch {
    // Suggestions only: any id may be typed.
  }
}

function updatePrivilegeList(): void {
  const app = $<HTMLSelectElement>("privilege-app").value;
  const c = tenant?.catalogs.get(app);
  fillDatalist("privilege-list", (c?.privileges ?? []).map((p) => [p.name]));
}

async function privilegeView(atLeast = 0n): Promise<void> {
  const application = $<HTMLSelectElement>("privilege-app").value;
  const privilege = inputValue("privilege");
  if (!tenant || application === "" || privilege === "") return;
  setParams({ app: application, privilege });
  const t = tenant;
  await render("privilege", $("privilege-result"), async () => {
    const [holders, catalog, roles] = await Promise.all([
      allPages((pageToken) => read.listHolders({ tenant: t.id, application, privilege, pageSize: 1000, pageToken, atLeastRevision: atLeast })),
      read.getEntity({ tenant: t.id, kind: EntityKind.CATALOG, id: application, atLeastRevision: atLeast }),
      allPages((pageToken) => read.listEntities({ tenant: t.id, kind: EntityKind.ROLE, pageSize: 1000, pageToken, atLeastRevision: atLeast })),
    ]);
    for (const p of holders) seen(p.revision);
    seen(catalog.revision);
    const canonical = holders[0]?.privilege || privilege;
    const c = catalog.entity?.kind.case === "catalog" ? catalog.entity.kind.value : undefined;
    const def = c?.privileges.find((d) => d.name === canonical);
    const requiredBy = c ? c.privileges.filter((d) => d.requires.includes(canonical)).map((d) => d.name) : [];
    const granting = roles
      .flatMap((p) => p.entities)
      .flatMap((e: Entity) => (e.kind.case === "role" ? [e.kind.value] : []))
      .filter((r: Role) => {
        const names = r.privileges[application]?.names ?? [];
        return names.includes(canonical) || (def?.aliases ?? []).some((a) => names.includes(a));
      });
    const all = holders.flatMap((p) => p.holders);
    return [
      h("h3", {}, canonical),
      def?.description ? h("p", { class: "description" }, def.description) : null,
      h("h4", {}, "Dependency chain"),
      h("div", { class: "requires" }, c ? requiresChain(c, canonical) : "catalog not readable"),
      h("h4", {}, "Required by"),
      list(requiredBy),
      h("h4", {}, "Roles that grant it"),
      granting.length === 0
        ? h("p", { class: "none" }, "No role of the tenant grants it.")
        : table(
            "Roles granting the privilege",
            ["Role", "Id", "Assigned to persons", "Assigned to groups"],
            granting.map((r) => [r.name, r.id, list(r.members?.persons ?? []), list(r.members?.groups ?? [])]),
            "roles",
          ),
      h("h4", {}, `Holders `, h("span", { class: "count" }, `${all.length}`)),
      all.length === 0
        ? h("p", { class: "none" }, "Nobody holds it.")
        : table(
            `Persons for whom ${canonical} is effective`,
            ["Person", "Source", "Through roles"],
            all.map((x) => [
              x.person,
              sourceName(x.source) + (x.legacySection ? ` (${x.legacySection}.role = ${x.legacyRole ?? ""})` : ""),
              list(
                x.roles.map(
                  (g) => `${g.name}${g.direct ? " (direct)" : ""}${g.groups.length ? ` via ${g.groups.map((id) => `group ${id}`).join(", ")}` : ""}`,
                ),
              ),
            ]),
            "holders",
          ),
    ];
  });
}

// ---- what-if

interface Edit {
  mutation: Mutation;
  text: string;
  error?: string;
}
const batch: Edit[] = [];

function permissionBoxes(containerId: string, prefix: string): void {
  $(containerId).replaceChildren(
    ...PERMISSIONS.map(([, name]) => h("label", { class: "check" }, h("input", { type: "checkbox", value: name, id: `${prefix}-${name}` }), ` ${name}`)),
  );
}

function checked(containerId: string): Permission[] {
  return [...$(containerId).querySelectorAll<HTMLInputElement>("input:checked")].map(
    (i) => PERMISSIONS.find(([, n]) => n === i.value)?.[0] ?? Permission.UNSPECIFIED,
  );
}

function editKind(): string {
  return $<HTMLSelectElement>("edit-kind").value;
}

function showEditFields(): void {
  const kind = editKind();
  for (const el of document.querySelectorAll<HTMLElement>("#edit-form [data-for]")) {
    el.hidden = !(el.dataset.for ?? "").split(" ").includes(kind);
  }
}

function need(id: string, what: string): string {
  const v = inputValue(id);
  if (v === "") throw new Error(`${what} is needed`);
  return v;
}

function subjectFromForm(): Subject {
  const k = $<HTMLSelectElement>("edit-subject-kind").value;
  if (k === "everyone") return { kind: { case: "everyone", value: {} } } as Subject;
  const id = need("edit-subject", "the subject id");
  return { kind: { case: k as "person" | "group", value: id } } as Subject;
}

function targetFromForm(): Target {
  const type = need("edit-target-type", "the target type");
  const id = need("edit-target", "the target id");
  const k: Record<string, Target["kind"]["case"]> = { Folder: "folder", Person: "person", AccessGroup: "group", Role: "role" };
  const c = k[type];
  return (c ? { kind: { case: c, value: id } } : { kind: { case: "object", value: { type, id } } }) as Target;
}

function editFromForm(): Edit {
  switch (editKind()) {
    case "join": {
      const group = need("edit-group", "the group"), person = need("edit-person", "the person");
      return { mutation: { op: { case: "addGroupMember", value: { group, person } } } as Mutation, text: `add ${person} to group ${group}` };
    }
    case "leave": {
      const group = need("edit-group", "the group"), person = need("edit-person", "the person");
      return { mutation: { op: { case: "removeGroupMember", value: { group, person } } } as Mutation, text: `remove ${person} from group ${group}` };
    }
    case "assign": {
      const role = need("edit-role", "the role"), to = subjectFromForm();
      return { mutation: { op: { case: "assignRole", value: { role, to } } } as Mutation, text: `assign role ${role} to ${subjectName(to)}` };
    }
    case "unassign": {
      const role = need("edit-role", "the role"), holder = subjectFromForm();
      return { mutation: { op: { case: "unassignRole", value: { role, holder } } } as Mutation, text: `unassign role ${role} from ${subjectName(holder)}` };
    }
    case "ace": {
      const target = targetFromForm(), subject = subjectFromForm();
      const ace = { target, subject, allow: checked("edit-allow"), deny: checked("edit-deny"), propagate: $<HTMLInputElement>("edit-propagate").checked };
      return { mutation: { op: { case: "putAce", value: ace } } as Mutation, text: `set the entry of ${subjectName(subject)} on ${targetName(target)}: ${aceText(ace)}` };
    }
    case "delete-ace": {
      const target = targetFromForm(), subject = subjectFromForm();
      return { mutation: { op: { case: "deleteAce", value: { target, subject } } } as Mutation, text: `delete the entry of ${subjectName(subject)} on ${targetName(target)}` };
    }
    case "move": {
      const target = targetFromForm(), folder = need("edit-folder", "the destination folder");
      return { mutation: { op: { case: "moveObject", value: { target, folder } } } as Mutation, text: `move ${targetName(target)} into folder ${folder}` };
    }
    default:
      throw new Error(`unknown edit ${editKind()}`);
  }
}

function renderBatch(): void {
  $("batch").replaceChildren(
    ...batch.map((e, i) =>
      h(
        "li",
        { class: e.error ? "edit rejected" : "edit", "data-index": String(i) },
        h("span", { class: "text" }, e.text),
        " ",
        h("button", { type: "button", class: "remove", "aria-label": `Remove edit ${i + 1}: ${e.text}`, "data-remove": String(i) }, "Remove"),
        e.error ? h("p", { class: "error", role: "alert", id: `edit-error-${i}` }, e.error) : null,
      ),
    ),
  );
  if (batch.length === 0) $("batch").append(h("li", { class: "none" }, "No edit yet: compose one above and add it."));
}

/** Puts a write's error next to the edit it names (`mutations[2]...`), else under the batch. */
function showWriteError(e: unknown): void {
  const text = errorText(e);
  const m = /mutations\[(\d+)\]/.exec(text);
  const i = m ? Number(m[1]) : batch.length === 1 ? 0 : -1;
  const edit = batch[i];
  if (edit) {
    edit.error = text;
    renderBatch();
    $("whatif-error").hidden = true;
  } else {
    $("whatif-error").textContent = text;
    $("whatif-error").hidden = false;
  }
}

function changesTable(changes: PersonChange[], truncated: boolean): Node[] {
  if (changes.length === 0) return [h("p", { class: "none" }, "Nobody gains or loses anything.")];
  const objs = (keys: { type: string; id: string }[]) => list(keys.map((k) => `${k.type} ${k.id}`));
  return [
    table(
      "Gains and losses per person",
      ["Person", "Privileges gained", "Privileges lost", "Objects newly visible", "Objects no longer visible"],
      changes.map((c) => [
        c.person,
        list(c.privileges.flatMap((p) => p.gained.map((g) => `${p.application}: ${g}`)), "names gained"),
        list(c.privileges.flatMap((p) => p.lost.map((g) => `${p.application}: ${g}`)), "names lost"),
        objs(c.visibleGained),
        objs(c.visibleLost),
      ]),
      "changes",
    ),
    truncated ? h("p", { class: "error" }, "The server cut the list at its limit: more persons are affected.") : null,
  ].filter((n): n is HTMLElement => n !== null);
}

async function write(dryRun: boolean): Promise<void> {
  if (!tenant || batch.length === 0) {
    $("whatif-error").textContent = batch.length === 0 ? "The batch is empty: add an edit first." : "Open a tenant first.";
    $("whatif-error").hidden = false;
    return;
  }
  for (const e of batch) delete e.error;
  renderBatch();
  $("whatif-error").hidden = true;
  const t = tenant;
  const mutations = batch.map((e) => e.mutation);
  await render("whatif", $("whatif-result"), async () => {
    try {
      const r = await admin.write({ tenant: t.id, mutations, dryRun, includeChanges: true });
      seen(r.revision);
      if (!dryRun) {
        batch.length = 0;
        renderBatch();
      }
      return [
        h("p", { class: "outcome", "data-outcome": dryRun ? "dry-run" : "applied" }, dryRun ? `Dry run at revision ${r.revision}: nothing was stored.` : `Applied at revision ${r.revision}.`),
        ...changesTable(r.changes, r.changesTruncated),
      ];
    } catch (e) {
      showWriteError(e);
      return [h("p", { class: "outcome", "data-outcome": "rejected" }, dryRun ? "The dry run was refused." : "The edit was refused; nothing was stored.")];
    }
  });
}

// ---------------------------------------------------------------- live

let liveAbort: AbortController | undefined;
let personFollower: Follower<PrivilegesUpdate> | undefined;
let followedPerson = "";
let rawLive = false;

function liveStatus(state: string, text: string): void {
  const el = $("live");
  el.dataset.state = state;
  el.textContent = text;
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;
let refreshAt = 0n;
/** A write landed at `r`: answer the current view again, at least at `r`. */
function changed(r: bigint): void {
  if (r > refreshAt) refreshAt = r;
  seen(r);
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => void refresh(refreshAt), 30);
}

async function refresh(atLeast: bigint): Promise<void> {
  switch (view) {
    case "person":
      return personView(atLeast);
    case "object":
      return objectView(atLeast);
    case "privilege":
      return privilegeView(atLeast);
    case "whatif":
      return;
  }
}

/** The raw change stream of the tenant (an admin subscription); without the admin credential, the person's privileges. */
function startLive(): void {
  liveAbort?.abort();
  clearInterval(followerTimer);
  personFollower = undefined;
  followedPerson = "";
  const ac = new AbortController();
  liveAbort = ac;
  rawLive = false;
  const t = tenant;
  if (!t) return;
  let attempt = 0;
  const run = async (): Promise<void> => {
    while (!ac.signal.aborted) {
      liveStatus("connecting", "connecting to the change stream…");
      try {
        for await (const ev of rawWatch.watch({ subscription: { case: "raw", value: { tenant: t.id, fromNow: true } } }, { signal: ac.signal })) {
          attempt = 0;
          if (!rawLive) {
            rawLive = true;
            personFollower?.close();
            personFollower = undefined;
            followedPerson = "";
            liveStatus("live", "live: every change of the tenant");
          }
          switch (ev.event.case) {
            case "rawChange":
            case "restrictedModeChanged":
              changed(ev.event.value.revision);
              break;
            case "checkpoint":
              seen(ev.event.value.revision);
              break;
          }
        }
      } catch (e) {
        if (ac.signal.aborted) return;
        rawLive = false;
        if (e instanceof ConnectError && (e.code === Code.PermissionDenied || e.code === Code.Unauthenticated)) {
          // No admin credential: follow the person shown instead (computed subscription, decision token).
          liveStatus("partial", "live through the shown person's privileges (the tenant's change stream needs the admin token)");
          watchPerson(inputValue("person"));
          return;
        }
        attempt++;
        const delay = Math.min(5000, 200 * 2 ** attempt);
        liveStatus("reconnecting", `change stream lost (${errorText(e)}); retrying in ${delay} ms`);
        await new Promise((ok) => setTimeout(ok, delay));
      }
    }
  };
  void run();
}

/** The application the shown person holds most privileges in (set by the person view). */
let preferredApp = "";
let followerTimer: ReturnType<typeof setInterval> | undefined;

/**
 * Without the raw stream: the shown person's privileges in the application
 * they hold most in, followed (a computed subscription, decision token). A
 * difference answers the view again at once; the stream's checkpoints carry
 * the server's revision, so any other write is picked up by the next one.
 */
function watchPerson(person: string): void {
  if (rawLive || !tenant || person === "" || liveAbort === undefined) return;
  if ($("live").dataset.state !== "partial" && $("live").dataset.state !== "closed") return;
  const application = preferredApp || applications()[0];
  if (application === undefined) return;
  const key = `${person}\u0000${application}`;
  if (key === followedPerson) return;
  personFollower?.close();
  clearInterval(followerTimer);
  followedPerson = key;
  const t = tenant;
  const f = authz.followPrivileges(
    { tenant: t.id, person, application },
    {
      signal: liveAbort.signal,
      onUpdate: (u) => {
        if (u.kind !== "initial") changed(u.revision);
      },
      onStatus: (s) => {
        if (s.state === "live") liveStatus("partial", `live: ${person}'s privileges in ${application}, and every change at the stream's checkpoints (the tenant's change stream needs the admin token)`);
        if (s.state === "closed" && s.error) liveStatus("closed", `not live: ${errorText(s.error)}`);
      },
    },
  );
  personFollower = f;
  followerTimer = setInterval(() => {
    if (personFollower !== f) return clearInterval(followerTimer);
    if (f.revision > revision) changed(f.revision);
  }, 250);
}

// ---------------------------------------------------------------- wiring

function on(id: string, event: string, f: (ev: Event) => void): void {
  $(id).addEventListener(event, f);
}

function submit(id: string, f: () => Promise<void> | void): void {
  on(id, "submit", (ev) => {
    ev.preventDefault();
    void f();
  });
}

function start(): void {
  permissionBoxes("edit-allow", "allow");
  permissionBoxes("edit-deny", "deny");
  showEditFields();
  renderBatch();
  // Tokens: memory only; a change restarts the change stream with the new credential.
  on("decision-token", "change", () => {
    decisionToken = inputValue("decision-token");
  });
  on("admin-token", "change", () => {
    adminToken = inputValue("admin-token");
    if (tenant) startLive();
  });
  submit("settings", async () => {
    decisionToken = inputValue("decision-token");
    adminToken = inputValue("admin-token");
    const id = inputValue("tenant");
    if (id === "") return;
    setParams({ tenant: id });
    await openTenant(id);
    await refresh(0n);
  });
  for (const tab of document.querySelectorAll<HTMLButtonElement>(".tab")) {
    tab.addEventListener("click", () => {
      showView(tab.dataset.view as View, true);
      void refresh(0n);
    });
  }
  submit("person-form", () => personView());
  submit("object-form", () => objectView());
  submit("privilege-form", () => privilegeView());
  on("privilege-app", "change", updatePrivilegeList);
  on("object-type", "change", () => void updateObjectList());
  on("edit-kind", "change", showEditFields);
  submit("edit-form", () => {
    try {
      batch.push(editFromForm());
      $("whatif-error").hidden = true;
    } catch (e) {
      $("whatif-error").textContent = errorText(e);
      $("whatif-error").hidden = false;
    }
    renderBatch();
  });
  on("batch", "click", (ev) => {
    const b = (ev.target as HTMLElement).closest<HTMLButtonElement>("button[data-remove]");
    if (!b) return;
    batch.splice(Number(b.dataset.remove), 1);
    renderBatch();
  });
  on("dry-run", "click", () => void write(true));
  on("apply", "click", () => void write(false));
  on("clear-batch", "click", () => {
    batch.length = 0;
    renderBatch();
    $("whatif-result").replaceChildren();
  });
  for (const v of VIEWS) $(`h-${v}`).tabIndex = -1;

  // Initial state from the query string.
  const v = params.get("view") as View | null;
  showView(v && VIEWS.includes(v) ? v : "person");
  const fields: [string, string][] = [
    ["person", "person"],
    ["object-type", "type"],
    ["object-id", "id"],
    ["privilege", "privilege"],
  ];
  for (const [id, key] of fields) {
    const value = params.get(key);
    if (value !== null) $<HTMLInputElement>(id).value = value;
  }
  const tenantId = params.get("tenant");
  void (async () => {
    const tenants = loadTenants();
    const only = tenantId === null ? await tenants.then((ts) => (ts.length === 1 ? ts[0]?.id : undefined)) : undefined;
    const id = tenantId ?? only;
    if (id === undefined) {
      $("tenant").focus();
      return;
    }
    $<HTMLInputElement>("tenant").value = id;
    await openTenant(id, tenants);
    const app = params.get("app");
    if (app) {
      for (const s of ["object-app", "privilege-app"]) {
        const sel = $<HTMLSelectElement>(s);
        if ([...sel.options].some((o) => o.value === app)) sel.value = app;
      }
      updatePrivilegeList();
    }
    await refresh(0n);
  })();
}

start();
