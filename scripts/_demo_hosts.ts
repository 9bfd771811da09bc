// `sudo deno task demo --hosts`: two namespaces standing for two hosts, joined only by an
// underlay veth; VMs on either host on one Ethernet segment, first through Linux bridges and a
// kernel VXLAN port, then through Open vSwitch netdev bridges and a userspace VXLAN tunnel.
// The VMs are namespaces with a veth into the host's bridge (their own kernel TCP/IP stack).
// Everything is removed at the end.

import {
  BRIDGE,
  hostsMissing,
  ping,
  type SegmentKind,
  tcpTransfer,
  TwoHosts,
  UNDERLAY,
} from "./_hosts.ts";

const KINDS: readonly [SegmentKind, string][] = [
  ["linux", "Linux bridges joined by a kernel VXLAN port (VNI 42)"],
  ["ovs-vxlan", "Open vSwitch netdev bridges joined by an OVS userspace VXLAN tunnel"],
];

/** Runs the two-host demo; returns true when every segment carried ping and 4 MiB intact. */
export async function hostsDemo(say: (s: string) => void): Promise<boolean> {
  const problems = [...new Set((await Promise.all(KINDS.map(([k]) => hostsMissing(k)))).flat())];
  if (problems.length > 0) {
    for (const p of problems) console.error(`demo: ${p}`);
    return false;
  }
  let ok = true;
  for (const [kind, title] of KINDS) {
    say(`\n== two hosts, one segment: ${title}`);
    await using hosts = await TwoHosts.create(kind);
    say(
      `hosts ${hosts.hosts.a.name} (${UNDERLAY.a}) and ${hosts.hosts.b.name} (${UNDERLAY.b}), ` +
        `joined only by the veth "underlay"; bridge ${BRIDGE} on each`,
    );
    const vmA = await hosts.vm("a", "10.0.99.1");
    const vmB = await hosts.vm("b", "10.0.99.2");
    say(`VM A ${vmA.name} 10.0.99.1 on host A, VM B ${vmB.name} 10.0.99.2 on host B`);
    if (kind !== "linux") {
      using db = hosts.ovs("a").db();
      const ports = await db.listPorts(BRIDGE);
      say(
        `host A's ${BRIDGE} ports (read through our OVSDB client): ` +
          ports.map((p) =>
            `${p.name}${p.interfaceRows[0]?.type ? ` [${p.interfaceRows[0].type}]` : ""}`
          )
            .join(", "),
      );
    }
    const p = await ping(vmA, "10.0.99.2");
    say(`\n$ ping -c 3 10.0.99.2   (in VM A)\n${p.output.trimEnd()}`);
    const t = await tcpTransfer(vmA, vmB, "10.0.99.2", 4 << 20);
    const mbit = (t.sent * 8) / (t.ms / 1000) / 1e6;
    say(
      `\n4 MiB over TCP from VM A to VM B: ${t.received} bytes received, ` +
        `${t.intact ? "SHA-256 matches" : "CORRUPTED"}, ${t.ms} ms (${mbit.toFixed(0)} Mbit/s)`,
    );
    ok &&= p.ok && t.intact;
  }
  return ok;
}
