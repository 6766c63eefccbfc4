// The client against a real authzd over gRPC (HTTP/2 plaintext) from Node.js.
import assert from "node:assert/strict";
import { Code, ConnectError } from "@connectrpc/connect";
import { after, before, describe, test } from "node:test";
import { createAuthzdClient, type AuthzdClient, type FollowStatus, type PrivilegesUpdate, type VisibleObjectsUpdate } from "../src/index.js";
import { followPrivileges } from "../src/follow.js";
import { createNodeTransport } from "../src/node.js";
import { putWebCallbackAgentRole, TENANT, until, WCB_AGENT, WCB_APP, WEB_CALLBACK_PRIVILEGES } from "./support/demo.js";
import { AuthzdServer } from "./support/server.js";

const RESCHEDULE = "Web Callback - Can Reschedule";
/** Requires Reschedule (seeds/001): it stops being effective with it. */
const RESCHEDULE_BEFORE_CALL = "Web Callback - Can Reschedule Before Call";
const MARK_DONE = "Web Callback - Can Mark Done";

function client(server: AuthzdServer): AuthzdClient {
  return createAuthzdClient(createNodeTransport({ baseUrl: server.url }));
}

describe("checks", () => {
  let server: AuthzdServer;
  let authz: AuthzdClient;
  before(async () => {
    server = await AuthzdServer.start();
    authz = client(server);
  });
  after(() => server.stop());

  test("checkPrivilege: cb-supervisor may export Callback reports, cb-monitor may not", async () => {
    const yes = await authz.checkPrivilege({ tenant: TENANT, person: "cb-supervisor", application: "Callback", privilege: "Callback - Export Reports" });
    assert.equal(yes.allowed, true);
    assert.equal(yes.reasonCode, "ALLOWED");
    assert.ok(yes.revision >= 1n, `revision ${yes.revision}`);
    const no = await authz.checkPrivilege({ tenant: TENANT, person: "cb-monitor", application: "Callback", privilege: "Callback - Export Reports" });
    assert.equal(no.allowed, false);
    assert.equal(no.reasonCode, "MISSING_PRIVILEGE");
    assert.equal(no.revision, yes.revision);
  });

  test("checkPrivilege: wcb-agent-full holds every Web Callback privilege", async () => {
    for (const privilege of WEB_CALLBACK_PRIVILEGES) {
      const d = await authz.checkPrivilege({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP, privilege });
      assert.equal(d.allowed, true, `${privilege}: ${d.reasonCode}`);
    }
  });

  test("checkPermission: the Sales team reads ges_Sales_VQ, a Service agent does not", async () => {
    const object = { type: "Script", id: "ges_Sales_VQ" };
    const yes = await authz.checkPermission({ tenant: TENANT, person: "sales-agent-1", permission: "Read", object });
    assert.deepEqual([yes.allowed, yes.reasonCode], [true, "ALLOWED"]);
    const no = await authz.checkPermission({ tenant: TENANT, person: "service-agent-1", permission: "Read", object });
    assert.deepEqual([no.allowed, no.reasonCode], [false, "NO_GRANT"]);
    const unknown = await authz.checkPermission({ tenant: TENANT, person: "nobody", permission: "Read", object });
    assert.deepEqual([unknown.allowed, unknown.reasonCode], [false, "UNKNOWN_SUBJECT"]);
  });

  test("atLeastRevision reads the caller's own write", async () => {
    const rev = await putWebCallbackAgentRole(authz, [RESCHEDULE]);
    const d = await authz.checkPrivilege({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP, privilege: RESCHEDULE, atLeastRevision: rev });
    assert.equal(d.allowed, false);
    assert.equal(d.reasonCode, "MISSING_PRIVILEGE");
    assert.ok(d.revision >= rev);
    await putWebCallbackAgentRole(authz);
  });
});

