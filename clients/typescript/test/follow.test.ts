// The follower's story logic against a scripted stand-in for WatchService
// (the real server is in node.test.ts and browser.test.ts): what a slow
// iterator gets, fatal codes, the idle timeout, split snapshots, backoff.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { backoffDelay, followPrivileges, followVisibleObjects, type FollowStatus, type PrivilegesUpdate } from "../src/follow.js";
import { ResyncReason, WatchEventSchema, type WatchEvent, type WatchRequest } from "../src/gen/authzd/v1/watch_pb.js";
import { until } from "./support/demo.js";

type Script = (req: WatchRequest, signal: AbortSignal) => AsyncIterable<WatchEvent>;

/** A WatchService client whose n-th call runs `scripts[n]`. */
function fakeWatch(scripts: Script[]) {
  const requests: WatchRequest[] = [];
  return {
    requests,
    client: {
      watch(req: Partial<WatchRequest>, opts?: { signal?: AbortSignal }) {
        const r = req as WatchRequest;
        requests.push(r);
        const s = scripts[Math.min(requests.length - 1, scripts.length - 1)]!;
        return s(r, opts?.signal ?? new AbortController().signal);
      },
    } as never,
  };
}

const snap = (revision: bigint, privileges: string[], reason = ResyncReason.INITIAL): WatchEvent =>
  create(WatchEventSchema, {
    event: { case: "snapshot", value: { revision, reason, complete: true, state: { case: "privileges", value: { application: "A", privileges } } } },
  });
const changed = (revision: bigint, gained: string[], lost: string[]): WatchEvent =>
  create(WatchEventSchema, { event: { case: "privilegesChanged", value: { revision, gained, lost } } });
const checkpoint = (revision: bigint): WatchEvent => create(WatchEventSchema, { event: { case: "checkpoint", value: { revision } } });

/** Waits until aborted, then fails like a cancelled call. */
function hang(signal: AbortSignal): Promise<never> {
  return new Promise((_, fail) => signal.addEventListener("abort", () => fail(new ConnectError("cancelled", Code.Canceled)), { once: true }));
}

const SUB = { tenant: "t", person: "p", application: "A" };
const FAST = { initialMs: 5, maxMs: 20 };

test("a slow iterator gets the changes it missed folded into one update, against what it last saw", async () => {
  let release!: () => void;
  const gate = new Promise<void>((ok) => (release = ok));
  const fake = fakeWatch([
    async function* (_req, signal) {
      yield snap(1n, ["a", "b"]);
      await gate;
      yield changed(2n, ["c"], []);
      yield changed(3n, [], ["a"]);
      yield changed(4n, ["a"], ["b"]);
      await hang(signal);
    },
  ]);
  const f = followPrivileges(fake.client, SUB, { backoff: FAST });
  const it = f[Symbol.asyncIterator]();
  const first = (await it.next()).value as PrivilegesUpdate;
  assert.deepEqual([first.kind, first.revision, [...first.privileges], first.gained, first.lost], ["initial", 1n, ["a", "b"], ["a", "b"], []]);
  release();
  await until(() => f.current?.revision === 4n, 2000, "revision 4");
  const folded = (await it.next()).value as PrivilegesUpdate;
  // a: held, lost, regained — nothing to report; b lost; c gained.
  assert.deepEqual([folded.kind, folded.revision, folded.gained, folded.lost], ["change", 4n, ["c"], ["b"]]);
  assert.deepEqual([...folded.privileges].sort(), ["a", "c"]);
  f.close();
  assert.deepEqual(await it.next(), { value: undefined, done: true });
  await f.closed;
});

