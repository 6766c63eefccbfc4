// A real authzd server for the tests: the binary built by cargo, started as a
// child process on a fresh SQLite store, on 127.0.0.1 ports of its own.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (clients/typescript/test/support → ../../../..). */
export const repoRoot = resolve(here, "../../../..");

/** The authzd binary: `AUTHZD_BIN`, else `$CARGO_TARGET_DIR/debug/authzd`, else `target/debug/authzd`. */
export function authzdBin(): string {
  const bin =
    process.env.AUTHZD_BIN ??
    join(process.env.CARGO_TARGET_DIR ? resolve(repoRoot, process.env.CARGO_TARGET_DIR) : join(repoRoot, "target"), "debug", "authzd");
  if (!existsSync(bin)) {
    throw new Error(
      `authzd binary not found at ${bin}: build it first (cargo build, from ${repoRoot}) or set AUTHZD_BIN. ` +
        "scripts/test-clients.sh builds it.",
    );
  }
  return bin;
}

/** A free TCP port on 127.0.0.1 (bound then released). */
export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      if (a === null || typeof a === "string") return fail(new Error("no port"));
      const port = a.port;
      s.close(() => ok(port));
    });
  });
}

export interface ServerOptions {
  /** Directory of the store (a fresh temporary one when unset). */
  dir?: string;
  /** gRPC port (a free one when unset). */
  port?: number;
  /** Extra `serve` arguments (for example the CORS origin). */
  args?: string[];
  /** `--checkpoint-interval-ms` (default 1000, so idle detection can be tested quickly). */
  checkpointMs?: number;
  /** Extra environment variables of the process (for example `AUTHZD_EXPLORER`). */
  env?: Record<string, string>;
}

/** One authzd process; `restart()` starts it again on the same store and ports. */
export class AuthzdServer {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  readonly dir: string;
  readonly port: number;
  readonly metricsPort: number;
  readonly args: string[];
  readonly logPath: string;
  readonly env: Record<string, string>;
  private starts = 0;

  private constructor(dir: string, port: number, metricsPort: number, args: string[], env: Record<string, string>) {
    this.dir = dir;
    this.port = port;
    this.metricsPort = metricsPort;
    this.args = args;
    this.env = env;
    this.logPath = join(dir, "authzd.log");
  }

  /** Starts `authzd serve --demo` on a fresh (or the given) store and waits for `/readyz`. */
  static async start(o: ServerOptions = {}): Promise<AuthzdServer> {
    const dir = o.dir ?? mkdtempSync(join(tmpdir(), "authzd-ts-"));
    const port = o.port ?? (await freePort());
    const metricsPort = await freePort();
    const args = [...(o.args ?? []), "--checkpoint-interval-ms", String(o.checkpointMs ?? 1000)];
    const s = new AuthzdServer(dir, port, metricsPort, args, o.env ?? {});
    await s.spawn();
    return s;
  }

  /** The gRPC (and gRPC-Web) address, `http://127.0.0.1:<port>`. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get storeUrl(): string {
    return `sqlite://${join(this.dir, "authzd.db")}`;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  private async spawn(): Promise<void> {
    this.starts++;
    const log = openSync(this.logPath, "a");
    const child = spawn(
      authzdBin(),
      [
        "serve",
        "--demo",
        "--store",
        this.storeUrl,
        "--listen",
        `127.0.0.1:${this.port}`,
        "--metrics-listen",
        `127.0.0.1:${this.metricsPort}`,
        "--shutdown-grace-ms",
        "1000",
        ...this.args,
      ],
      { stdio: ["ignore", log, log], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", ...this.env } },
    );
    closeSync(log);
    this.child = child;
    this.exited = new Promise((ok) => child.once("exit", () => ok()));
    child.once("exit", () => {
      if (this.child === child) this.child = undefined;
    });
    await this.waitReady(20_000);
  }

  /** Polls `/readyz` on the metrics port until 200 (snapshot loaded, store reachable). */
  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline) {
      if (this.child === undefined) throw new Error(`authzd exited during start-up:\n${this.log()}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.metricsPort}/readyz`);
        if (r.status === 200) return;
        last = `${r.status} ${await r.text()}`;
      } catch (e) {
        last = String(e);
      }
      await new Promise((ok) => setTimeout(ok, 50));
    }
    throw new Error(`authzd not ready after ${timeoutMs} ms (${last}):\n${this.log()}`);
  }

  /** The server's log so far (all starts). */
  log(): string {
    try {
      return readFileSync(this.logPath, "utf8");
    } catch {
      return "";
    }
  }

  /** Stops the process: SIGTERM (graceful: watch streams end with UNAVAILABLE) or SIGKILL (a crash). */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const c = this.child;
    if (c === undefined) return;
    c.kill(signal);
    const killer = setTimeout(() => c.kill("SIGKILL"), 10_000);
    await this.exited;
    clearTimeout(killer);
  }

  /** Starts the process again on the same store and ports. */
  async restart(): Promise<void> {
    if (this.child !== undefined) throw new Error("restart: still running");
    await this.spawn();
  }
}