describe("followPrivileges", () => {
  test("the current set, then a loss after an admin write removes Reschedule from the role", async () => {
    const server = await AuthzdServer.start();
    const authz = client(server);
    const follower = authz.followPrivileges({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP });
    try {
      const it = follower[Symbol.asyncIterator]();
      const first = (await it.next()).value as PrivilegesUpdate;
      assert.equal(first.kind, "initial");
      assert.deepEqual([...first.privileges].sort(), [...WEB_CALLBACK_PRIVILEGES].sort());
      assert.deepEqual([...first.gained].sort(), [...WEB_CALLBACK_PRIVILEGES].sort());
      assert.deepEqual(first.lost, []);
      assert.deepEqual(first.snapshot.roles, ["Web Callback Agent"]);

      const started = Date.now();
      const rev = await putWebCallbackAgentRole(authz, [RESCHEDULE]);
      const change = (await it.next()).value as PrivilegesUpdate;
      const ms = Date.now() - started;
      assert.equal(change.kind, "change");
      assert.equal(change.revision, rev);
      // Reschedule Before Call requires Reschedule: it goes with it.
      assert.deepEqual(change.lost, [RESCHEDULE, RESCHEDULE_BEFORE_CALL]);
      assert.deepEqual(change.gained, []);
      assert.equal(change.privileges.has(RESCHEDULE), false);
      assert.equal(change.privileges.size, WEB_CALLBACK_PRIVILEGES.length - 2);
      assert.ok(ms < 1000, `the loss took ${ms} ms`);

      // And back: gained.
      const rev2 = await putWebCallbackAgentRole(authz);
      const back = (await it.next()).value as PrivilegesUpdate;
      assert.deepEqual([back.kind, back.revision, back.gained, back.lost], ["change", rev2, [RESCHEDULE, RESCHEDULE_BEFORE_CALL], []]);
      assert.equal(follower.status.state, "live");
    } finally {
      follower.close();
      await follower.closed;
      await server.stop();
    }
  });

  test("killed and restarted on the same store and port: reconnects and reports a change made while it was down", async () => {
    const server = await AuthzdServer.start();
    const authz = client(server);
    const updates: PrivilegesUpdate[] = [];
    const statuses: FollowStatus[] = [];
    // Record what each (re)subscription asks for, to see at_least_revision.
    const asked: bigint[] = [];
    const watch: typeof authz.watch = {
      watch(req, opts) {
        asked.push(BigInt(req.atLeastRevision ?? 0n));
        return authz.watch.watch(req, opts);
      },
    };
    const follower = followPrivileges(
      watch,
      { tenant: TENANT, person: WCB_AGENT, application: WCB_APP },
      { onUpdate: (u) => updates.push(u), onStatus: (s) => statuses.push(s), backoff: { initialMs: 100, maxMs: 400 } },
    );
    try {
      await until(() => updates.length === 1, 5000, "the initial state");
      const rev0 = updates[0]!.revision;
      // Let a checkpoint arrive as well (every second here), then kill the server hard.
      await until(() => follower.revision >= rev0, 3000, "a revision");
      await server.stop("SIGKILL");
      await until(() => statuses.some((s) => s.state === "reconnecting"), 5000, "the follower to notice");

      // While it is down, another authzd on the same store takes a write.
      const other = await AuthzdServer.start({ dir: server.dir });
      const rev = await putWebCallbackAgentRole(client(other), [MARK_DONE]);
      await other.stop();
      assert.ok(rev > rev0);
      assert.equal(updates.length, 1, "no update while the server is down");

      await server.restart();
      await until(() => updates.length === 2, 10_000, "the update after the restart");
      const u = updates[1]!;
      assert.equal(u.kind, "resync");
      assert.equal(u.resync, "reconnected");
      assert.equal(u.revision, rev);
      assert.deepEqual(u.lost, [MARK_DONE]);
      assert.deepEqual(u.gained, []);
      assert.equal(u.privileges.has(MARK_DONE), false);
      assert.equal(u.privileges.has(RESCHEDULE), true);
      await until(() => follower.status.state === "live", 2000, "live again");
      // Every resubscription asked for at least the last revision it had seen.
      assert.equal(asked[0], 0n);
      assert.ok(asked.length >= 2, `subscriptions: ${asked.length}`);
      for (const a of asked.slice(1)) assert.ok(a >= rev0, `at_least_revision ${a} < ${rev0}`);

      // Still following after the reconnect.
      const rev3 = await putWebCallbackAgentRole(authz);
      await until(() => updates.length === 3, 2000, "a change after the reconnect");
      assert.deepEqual([updates[2]!.kind, updates[2]!.revision, updates[2]!.gained, updates[2]!.lost], ["change", rev3, [MARK_DONE], []]);
    } finally {
      follower.close();
      await follower.closed;
      await server.stop();
    }
  });

  test("a graceful shutdown (UNAVAILABLE) is followed by a reconnect too", async () => {
    const server = await AuthzdServer.start();
    const authz = client(server);
    const updates: PrivilegesUpdate[] = [];
    const follower = authz.followPrivileges(
      { tenant: TENANT, person: WCB_AGENT, application: WCB_APP },
      { onUpdate: (u) => updates.push(u), backoff: { initialMs: 100, maxMs: 400 } },
    );
    try {
      await until(() => updates.length === 1, 5000, "the initial state");
      await server.stop("SIGTERM");
      await until(() => follower.status.state === "reconnecting", 5000, "reconnecting");
      await server.restart();
      await until(() => follower.status.state === "live", 10_000, "live again");
      assert.equal(updates.length, 2);
      assert.deepEqual([updates[1]!.kind, updates[1]!.resync, updates[1]!.gained, updates[1]!.lost], ["resync", "reconnected", [], []]);
    } finally {
      follower.close();
      await follower.closed;
      await server.stop();
    }
  });
});

