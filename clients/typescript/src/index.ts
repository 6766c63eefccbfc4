// @authzd/client: a TypeScript client for authzd (browsers and Node.js).
// Transports live in their own entry points so a browser bundle never pulls
// in Node's http2: `@authzd/client/web` and `@authzd/client/node`.
export * from "./client.js";
export * from "./follow.js";
export { Reason } from "./gen/authzd/v1/decision_pb.js";
export { Permission } from "./gen/authzd/v1/types_pb.js";
export { ResyncReason } from "./gen/authzd/v1/watch_pb.js";
export type { EffectivePrivileges, ObjectKey, VisibleObject, Mutation } from "./gen/authzd/v1/types_pb.js";