test("a failed stream is resumed at the last revision seen (checkpoints included) and the resync diffed against the caller", async () => {
  const fake = fakeWatch([
    async function* () {
      yield snap(5n, ["a", "b"]);
      yield checkpoint(7n);
      throw new ConnectError("connection reset", Code.Unavailable);
    },
    async function* () {
      throw new ConnectError("connection refused", Code.Unavailable);
    },
    async function* (_req, signal) {
      yield snap(9n, ["b", "c"]);
      await hang(signal);
    },
  ]);
  const updates: PrivilegesUpdate[] = [];
  const statuses: FollowStatus[] = [];
  const f = followPrivileges(fake.client, SUB, { backoff: FAST, onUpdate: (u) => updates.push(u), onStatus: (s) => statuses.push(s) });
  await until(() => updates.length === 2, 2000, "two updates");
  assert.deepEqual(
    fake.requests.map((r) => r.atLeastRevision),
    [0n, 7n, 7n],
  );
  assert.deepEqual([updates[1]!.kind, updates[1]!.resync, updates[1]!.revision, updates[1]!.gained, updates[1]!.lost], ["resync", "reconnected", 9n, ["c"], ["a"]]);
  assert.deepEqual(
    statuses.map((s) => s.state),
    ["connecting", "live", "reconnecting", "connecting", "reconnecting", "connecting", "live"],
  );
  const r = statuses.filter((s) => s.state === "reconnecting") as Extract<FollowStatus, { state: "reconnecting" }>[];
  assert.deepEqual(r.map((s) => [s.attempt, s.error.code]), [[1, Code.Unavailable], [2, Code.Unavailable]]);
  f.close();
  await f.closed;
  assert.equal(f.status.state, "closed");
});

test("a server-side resync (lagged) is reported as such", async () => {
  const fake = fakeWatch([
    async function* (_req, signal) {
      yield snap(1n, ["a"]);
      yield snap(3n, ["a", "b"], ResyncReason.LAGGED);
      await hang(signal);
    },
  ]);
  const updates: PrivilegesUpdate[] = [];
  const f = followPrivileges(fake.client, SUB, { onUpdate: (u) => updates.push(u) });
  await until(() => updates.length === 2, 2000, "two updates");
  assert.deepEqual([updates[1]!.kind, updates[1]!.resync, updates[1]!.gained], ["resync", "lagged", ["b"]]);
  assert.equal(fake.requests.length, 1);
  f.close();
  await f.closed;
});

