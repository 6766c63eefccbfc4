// The built package (dist/, by its own name through package.json "exports"),
// as an application imports it: one check and one follower over Node.js.
import assert from "node:assert/strict";
import { test } from "node:test";
import { TENANT, WCB_AGENT, WCB_APP, WEB_CALLBACK_PRIVILEGES } from "./support/demo.js";
import { AuthzdServer } from "./support/server.js";

test("@authzd/client and @authzd/client/node from dist/ answer a check and follow privileges", async () => {
  const { createAuthzdClient } = await import("@authzd/client");
  const { createNodeTransport } = await import("@authzd/client/node");
  const { WatchService } = await import("@authzd/client/gen/watch");
  assert.equal(WatchService.typeName, "authzd.v1.WatchService");
  const server = await AuthzdServer.start();
  try {
    const authz = createAuthzdClient(createNodeTransport({ baseUrl: server.url }));
    const d = await authz.checkPrivilege({ tenant: TENANT, person: "cb-monitor", application: "Callback", privilege: "Callback - Export Reports" });
    assert.deepEqual([d.allowed, d.reasonCode], [false, "MISSING_PRIVILEGE"]);
    for await (const u of authz.followPrivileges({ tenant: TENANT, person: WCB_AGENT, application: WCB_APP })) {
      assert.equal(u.kind, "initial");
      assert.deepEqual([...u.privileges], [...WEB_CALLBACK_PRIVILEGES]);
      break; // closes the follower
    }
  } finally {
    await server.stop();
  }
});
