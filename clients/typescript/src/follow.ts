// Following a computed Watch subscription across disconnects.
//
// The server sends a full `Snapshot`, then differences tagged with revisions,
// and periodic `Checkpoint`s. A stream can end at any time (server restart,
// network cut, replica shutdown with UNAVAILABLE). A follower then reconnects
// by itself with exponential backoff, asking for `at_least_revision` = the
// last revision it saw, and gets a fresh full state. What it tells its caller
// is always computed against what THAT caller last saw, so the caller sees
// one continuous story: the state, then what was gained and lost, whether the
// change arrived as a difference or inside a fresh snapshot after a
// reconnect.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { ObjectKeySchema, type EffectivePrivileges, type ObjectKey, type Permission, type VisibleObject } from "./gen/authzd/v1/types_pb.js";
import { ResyncReason, type WatchEvent, type WatchService } from "./gen/authzd/v1/watch_pb.js";

/** How an update came about. */
export type UpdateKind =
  /** The first state of this follower. */
  | "initial"
  /** A difference the server pushed. */
  | "change"
  /**
   * A fresh full state replaced what was held: after a reconnect, or because
   * the server resynced the subscription. `gained` / `lost` still say what
   * changed since the caller's last update.
   */
  | "resync";

/** Why a resync happened. */
export type ResyncCause =
  /** The follower reconnected (the stream had ended or failed). */
  | "reconnected"
  /**
   * The server replaced a slow subscriber's pending differences with a full
   * state (`RESYNC_REASON_LAGGED`; the current server sends the net
   * difference instead, but the reason is still decoded).
   */
  | "lagged"
  /** The replica reloaded the tenant from the store. */
  | "reloaded";

/** One step of a privileges follower's story. */
export interface PrivilegesUpdate {
  kind: UpdateKind;
  /** With `kind: "resync"`: why. */
  resync?: ResyncCause;
  /** The revision the state is at. */
  revision: bigint;
  /** The person's effective privileges now (canonical names). */
  privileges: ReadonlySet<string>;
  /** Became effective since the caller's previous update (with `initial`: everything held). */
  gained: string[];
  /** Stopped being effective since the caller's previous update. */
  lost: string[];
  /**
   * The last full state the server sent (source, roles, primary role, unmet
   * privileges), as of `snapshotRevision`. Differences change `privileges`
   * only, so these details may be older than `revision`.
   */
  snapshot: EffectivePrivileges;
  /** The revision of `snapshot`. */
  snapshotRevision: bigint;
}

/** One step of a visible-objects follower's story. */
export interface VisibleObjectsUpdate {
  kind: UpdateKind;
  resync?: ResyncCause;
  revision: bigint;
  /** The objects visible now, by id (in id order as received). */
  objects: ReadonlyMap<string, VisibleObject>;
  /** Objects that became visible, or whose readable content changed, since the caller's previous update. */
  gained: VisibleObject[];
  /** Objects that stopped being visible since the caller's previous update. */
  lost: ObjectKey[];
}

/** The connection state of a follower, for a status line ("reconnecting..."). */
export type FollowStatus =
  | { state: "connecting"; attempt: number }
  | { state: "live"; revision: bigint }
  | { state: "reconnecting"; attempt: number; delayMs: number; error: ConnectError }
  | { state: "closed"; error?: ConnectError };

/** Exponential backoff between reconnects: `min(maxMs, initialMs * multiplier^(attempt-1))`, then jittered down by up to `jitter`. */
export interface Backoff {
  /** First delay (default 250 ms). */
  initialMs?: number;
  /** Longest delay (default 10,000 ms). */
  maxMs?: number;
  /** Growth per failed attempt (default 2). */
  multiplier?: number;
  /** Fraction of the delay taken off at random, 0..1 (default 0.5), so a restarted server is not hit by every desktop at once. */
  jitter?: number;
}

/** Options of `followPrivileges` / `followVisibleObjects`. */
export interface FollowOptions<U> {
  /** Stops the follower (same as `close()`). */
  signal?: AbortSignal;
  /** Called with every update, in order (in addition to, or instead of, iterating). */
  onUpdate?: (update: U) => void;
  /** Called on every connection state change. */
  onStatus?: (status: FollowStatus) => void;
  /** Reconnect backoff. */
  backoff?: Backoff;
  /**
   * Reconnect when nothing (not even a `Checkpoint`) arrived for this long,
   * in milliseconds: a connection that died without a reset. Must exceed the
   * server's `--checkpoint-interval-ms` (default 10,000). Default 35,000; 0: off.
   */
  idleTimeoutMs?: number;
  /** Start at a snapshot revision at least this one (for example the revision of your own write). */
  atLeastRevision?: bigint;
  /**
   * Status codes after which the follower stops (rejecting `closed` and the
   * iterator) instead of reconnecting. Default: INVALID_ARGUMENT,
   * UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED — a request that can
   * never succeed. Everything else (UNAVAILABLE, NOT_FOUND for a tenant a
   * replica does not know yet, network errors, ...) is retried.
   */
  fatalCodes?: readonly Code[];
}

