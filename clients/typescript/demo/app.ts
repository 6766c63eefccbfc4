// The agent desktop's script: follows the agent's Web Callback privileges
// through authzd (gRPC-Web) and enables each button whose privilege is
// effective. Settings come from the query string:
//   ?api=http://127.0.0.1:50051&tenant=acme&person=wcb-agent-full
import { Code } from "@connectrpc/connect";
import { createAuthzdClient, type FollowStatus, type PrivilegesUpdate } from "../src/index.js";
import { createWebTransport } from "../src/web.js";

const q = new URLSearchParams(location.search);
const api = q.get("api") ?? "http://127.0.0.1:50051";
const tenant = q.get("tenant") ?? "acme";
const person = q.get("person") ?? "wcb-agent-full";
const application = "WorkspaceWebCallback";

const $ = (id: string) => document.getElementById(id)!;
$("person").textContent = person;
$("tenant").textContent = tenant;

function log(line: string): void {
  const el = $("log");
  el.textContent = `${new Date().toISOString().slice(11, 23)} ${line}\n${el.textContent ?? ""}`.slice(0, 4000);
}

function render(u: PrivilegesUpdate): void {
  for (const b of document.querySelectorAll<HTMLButtonElement>("button[data-privilege]")) {
    b.disabled = !u.privileges.has(b.dataset.privilege!);
  }
  $("revision").textContent = String(u.revision);
  document.body.dataset.revision = String(u.revision);
  const parts = [u.gained.length ? `gained ${u.gained.join(", ")}` : "", u.lost.length ? `lost ${u.lost.join(", ")}` : ""].filter(Boolean);
  log(`${u.kind}${u.resync ? ` (${u.resync})` : ""} at revision ${u.revision}${parts.length ? ": " + parts.join("; ") : ""}`);
}

function status(s: FollowStatus): void {
  const el = $("status");
  el.dataset.state = s.state;
  el.textContent = s.state === "reconnecting" ? `reconnecting (attempt ${s.attempt})` : s.state;
  if (s.state === "reconnecting") log(`stream lost (${Code[s.error.code]}: ${s.error.rawMessage}); retry in ${s.delayMs} ms`);
  if (s.state === "closed" && s.error) log(`stopped: ${s.error.message}`);
}

const authz = createAuthzdClient(createWebTransport({ baseUrl: api }));
authz.followPrivileges(
  { tenant, person, application },
  { onUpdate: render, onStatus: status, backoff: { initialMs: 200, maxMs: 2000 } },
);
