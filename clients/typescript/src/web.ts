// Browsers: gRPC-Web over fetch (authzd serves it on its gRPC port; a page
// from another origin needs the server's CORS setting for that origin).
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { bearerToken } from "./client.js";

/** Options of `createWebTransport`. */
export interface WebTransportOptions {
  /** The server, e.g. `http://127.0.0.1:50051` (no path). */
  baseUrl: string;
  /** Bearer token for every call (`--decision-token`). */
  token?: string;
  /** More interceptors, run after the token one. */
  interceptors?: Interceptor[];
}

/** A gRPC-Web transport to authzd for browsers. */
export function createWebTransport(options: WebTransportOptions): Transport {
  const interceptors = [...(options.token !== undefined ? [bearerToken(options.token)] : []), ...(options.interceptors ?? [])];
  return createGrpcWebTransport({ baseUrl: options.baseUrl, interceptors });
}