/**
 * A running follower: iterate it (`for await`), or pass `onUpdate`. Each
 * iterator gets its own continuous story: if it reads slowly, the updates it
 * missed are folded into one (gained/lost against what it last saw).
 */
export interface Follower<U> extends AsyncIterable<U> {
  /** The latest update, or undefined before the first state. */
  readonly current: U | undefined;
  /** The highest revision seen (snapshots, differences, checkpoints). */
  readonly revision: bigint;
  /** The current connection state. */
  readonly status: FollowStatus;
  /** Stops following; iterators end. */
  close(): void;
  /** Settles when the follower stops: resolves on `close()`/abort, rejects on a fatal error. */
  readonly closed: Promise<void>;
}

const DEFAULT_FATAL: readonly Code[] = [Code.InvalidArgument, Code.Unauthenticated, Code.PermissionDenied, Code.Unimplemented];

/** What differs between the two subscription kinds. */
interface Model<S, U> {
  /** Applies one event; returns the new state (a new object) when it changed the state, with the kind. */
  apply(state: S | undefined, ev: WatchEvent): { state: S; revision: bigint; resync?: ResyncCause; initial?: boolean } | undefined;
  /** The update a consumer that last saw `prev` (undefined: nothing) gets for `next`. */
  update(prev: S | undefined, next: S, kind: UpdateKind, resync: ResyncCause | undefined, revision: bigint): U;
  /** Forget a partial snapshot (the stream ended in the middle of one). */
  reset(): void;
}

type WatchClient = Client<typeof WatchService>;

class Engine<S, U> implements Follower<U> {
  current: U | undefined;
  revision: bigint;
  status: FollowStatus = { state: "connecting", attempt: 0 };
  readonly closed: Promise<void>;

  private state: S | undefined;
  private stateRevision = 0n;
  /** Increments with every state change; consumers compare it with the version they last saw. */
  private version = 0;
  /** Version at which the last resync happened, and why. */
  private resyncs: { version: number; cause: ResyncCause }[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly stop = new AbortController();
  private stopped = false;
  private connected = false;

  constructor(
    private readonly watch: WatchClient,
    private readonly request: (atLeast: bigint) => Parameters<WatchClient["watch"]>[0],
    private readonly model: Model<S, U>,
    private readonly options: FollowOptions<U>,
  ) {
    this.revision = options.atLeastRevision ?? 0n;
    const outer = options.signal;
    if (outer) {
      if (outer.aborted) this.close();
      else outer.addEventListener("abort", () => this.close(), { once: true });
    }
    this.closed = this.run();
    // A rejection nobody awaits must not crash Node: iterators and `closed` report it.
    this.closed.catch(() => undefined);
  }

  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stop.abort();
    this.wake();
  }

