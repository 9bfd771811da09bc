// Run inside a container or namespace by a test, to ask for a tap as a client would, and print
// one JSON line: {"tap": NAME, "vnetHdr": BOOL} for the tap received, or {"error": MESSAGE}.
//
//   helper BRIDGE HELPER...  as QEMU does: the helper through net/run_helper.ts (a socketpair as
//                            fd 3, --use-vnet), which also checks the tap is a port of BRIDGE
//   service BRIDGE           as the library does: the bridge service at its default socket

import { runHelper } from "../../net/run_helper.ts";
import { tapInfo } from "../../net/tap.ts";
import { requestTap } from "../../service/client.ts";
import type { Fd } from "../../sys/fd.ts";

const [how, bridge, ...helper] = Deno.args;
if (bridge === undefined || !(how === "service" || (how === "helper" && helper.length > 0))) {
  throw new Error("usage: helper BRIDGE HELPER... | service BRIDGE");
}
try {
  using fd: Fd = how === "helper"
    ? await runHelper({ helper, bridge, vnetHdr: true, timeoutMs: 30_000 })
    : await requestTap(bridge, true, { timeoutMs: 30_000 });
  const info = tapInfo(fd.value);
  console.log(JSON.stringify({ tap: info.name, vnetHdr: info.vnetHdr }));
} catch (e) {
  console.log(JSON.stringify({ error: e instanceof Error ? e.message : String(e) }));
}
