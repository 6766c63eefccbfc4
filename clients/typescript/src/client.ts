// The authzd client: the three generated service clients over one transport,
// and typed helpers for what agent desktops do.
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { AdminService } from "./gen/authzd/v1/admin_pb.js";
import { DecisionService, Reason, type CheckResponse } from "./gen/authzd/v1/decision_pb.js";
import { Permission } from "./gen/authzd/v1/types_pb.js";
import { WatchService } from "./gen/authzd/v1/watch_pb.js";
import {
  followPrivileges,
  followVisibleObjects,
  type FollowOptions,
  type Follower,
  type PrivilegesUpdate,
  type VisibleObjectsUpdate,
} from "./follow.js";

/** The three services of authzd over one transport. */
export interface AuthzdClient {
  /** `authzd.v1.DecisionService`: Check, CheckBatch, ListVisible, EffectivePrivileges, Explain. */
  readonly decisions: Client<typeof DecisionService>;
  /** `authzd.v1.AdminService`: Write, Import, Export, ... */
  readonly admin: Client<typeof AdminService>;
  /** `authzd.v1.WatchService`: the raw change stream (prefer the `follow*` helpers). */
  readonly watch: Client<typeof WatchService>;

  /** May `person` use `privilege` of `application`? */
  checkPrivilege(q: PrivilegeQuestion, call?: CallOptions): Promise<Decision>;
  /** May `person` do `permission` on `object` (optionally in an application, holding a privilege, touching a property)? */
  checkPermission(q: PermissionQuestion, call?: CallOptions): Promise<Decision>;
  /** Follows the person's effective privileges in an application: the current set, then what was gained and lost. */
  followPrivileges(s: PrivilegesTarget, options?: FollowOptions<PrivilegesUpdate>): Follower<PrivilegesUpdate>;
  /** Follows the objects of a type the person may access: the current list, then what was gained and lost. */
  followVisibleObjects(s: VisibleObjectsTarget, options?: FollowOptions<VisibleObjectsUpdate>): Follower<VisibleObjectsUpdate>;
}

/** Per-call options of the check helpers. */
export interface CallOptions {
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Deadline of the call in milliseconds. */
  timeoutMs?: number;
}

/** A decision: whether it is allowed, why, and at which revision. */
export interface Decision {
  /** Whether every part of the question holds. */
  allowed: boolean;
  /** The first failing part, or why it was allowed. */
  reason: Reason;
  /** The reason's stable code as the server logs it (`ALLOWED`, `MISSING_PRIVILEGE`, ...). */
  reasonCode: string;
  /** The snapshot revision the decision was made at (pass it as `atLeastRevision` to read your writes). */
  revision: bigint;
}

/** A privilege question. */
export interface PrivilegeQuestion {
  tenant: string;
  person: string;
  /** Application (catalog name), e.g. `WorkspaceWebCallback`. */
  application: string;
  /** Privilege name, e.g. `Web Callback - Can Reschedule`. */
  privilege: string;
  /** Answer at a revision at least this one (0 or unset: any). */
  atLeastRevision?: bigint;
}

/** A permission name as in tenant files, or the enum value. */
export type PermissionName =
  | "Read"
  | "Create"
  | "Change"
  | "Execute"
  | "Delete"
  | "ReadPermissions"
  | "ChangePermissions";

/** A permission question on an object. */
export interface PermissionQuestion {
  tenant: string;
  person: string;
  permission: Permission | PermissionName;
  /** The object (`Folder`, `Person`, `AccessGroup`, `Role` or a configuration object type) and its id. */
  object: { type: string; id: string };
  /** Application context: its type guards, property guards and restricted mode apply. */
  application?: string;
  /** A privilege that must also be effective (needs `application`). */
  privilege?: string;
  /** A property touched: property guards apply. */
  property?: string;
  atLeastRevision?: bigint;
}

/** What `followPrivileges` follows. */
export interface PrivilegesTarget {
  tenant: string;
  person: string;
  application: string;
}

/** What `followVisibleObjects` follows. */
export interface VisibleObjectsTarget {
  tenant: string;
  person: string;
  /** Object type (`Metric`, `Script`, ...). */
  type: string;
  /** Only objects under this folder id, recursively. */
  folder?: string;
  /** Application context: its guards and restricted mode apply. */
  application?: string;
  /** Permission needed on each object (default Read). */
  permission?: Permission | PermissionName;
}

const PERMISSIONS: Record<PermissionName, Permission> = {
  Read: Permission.READ,
  Create: Permission.CREATE,
  Change: Permission.CHANGE,
  Execute: Permission.EXECUTE,
  Delete: Permission.DELETE,
  ReadPermissions: Permission.READ_PERMISSIONS,
  ChangePermissions: Permission.CHANGE_PERMISSIONS,
};

/** The enum value of a permission given by name or value. */
export function toPermission(p: Permission | PermissionName | undefined): Permission {
  if (p === undefined) return Permission.UNSPECIFIED;
  if (typeof p === "number") return p;
  const v = PERMISSIONS[p];
  if (v === undefined) throw new TypeError(`unknown permission ${JSON.stringify(p)}`);
  return v;
}

/** `REASON_MISSING_PRIVILEGE` → `MISSING_PRIVILEGE`. */
export function reasonCode(r: Reason): string {
  return Reason[r] ?? `REASON_${r}`;
}

function decision(r: Pick<CheckResponse, "allowed" | "reason" | "revision">): Decision {
  return { allowed: r.allowed, reason: r.reason, reasonCode: reasonCode(r.reason), revision: r.revision };
}

/**
 * An interceptor that sends `authorization: Bearer <token>` (the server's
 * `--decision-token` or `--admin-token`); the transport factories take
 * `token` and install it.
 */
export function bearerToken(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/**
 * Makes a client over a transport: `createWebTransport` (browsers, gRPC-Web)
 * from `@authzd/client/web`, or `createNodeTransport` (Node.js, gRPC over
 * HTTP/2) from `@authzd/client/node`.
 */
export function createAuthzdClient(transport: Transport): AuthzdClient {
  const t = transport;
  const decisions = createClient(DecisionService, t);
  const admin = createClient(AdminService, t);
  const watch = createClient(WatchService, t);
  return {
    decisions,
    admin,
    watch,
    async checkPrivilege(q, call) {
      const r = await decisions.check(
        {
          tenant: q.tenant,
          person: q.person,
          application: q.application,
          privilege: q.privilege,
          atLeastRevision: q.atLeastRevision ?? 0n,
        },
        call,
      );
      return decision(r);
    },
    async checkPermission(q, call) {
      const r = await decisions.check(
        {
          tenant: q.tenant,
          person: q.person,
          permission: toPermission(q.permission),
          object: { type: q.object.type, id: q.object.id },
          application: q.application,
          privilege: q.privilege,
          property: q.property,
          atLeastRevision: q.atLeastRevision ?? 0n,
        },
        call,
      );
      return decision(r);
    },
    followPrivileges(s, options) {
      return followPrivileges(watch, s, options);
    },
    followVisibleObjects(s, options) {
      return followVisibleObjects(watch, { ...s, permission: toPermission(s.permission) }, options);
    },
  };
}

// Re-exported so callers can build messages without importing the generated files.
export { create };