  private setStatus(s: FollowStatus): void {
    this.status = s;
    if (this.options.onStatus) callback(this.options.onStatus, s);
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private async run(): Promise<void> {
    let attempt = 0;
    const fatal = this.options.fatalCodes ?? DEFAULT_FATAL;
    try {
      while (!this.stopped) {
        this.setStatus({ state: "connecting", attempt });
        try {
          await this.stream(() => {
            attempt = 0;
          });
          if (this.stopped) break;
          // The server ended the stream without an error: reconnect all the same.
          throw new ConnectError("the server ended the watch stream", Code.Unavailable);
        } catch (e) {
          if (this.stopped) break;
          const err = ConnectError.from(e);
          if (fatal.includes(err.code)) throw err;
          attempt++;
          const delayMs = backoffDelay(this.options.backoff, attempt);
          this.setStatus({ state: "reconnecting", attempt, delayMs, error: err });
          await sleep(delayMs, this.stop.signal);
        }
      }
      this.setStatus({ state: "closed" });
    } catch (e) {
      const err = ConnectError.from(e);
      this.stopped = true;
      this.setStatus({ state: "closed", error: err });
      throw err;
    } finally {
      this.wake();
    }
  }

  /** One stream, until it ends or fails. `live` is called once its full state has arrived. */
  private async stream(live: () => void): Promise<void> {
    const call = new AbortController();
    const onStop = () => call.abort();
    this.stop.signal.addEventListener("abort", onStop, { once: true });
    const idleMs = this.options.idleTimeoutMs ?? 35_000;
    let idle: ReturnType<typeof setTimeout> | undefined;
    let idleFired = false;
    const armIdle = () => {
      if (idleMs <= 0) return;
      if (idle !== undefined) clearTimeout(idle);
      idle = setTimeout(() => {
        idleFired = true;
        call.abort();
      }, idleMs);
    };
    this.model.reset();
    this.connected = false;
    try {
      armIdle();
      for await (const ev of this.watch.watch(this.request(this.revision), { signal: call.signal })) {
        armIdle();
        const step = this.model.apply(this.state, ev);
        const rev = eventRevision(ev);
        if (rev !== undefined && rev > this.revision) this.revision = rev;
        if (step === undefined) continue;
        if (step.revision > this.revision) this.revision = step.revision;
        const first = this.state === undefined;
        let kind: UpdateKind;
        let cause: ResyncCause | undefined;
        if (first) kind = "initial";
        else if (step.initial && !this.connected) {
          kind = "resync";
          cause = "reconnected";
        } else if (step.resync !== undefined) {
          kind = "resync";
          cause = step.resync;
        } else kind = "change";
        const prev = this.state;
        this.state = step.state;
        this.stateRevision = step.revision;
        this.version++;
        if (cause !== undefined) this.resyncs.push({ version: this.version, cause });
        if (this.resyncs.length > 64) this.resyncs.splice(0, this.resyncs.length - 64);
        this.current = this.model.update(prev, step.state, kind, cause, step.revision);
        if (step.initial || step.resync !== undefined) {
          if (!this.connected) {
            this.connected = true;
            live();
            this.setStatus({ state: "live", revision: step.revision });
          }
        }
        if (this.options.onUpdate) callback(this.options.onUpdate, this.current);
        this.wake();
      }
    } catch (e) {
      if (idleFired && !this.stopped) {
        throw new ConnectError(`no event for ${idleMs} ms (not even a checkpoint): reconnecting`, Code.DeadlineExceeded);
      }
      throw e;
    } finally {
      if (idle !== undefined) clearTimeout(idle);
      this.stop.signal.removeEventListener("abort", onStop);
      call.abort();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<U> {
    let seenVersion = 0;
    let seenState: S | undefined;
    return {
      next: async (): Promise<IteratorResult<U>> => {
        for (;;) {
          if (this.version > seenVersion && this.state !== undefined) {
            const since = seenVersion;
            const resync = [...this.resyncs].reverse().find((r) => r.version > since);
            const kind: UpdateKind = seenState === undefined ? "initial" : resync ? "resync" : "change";
            const u = this.model.update(seenState, this.state, kind, kind === "resync" ? resync?.cause : undefined, this.stateRevision);
            seenVersion = this.version;
            seenState = this.state;
            return { value: u, done: false };
          }
          if (this.stopped) {
            await this.closed; // rethrows a fatal error
            return { value: undefined, done: true };
          }
          await new Promise<void>((resolve) => {
            const w = () => {
              this.waiters.delete(w);
              resolve();
            };
            this.waiters.add(w);
          });
        }
      },
      return: async (): Promise<IteratorResult<U>> => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }
}

/**
 * Calls a caller's callback. What it throws is rethrown on its own (an
 * uncaught error, as from any event listener) instead of failing the stream,
 * which would make the follower reconnect over a bug in the page.
 */
function callback<T>(f: (v: T) => void, v: T): void {
  try {
    f(v);
  } catch (e) {
    setTimeout(() => {
      throw e;
    });
  }
}

/** Every event but an empty one carries the revision it is at. */
function eventRevision(ev: WatchEvent): bigint | undefined {
  return ev.event.case === undefined ? undefined : ev.event.value.revision;
}

function resyncCause(r: ResyncReason): ResyncCause | undefined {
  switch (r) {
    case ResyncReason.LAGGED:
      return "lagged";
    case ResyncReason.RELOADED:
      return "reloaded";
    default:
      return undefined;
  }
}

/** The delay before reconnect attempt `attempt` (1, 2, ...). */
export function backoffDelay(b: Backoff | undefined, attempt: number): number {
  const initial = b?.initialMs ?? 250;
  const max = b?.maxMs ?? 10_000;
  const mult = b?.multiplier ?? 2;
  const jitter = Math.min(1, Math.max(0, b?.jitter ?? 0.5));
  const base = Math.min(max, initial * Math.pow(mult, Math.max(0, attempt - 1)));
  return Math.round(base * (1 - jitter * Math.random()));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

// ---- privileges ----

interface PrivState {
  set: ReadonlySet<string>;
  snapshot: EffectivePrivileges;
  snapshotRevision: bigint;
}

function privilegesModel(): Model<PrivState, PrivilegesUpdate> {
  return {
    reset() {},
    apply(state, ev) {
      const e = ev.event;
      if (e.case === "snapshot") {
        const s = e.value;
        if (s.state.case !== "privileges") return undefined;
        return {
          state: { set: new Set(s.state.value.privileges), snapshot: s.state.value, snapshotRevision: s.revision },
          revision: s.revision,
          initial: s.reason === ResyncReason.INITIAL || s.reason === ResyncReason.UNSPECIFIED,
          resync: resyncCause(s.reason),
        };
      }
      if (e.case === "privilegesChanged" && state !== undefined) {
        const set = new Set(state.set);
        for (const p of e.value.lost) set.delete(p);
        for (const p of e.value.gained) set.add(p);
        return { state: { ...state, set }, revision: e.value.revision };
      }
      return undefined;
    },
    update(prev, next, kind, resync, revision) {
      const before = prev?.set ?? new Set<string>();
      const gained = [...next.set].filter((p) => !before.has(p));
      const lost = [...before].filter((p) => !next.set.has(p));
      const u: PrivilegesUpdate = {
        kind,
        revision,
        privileges: next.set,
        gained,
        lost,
        snapshot: next.snapshot,
        snapshotRevision: next.snapshotRevision,
      };
      if (resync !== undefined) u.resync = resync;
      return u;
    },
  };
}

/** Follows a person's effective privileges in an application. */
export function followPrivileges(
  watch: WatchClient,
  s: { tenant: string; person: string; application: string },
  options: FollowOptions<PrivilegesUpdate> = {},
): Follower<PrivilegesUpdate> {
  return new Engine(
    watch,
    (atLeast) => ({
      subscription: { case: "privileges", value: { tenant: s.tenant, person: s.person, application: s.application } },
      atLeastRevision: atLeast,
    }),
    privilegesModel(),
    options,
  );
}

// ---- visible objects ----

type ObjState = ReadonlyMap<string, VisibleObject>;

function sameObject(a: VisibleObject, b: VisibleObject): boolean {
  if (a.name !== b.name || a.folder !== b.folder) return false;
  const ka = Object.keys(a.properties);
  const kb = Object.keys(b.properties);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => b.properties[k] === a.properties[k]);
}

function objectsModel(type: string): Model<ObjState, VisibleObjectsUpdate> {
  // A large snapshot comes in parts of one revision; only the last is `complete`.
  let pending: { revision: bigint; objects: VisibleObject[] } | undefined;
  return {
    reset() {
      pending = undefined;
    },
    apply(state, ev) {
      const e = ev.event;
      if (e.case === "snapshot") {
        const s = e.value;
        if (s.state.case !== "objects" && s.state.case !== undefined) return undefined;
        if (pending === undefined || pending.revision !== s.revision) pending = { revision: s.revision, objects: [] };
        if (s.state.case === "objects") pending.objects.push(...s.state.value.objects);
        if (!s.complete) return undefined;
        const map = new Map<string, VisibleObject>();
        for (const o of pending.objects) map.set(o.id, o);
        pending = undefined;
        return {
          state: map,
          revision: s.revision,
          initial: s.reason === ResyncReason.INITIAL || s.reason === ResyncReason.UNSPECIFIED,
          resync: resyncCause(s.reason),
        };
      }
      if (e.case === "visibleObjectsChanged" && state !== undefined) {
        const map = new Map(state);
        for (const k of e.value.lost) map.delete(k.id);
        for (const o of e.value.gained) map.set(o.id, o);
        return { state: map, revision: e.value.revision };
      }
      return undefined;
    },
    update(prev, next, kind, resync, revision) {
      const gained: VisibleObject[] = [];
      const lost: ObjectKey[] = [];
      for (const [id, o] of next) {
        const p = prev?.get(id);
        if (p === undefined || !sameObject(p, o)) gained.push(o);
      }
      if (prev) for (const id of prev.keys()) if (!next.has(id)) lost.push(create(ObjectKeySchema, { type, id }));
      const u: VisibleObjectsUpdate = { kind, revision, objects: next, gained, lost };
      if (resync !== undefined) u.resync = resync;
      return u;
    },
  };
}

/** Follows the objects of a type a person may access. */
export function followVisibleObjects(
  watch: WatchClient,
  s: { tenant: string; person: string; type: string; folder?: string; application?: string; permission?: Permission },
  options: FollowOptions<VisibleObjectsUpdate> = {},
): Follower<VisibleObjectsUpdate> {
  return new Engine(
    watch,
    (atLeast) => ({
      subscription: {
        case: "visibleObjects",
        value: {
          tenant: s.tenant,
          person: s.person,
          type: s.type,
          folder: s.folder,
          application: s.application,
          permission: s.permission ?? 0,
        },
      },
      atLeastRevision: atLeast,
    }),
    objectsModel(s.type),
    options,
  );
}