test("a request that can never succeed stops the follower with its error", async () => {
  const fake = fakeWatch([
    async function* () {
      throw new ConnectError("missing token", Code.Unauthenticated);
    },
  ]);
  const f = followPrivileges(fake.client, SUB, { backoff: FAST });
  await assert.rejects(f.closed, (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
  await assert.rejects(f[Symbol.asyncIterator]().next(), (e: unknown) => e instanceof ConnectError && e.code === Code.Unauthenticated);
  assert.equal(fake.requests.length, 1);
  assert.equal(f.status.state, "closed");
});

test("a stream that goes silent (no checkpoint) is abandoned after idleTimeoutMs and resubscribed", async () => {
  const fake = fakeWatch([
    async function* (_req, signal) {
      yield snap(1n, ["a"]);
      await hang(signal);
    },
    async function* (_req, signal) {
      yield snap(2n, []);
      await hang(signal);
    },
  ]);
  const updates: PrivilegesUpdate[] = [];
  const statuses: FollowStatus[] = [];
  const f = followPrivileges(fake.client, SUB, { idleTimeoutMs: 100, backoff: FAST, onUpdate: (u) => updates.push(u), onStatus: (s) => statuses.push(s) });
  await until(() => updates.length === 2, 3000, "the resubscription");
  const r = statuses.find((s) => s.state === "reconnecting") as Extract<FollowStatus, { state: "reconnecting" }>;
  assert.equal(r.error.code, Code.DeadlineExceeded);
  assert.deepEqual([updates[1]!.kind, updates[1]!.lost], ["resync", ["a"]]);
  f.close();
  await f.closed;
});

test("a visible-objects snapshot in parts is one state; a changed object counts as gained", async () => {
  const obj = (id: string, name = id) => ({ id, name, folder: "F", properties: {} });
  const part = (objects: ReturnType<typeof obj>[], complete: boolean): WatchEvent =>
    create(WatchEventSchema, {
      event: { case: "snapshot", value: { revision: 4n, reason: ResyncReason.INITIAL, complete, state: { case: "objects", value: { objects } } } },
    });
  const fake = fakeWatch([
    async function* (_req, signal) {
      yield part([obj("m1"), obj("m2")], false);
      yield part([obj("m3")], true);
      yield create(WatchEventSchema, {
        event: { case: "visibleObjectsChanged", value: { revision: 5n, gained: [obj("m2", "renamed")], lost: [{ type: "Metric", id: "m1" }] } },
      });
      await hang(signal);
    },
  ]);
  const updates: { kind: string; ids: string[]; gained: string[]; lost: string[] }[] = [];
  const f = followVisibleObjects(fake.client, { tenant: "t", person: "p", type: "Metric" }, {
    onUpdate: (u) => updates.push({ kind: u.kind, ids: [...u.objects.keys()], gained: u.gained.map((o) => o.id), lost: u.lost.map((k) => k.id) }),
  });
  await until(() => updates.length === 2, 2000, "two updates");
  assert.deepEqual(updates, [
    { kind: "initial", ids: ["m1", "m2", "m3"], gained: ["m1", "m2", "m3"], lost: [] },
    { kind: "change", ids: ["m2", "m3"], gained: ["m2"], lost: ["m1"] },
  ]);
  f.close();
  await f.closed;
});

test("backoff grows to its cap, with jitter only shortening it", () => {
  const b = { initialMs: 100, maxMs: 1000, jitter: 0 };
  assert.deepEqual([1, 2, 3, 4, 5, 10].map((a) => backoffDelay(b, a)), [100, 200, 400, 800, 1000, 1000]);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay({ initialMs: 100, maxMs: 1000, jitter: 0.5 }, 3);
    assert.ok(d >= 200 && d <= 400, String(d));
  }
});

test("an error thrown by onUpdate surfaces as an uncaught error and does not cut the stream", async () => {
  const fake = fakeWatch([
    async function* (_req, signal) {
      yield snap(1n, ["a"]);
      yield changed(2n, ["b"], []);
      await hang(signal);
    },
  ]);
  const uncaught: unknown[] = [];
  const grab = (e: unknown) => uncaught.push(e);
  // node:test reports uncaught exceptions as failures: take them over for this test.
  const previous = process.listeners("uncaughtException");
  process.removeAllListeners("uncaughtException");
  process.on("uncaughtException", grab);
  try {
    const seen: bigint[] = [];
    const f = followPrivileges(fake.client, SUB, {
      onUpdate: (u) => {
        seen.push(u.revision);
        if (u.revision === 1n) throw new Error("bug in the page");
      },
    });
    await until(() => seen.length === 2 && uncaught.length === 1, 2000, "both updates and the error");
    assert.deepEqual(seen, [1n, 2n]);
    assert.equal((uncaught[0] as Error).message, "bug in the page");
    assert.equal(fake.requests.length, 1, "no reconnect");
    assert.equal(f.status.state, "live");
    f.close();
    await f.closed;
  } finally {
    process.removeListener("uncaughtException", grab);
    for (const l of previous) process.on("uncaughtException", l as (e: Error) => void);
  }
});

test("an already aborted signal: nothing is requested", async () => {
  const fake = fakeWatch([
    async function* () {
      yield snap(1n, ["a"]);
    },
  ]);
  const ac = new AbortController();
  ac.abort();
  const f = followPrivileges(fake.client, SUB, { signal: ac.signal });
  await f.closed;
  assert.equal(fake.requests.length, 0);
  assert.deepEqual(await f[Symbol.asyncIterator]().next(), { value: undefined, done: true });
});
