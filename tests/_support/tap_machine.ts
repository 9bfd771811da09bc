// Run inside a namespace by tests/_support/ovs.ts: `TAP IP MAC` answers ARP and ping on the
// persistent tap TAP until SIGTERM; `--facts NAME...` prints kernelBridgeFacts() as JSON.

import { tapNetdev } from "../../mod.ts";
import { respond } from "../../examples/responder.ts";
import { kernelBridgeFacts } from "../../ovs/ovsdb.ts";

if (Deno.args[0] === "--facts") {
  const facts = Object.fromEntries(Deno.args.slice(1).map((n) => [n, kernelBridgeFacts(n)]));
  console.log(JSON.stringify(facts));
} else {
  const [ifname, ip, mac] = Deno.args as [string, string, string];
  await using nic = await tapNetdev({ ifname });
  const { done } = respond(nic, { ip, mac });
  Deno.addSignalListener("SIGTERM", () => void nic.close());
  console.log("ready");
  await done;
}
