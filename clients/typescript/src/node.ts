// Node.js: gRPC over HTTP/2 (plaintext `http://` or TLS `https://`).
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcTransport, type GrpcTransportOptions } from "@connectrpc/connect-node";
import { bearerToken } from "./client.js";

/** Options of `createNodeTransport`. */
export interface NodeTransportOptions {
  /** The server, e.g. `http://127.0.0.1:50051` (HTTP/2 plaintext) or `https://...`. */
  baseUrl: string;
  /** Bearer token for every call (`--decision-token` or `--admin-token`). */
  token?: string;
  /** More interceptors, run after the token one. */
  interceptors?: Interceptor[];
  /**
   * HTTP/2 PING interval in milliseconds: finds a dead connection while a
   * watch stream waits (default 10,000; connect-node's own default is off).
   */
  pingIntervalMs?: number;
  /** Anything else connect-node's `createGrpcTransport` takes (TLS options in `nodeOptions`, ...). */
  grpc?: Partial<GrpcTransportOptions>;
}

/** A gRPC transport to authzd for Node.js. */
export function createNodeTransport(options: NodeTransportOptions): Transport {
  const interceptors = [...(options.token !== undefined ? [bearerToken(options.token)] : []), ...(options.interceptors ?? [])];
  return createGrpcTransport({
    pingIntervalMs: options.pingIntervalMs ?? 10_000,
    ...options.grpc,
    baseUrl: options.baseUrl,
    interceptors,
  });
}
