// Two hosts, one Ethernet segment (scripts/_hosts.ts): two namespaces joined only by an underlay
// veth, their bridges joined by a kernel VXLAN port (Linux bridges) or an Open vSwitch userspace
// VXLAN or Geneve tunnel (netdev bridges). A VM on each host pings the other and moves 4 MiB
// over TCP, and a tap on host A (made by our helper, or added through OVSDB) answers a VM on
// host B. Needs root.

import assert from "node:assert/strict";
import { bridgeNetdev } from "../../mod.ts";
import { respond } from "../../examples/responder.ts";
import { BRIDGE, ping, type SegmentKind, tcpTransfer, TwoHosts } from "../../scripts/_hosts.ts";
import { HELPER_FROM_SOURCE, type NetNs, rootTest, sandbox } from "../_support/ns.ts";
import { tapMachine } from "../_support/ovs.ts";

const A = "10.0.99.1";
const B = "10.0.99.2";
const TAP_VM = "10.0.99.10";

/**
 * Bytes host A sent on the underlay veth, the only link between the hosts (kernel counters,
 * live; OVS writes its own statistics to the database only every few seconds).
 */
async function underlayTxBytes(hosts: TwoHosts): Promise<number> {
  const j = JSON.parse(await hosts.hosts.a.ip("-j", "-s", "link", "show", "underlay"));
  return Number(j[0].stats64.tx.bytes);
}

async function segmentTest(kind: SegmentKind): Promise<void> {
  await using hosts = await TwoHosts.create(kind);
  const vmA = await hosts.vm("a", A);
  const vmB = await hosts.vm("b", B);
  const before = await underlayTxBytes(hosts);

  const ab = await ping(vmA, B);
  assert.ok(ab.ok, ab.output);
  const ba = await ping(vmB, A);
  assert.ok(ba.ok, ba.output);

  const t = await tcpTransfer(vmA, vmB, B, 4 << 20);
  console.log(
    `${kind}: 4 MiB host A -> host B in ${t.ms} ms (${(32 / (t.ms / 1000)).toFixed(0)} Mbit/s)`,
  );
  assert.equal(t.received, 4 << 20);
  assert.ok(t.intact, "the bytes arrived, in order, unchanged");
  // The 4 MiB crossed the underlay, encapsulated (the VMs' subnet exists on no host).
  const sent = (await underlayTxBytes(hosts)) - before;
  assert.ok(sent > 4 << 20, `only ${sent} bytes on the underlay`);

  // A tap on host A answers the VM on host B.
  await tapOnHostA(hosts, async () => {
    const p = await ping(vmB, TAP_VM);
    assert.ok(p.ok, p.output);
  });
}

/** Puts a Deno-hosted machine (ARP + ping) at TAP_VM on a tap of host A's bridge. */
async function tapOnHostA(hosts: TwoHosts, check: () => Promise<void>): Promise<void> {
  const hostA: NetNs = hosts.hosts.a;
  if (hosts.kind === "linux") {
    // Our helper, run from source in a sandbox on host A, makes the tap and attaches it.
    const sb = await sandbox(hostA, { etcQemu: { "bridge.conf": `allow ${BRIDGE}\n` } });
    try {
      await using nic = await bridgeNetdev({
        br: BRIDGE,
        helper: [...sb.argv, HELPER_FROM_SOURCE],
      });
      const { stats } = respond(nic, { ip: TAP_VM, mac: "52:54:00:00:99:10" });
      await check();
      assert.ok(stats.pingReplies >= 3, `${stats.pingReplies} ping replies`);
    } finally {
      await sb.cleanup();
    }
    return;
  }
  // Open vSwitch: the tap becomes a port through our OVSDB client, as the service will do it.
  await hostA.ip("tuntap", "add", "dev", "vmtap0", "mode", "tap");
  await hostA.ip("link", "set", "vmtap0", "up");
  try {
    using db = hosts.ovs("a").db();
    await db.addPort({
      bridge: BRIDGE,
      ifname: "vmtap0",
      externalIds: new Map([["vm-bridge-uid", "0"], ["vm-bridge-pid", String(Deno.pid)]]),
    });
    await db.waitAttached("vmtap0", 10_000);
    {
      await using _vm = await tapMachine(hostA, "vmtap0", TAP_VM, "52:54:00:00:99:10");
      await check();
    }
    assert.equal(await db.removePort("vmtap0"), true);
  } finally {
    await hostA.ip("link", "del", "vmtap0");
  }
}

rootTest(
  "two hosts: Linux bridges joined by a kernel VXLAN port carry ping and 4 MiB of TCP",
  () => segmentTest("linux"),
);

rootTest(
  "two hosts: OVS netdev bridges joined by a userspace VXLAN tunnel carry ping and 4 MiB of TCP",
  () => segmentTest("ovs-vxlan"),
);

rootTest(
  "two hosts: OVS netdev bridges joined by a userspace Geneve tunnel carry ping and 4 MiB of TCP",
  () => segmentTest("ovs-geneve"),
);
