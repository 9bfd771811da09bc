// Issue 11, "two hosts, one segment", end to end (tests/_support/hosts_service.ts): host A runs
// its own bridge service; an unmodified QEMU as uid 65534 with our helper as a plain 0755 program
// (no capability) asks it for its tap; the guest and a VM on host B (scripts/_hosts.ts) ping each
// other and move 4 MiB over TCP both ways (busybox nc in the guest, scripts/_tcp_probe.ts on B),
// the SHA-256 checked at both ends. Once over Linux bridges + kernel VXLAN, once over Open vSwitch
// netdev bridges + a userspace VXLAN tunnel. Needs root.

import assert from "node:assert/strict";
import { BRIDGE, type SegmentKind, TwoHosts } from "../../scripts/_hosts.ts";
import { serviceGuest, VM_B } from "../_support/hosts_service.ts";
import { rootTest } from "../_support/ns.ts";

async function twoHostsThroughTheService(kind: SegmentKind): Promise<void> {
  await using hosts = await TwoHosts.create(kind);
  const vmB = await hosts.vm("b", VM_B);
  const { qemu: r, moved, serviceLines, tapsLeft, portsLeft } = await serviceGuest(hosts, vmB);
  const ctx =
    `\n--- ping from host B's VM ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}` +
    `\n--- service ---\n${serviceLines.join("\n")}`;
  console.log(
    `  ${kind}: boot ${(r.bootMs / 1000).toFixed(1)} s, host B VM -> guest ${
      r.hostRttsMs.join("/")
    } ms, guest -> host B VM ${
      r.guestRttsMs.join("/")
    } ms; 4 MiB B -> guest ${moved.toGuestMs} ms, ` +
      `guest -> B ${moved.fromGuestMs} ms`,
  );
  assert.ok(r.hostPingOk, `the VM on host B could not ping the guest on host A${ctx}`);
  assert.ok(r.guestPingOk, `the guest on host A could not ping the VM on host B${ctx}`);
  const audit = new RegExp(
    `event=request uid=65534 gid=65534 pid=\\d+ comm=\\S+ op=open bridge=${BRIDGE} kind=${
      kind === "linux" ? "linux" : "ovs"
    } tap=tap\\d+ decision=allow`,
  );
  assert.ok(serviceLines.some((l) => audit.test(l)), `the service did not give the tap${ctx}`);
  assert.deepEqual(tapsLeft, [], "the tap went with QEMU");
  assert.deepEqual(portsLeft, [], "the service removed the guest's OVS port");
}

rootTest(
  "two hosts, host A's bridge service, Linux bridges + kernel VXLAN: QEMU on A (tap from the service) and a VM on B ping and move 4 MiB over TCP both ways",
  () => twoHostsThroughTheService("linux"),
);

rootTest(
  "two hosts, host A's bridge service, OVS + userspace VXLAN: QEMU on A (tap from the service) and a VM on B ping and move 4 MiB over TCP both ways",
  () => twoHostsThroughTheService("ovs-vxlan"),
);