describe("followVisibleObjects", () => {
  test("sales-agent-1's Scripts: ges_Sales_VQ lost when leaving the Sales group, gained when back", async () => {
    const server = await AuthzdServer.start();
    const authz = client(server);
    const follower = authz.followVisibleObjects({ tenant: TENANT, person: "sales-agent-1", type: "Script" });
    try {
      const it = follower[Symbol.asyncIterator]();
      const first = (await it.next()).value as VisibleObjectsUpdate;
      assert.equal(first.kind, "initial");
      assert.deepEqual([...first.objects.keys()], ["ges_Sales_VQ"]);
      assert.equal(first.objects.get("ges_Sales_VQ")?.folder, "Scripts/Callback");

      const w1 = await authz.admin.write({ tenant: TENANT, mutations: [{ op: { case: "removeGroupMember", value: { group: "sales", person: "sales-agent-1" } } }] });
      const lost = (await it.next()).value as VisibleObjectsUpdate;
      assert.deepEqual([lost.kind, lost.revision, lost.objects.size], ["change", w1.revision, 0]);
      assert.deepEqual(lost.lost.map((k) => `${k.type}/${k.id}`), ["Script/ges_Sales_VQ"]);

      const w2 = await authz.admin.write({ tenant: TENANT, mutations: [{ op: { case: "addGroupMember", value: { group: "sales", person: "sales-agent-1" } } }] });
      const gained = (await it.next()).value as VisibleObjectsUpdate;
      assert.deepEqual([gained.kind, gained.revision, gained.gained.map((o) => o.id), gained.lost], ["change", w2.revision, ["ges_Sales_VQ"], []]);
    } finally {
      follower.close();
      await follower.closed;
      await server.stop();
    }
  });
});

describe("tokens and connections", () => {
  test("with --decision-token: no token is UNAUTHENTICATED (a follower stops), the token passes", async () => {
    const server = await AuthzdServer.start({ args: ["--decision-token", "s3cret-decisions"] });
    try {
      const without = client(server);
      await assert.rejects(
        without.checkPrivilege({ tenant: TENANT, person: "cb-supervisor", application: "Callback", privilege: "Callback - Export Reports" }),
        (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated,
      );
      const f = without.followPrivileges({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP });
      await assert.rejects(f.closed, (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);

      const withToken = createAuthzdClient(createNodeTransport({ baseUrl: server.url, token: "s3cret-decisions" }));
      const d = await withToken.checkPrivilege({ tenant: TENANT, person: "cb-supervisor", application: "Callback", privilege: "Callback - Export Reports" });
      assert.equal(d.allowed, true);
      const g = withToken.followPrivileges({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP });
      const first = (await g[Symbol.asyncIterator]().next()).value as PrivilegesUpdate;
      assert.equal(first.privileges.size, WEB_CALLBACK_PRIVILEGES.length);
      g.close();
      await g.closed;
    } finally {
      await server.stop();
    }
  });

  test("a quiet stream (no checkpoints) with HTTP/2 pings every 200 ms stays up", async () => {
    const server = await AuthzdServer.start({ checkpointMs: 0 });
    const authz = createAuthzdClient(createNodeTransport({ baseUrl: server.url, pingIntervalMs: 200, grpc: { pingTimeoutMs: 500 } }));
    const statuses: FollowStatus[] = [];
    const updates: PrivilegesUpdate[] = [];
    const f = authz.followPrivileges(
      { tenant: TENANT, person: WCB_AGENT, application: WCB_APP },
      { onStatus: (s) => statuses.push(s), onUpdate: (u) => updates.push(u) },
    );
    try {
      await until(() => updates.length === 1, 5000, "the initial state");
      await new Promise((ok) => setTimeout(ok, 2000));
      assert.deepEqual(statuses.map((s) => s.state), ["connecting", "live"], "no reconnect");
      const rev = await putWebCallbackAgentRole(authz, [MARK_DONE]);
      await until(() => updates.length === 2, 2000, "a change on the quiet stream");
      assert.deepEqual([updates[1]!.revision, updates[1]!.lost], [rev, [MARK_DONE]]);
    } finally {
      f.close();
      await f.closed;
      await server.stop();
    }
  });
});
