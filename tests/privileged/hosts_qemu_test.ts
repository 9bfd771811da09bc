// A QEMU guest on host A and a VM on host B on one segment (scripts/_hosts.ts): through Linux
// bridges and kernel VXLAN with the tap made by our helper, and through Open vSwitch netdev
// bridges and a userspace VXLAN tunnel with the tap added through our OVSDB client. The guest
// and the VM on the other host ping each other. Needs root.
// (The bridge service will replace the root-made tap of the OVS case; the topology is the same.)

import assert from "node:assert/strict";
import { BRIDGE, TwoHosts } from "../../scripts/_hosts.ts";
import { buildGuest } from "../_support/guest.ts";
import { HELPER_FROM_SOURCE, rootTest, sandbox } from "../_support/ns.ts";
import { runQemuPing, type RunQemuPingResult } from "../_support/qemu.ts";

const VM_B = "10.0.99.2";
const GUEST = "10.0.99.20/24";

function check(r: RunQemuPingResult): void {
  const ctx =
    `\n--- ping from host B's VM ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}`;
  console.log(
    `  boot ${(r.bootMs / 1000).toFixed(1)} s, host B VM -> guest ${r.hostRttsMs.join("/")} ms, ` +
      `guest -> host B VM ${r.guestRttsMs.join("/")} ms`,
  );
  assert.ok(r.hostPingOk, `the VM on host B could not ping the guest on host A${ctx}`);
  assert.equal(r.hostLossPercent, 0, ctx);
  assert.ok(r.guestPingOk, `the guest on host A could not ping the VM on host B${ctx}`);
}

rootTest(
  "two hosts, Linux + kernel VXLAN: a QEMU guest on host A (our helper) and a VM on host B ping",
  async () => {
    const guest = await buildGuest();
    await using hosts = await TwoHosts.create("linux");
    const vmB = await hosts.vm("b", VM_B);
    const sb = await sandbox(hosts.hosts.a, { etcQemu: { "bridge.conf": `allow ${BRIDGE}\n` } });
    try {
      check(
        await runQemuPing({
          netns: vmB.name,
          netdev: `bridge,id=n0,br=${BRIDGE},helper=${HELPER_FROM_SOURCE}`,
          prefix: sb.argv,
          guest,
          guestIp: GUEST,
          peerIp: VM_B,
          timeoutMs: 150_000,
        }),
      );
    } finally {
      await sb.cleanup();
    }
    assert.deepEqual(await hosts.hosts.a.taps(), [], "a tap outlived QEMU");
  },
);

rootTest(
  "two hosts, OVS userspace VXLAN: a QEMU guest on host A (tap added through OVSDB) and a VM on host B ping",
  async () => {
    const guest = await buildGuest();
    await using hosts = await TwoHosts.create("ovs-vxlan");
    const vmB = await hosts.vm("b", VM_B);
    const hostA = hosts.hosts.a;
    await hostA.ip("tuntap", "add", "dev", "vmtap0", "mode", "tap");
    await hostA.ip("link", "set", "vmtap0", "up");
    try {
      using db = hosts.ovs("a").db();
      const added = await db.addPort({
        bridge: BRIDGE,
        ifname: "vmtap0",
        externalIds: new Map([["vm-bridge-uid", "0"], ["vm-bridge-pid", String(Deno.pid)]]),
        ifaceId: "root:guest-a",
      });
      await db.waitAttached("vmtap0", 10_000);
      check(
        await runQemuPing({
          netns: vmB.name,
          netdev: "tap,id=n0,ifname=vmtap0,script=no,downscript=no",
          prefix: hostA.exec([]),
          guest,
          guestIp: GUEST,
          peerIp: VM_B,
          timeoutMs: 150_000,
        }),
      );
      assert.equal(await db.removePort("vmtap0", { expectUuid: added.port }), true);
    } finally {
      await hostA.ip("link", "del", "vmtap0");
    }
  },
);
