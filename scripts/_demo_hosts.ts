// `sudo deno task demo --hosts`: two namespaces standing for two hosts, joined only by an
// underlay veth; VMs on either host on one Ethernet segment, first through Linux bridges and a
// kernel VXLAN port, then through Open vSwitch netdev bridges and a userspace VXLAN tunnel.
// The VMs are namespaces with a veth into the host's bridge (their own kernel TCP/IP stack);
// then host A runs its own bridge service and an unmodified QEMU, as uid 65534 with our helper
// without capability, gets its tap from it (tests/_support/hosts_service.ts): the guest and VM B
// ping each other and move 4 MiB over TCP both ways. Everything is removed at the end.

import {
  BRIDGE,
  hostsMissing,
  ping,
  type SegmentKind,
  tcpTransfer,
  TwoHosts,
  UNDERLAY,
} from "./_hosts.ts";
import { run } from "./_netns.ts";

const KINDS: readonly [SegmentKind, string][] = [
  ["linux", "Linux bridges joined by a kernel VXLAN port (VNI 42)"],
  ["ovs-vxlan", "Open vSwitch netdev bridges joined by an OVS userspace VXLAN tunnel"],
];

/** Runs the two-host demo; returns true when every segment carried ping and 4 MiB intact. */
export async function hostsDemo(say: (s: string) => void): Promise<boolean> {
  const problems = [...new Set((await Promise.all(KINDS.map(([k]) => hostsMissing(k)))).flat())];
  if ((await run(["sh", "-c", "command -v qemu-system-x86_64"])).code !== 0) {
    problems.push("qemu-system-x86_64 is missing: apt-get install qemu-system-x86");
  }
  if ((await run(["sh", "-c", "command -v systemd-socket-activate"])).code !== 0) {
    problems.push("systemd-socket-activate is missing: apt-get install systemd");
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(`demo: ${p}`);
    return false;
  }
  const { buildGuest } = await import("../tests/_support/guest.ts");
  const { GUEST, serviceGuest } = await import("../tests/_support/hosts_service.ts");
  say("building the tiny QEMU guest (Debian kernel + busybox initramfs)...");
  const guest = await buildGuest();
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

    say(
      `\nQEMU on host A as uid 65534, our helper without capability; host A's bridge service ` +
        `(vm-bridged${kind === "linux" ? "" : " --ovsdb"}) gives the tap; guest ${GUEST}`,
    );
    try {
      const g = await serviceGuest(hosts, vmB, guest);
      const q = g.qemu;
      say(
        `guest booted in ${(q.bootMs / 1000).toFixed(1)} s; VM B -> guest ping ` +
          `${q.hostLossPercent}% loss (${q.hostRttsMs.join("/")} ms), guest -> VM B ping ` +
          `${q.guestPingOk ? "ok" : "FAILED"} (${q.guestRttsMs.join("/")} ms)`,
      );
      say(
        `4 MiB over TCP VM B -> guest -> VM B: SHA-256 matches both ways, ` +
          `${g.moved.toGuestMs} ms and ${g.moved.fromGuestMs} ms; ` +
          `taps left ${g.tapsLeft.length}, OVS ports left ${g.portsLeft.length}`,
      );
      ok &&= q.hostPingOk && q.guestPingOk && g.tapsLeft.length === 0 &&
        g.portsLeft.length === 0;
    } catch (e) {
      say(`the QEMU guest through the service FAILED: ${(e as Error).message}`);
      ok = false;
    }
  }
  return ok;
}
