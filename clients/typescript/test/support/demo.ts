// The demo tenant's facts the tests use (examples/acme.yaml; the same as
// tests/support/mod.rs on the Rust side).
import type { AuthzdClient } from "../../src/index.js";

export const TENANT = "acme";
export const WCB_APP = "WorkspaceWebCallback";
/** Holds every Web Callback privilege through role `web-callback-agent` of group `web-callback-agents`. */
export const WCB_AGENT = "wcb-agent-full";

/** seeds/001: the Web Callback privileges (the demo's "Web Callback Agent" role holds all). */
export const WEB_CALLBACK_PRIVILEGES = [
  "Web Callback - Can Cancel",
  "Web Callback - Can Use Web Callback Channel",
  "Web Callback - Can Decline",
  "Web Callback - Can Reject",
  "Web Callback - Can Reschedule",
  "Web Callback - Can Reschedule Before Call",
  "Web Callback - Can Reschedule On New Number",
  "Web Callback - Can Set Interaction Disposition",
  "Web Callback - Can Mark Done",
] as const;

/**
 * Writes the demo's "Web Callback Agent" role without the privileges
 * `without` (tests/support/mod.rs `web_callback_agent_role`), through
 * AdminService.Write. Returns the write's revision.
 */
export async function putWebCallbackAgentRole(client: AuthzdClient, without: readonly string[] = []): Promise<bigint> {
  const names = WEB_CALLBACK_PRIVILEGES.filter((p) => !without.includes(p));
  const r = await client.admin.write({
    tenant: TENANT,
    mutations: [
      {
        op: {
          case: "putRole",
          value: {
            id: "web-callback-agent",
            name: "Web Callback Agent",
            privileges: { [WCB_APP]: { names } },
            members: { groups: ["web-callback-agents"] },
          },
        },
      },
    ],
  });
  return r.revision;
}

/** Polls `cond` every 10 ms until it holds or `ms` pass. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 10));
  }
}
