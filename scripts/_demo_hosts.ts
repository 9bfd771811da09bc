// `sudo deno task demo --hosts`: two namespaces standing for two hosts, joined only by an
// underlay veth; VMs on either host on one Ethernet segment, first through Linux bridges and a
// kernel VXLAN port, then through Open vSwitch netdev bridges and a userspace VXLAN tunnel.
// First, quickly, VMs that are namespaces with a veth into the host's bridge (their own kernel
// TCP/IP stack); then each host runs its own bridge service and an unmodified QEMU, as uid 65534
// with our helper without capability, gets its tap from its host's service
// (tests/_support/hosts_service.ts): the two guests ping each other and move 4 MiB over TCP both
// ways. Everything is removed at the end.

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
  const { GUESTS, serviceGuests } = await import("../tests/_support/hosts_service.ts");
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
      `\nNow a QEMU guest on each host, each as uid 65534 with our helper without capability, ` +
        `each getting its tap from its own host's bridge service ` +
        `(vm-bridged${kind === "linux" ? "" : " --ovsdb <that host's database>"}): ` +
        `guest A ${GUESTS.a.ip} on host A, guest B ${GUESTS.b.ip} on host B, booting at once`,
    );
    try {
      const g = await serviceGuests(hosts, guest);
      const { a, b } = g.hosts;
      const open = (lines: string[]) =>
        lines.find((l) => / op=open /.test(l))?.replace(/^.*?(event=request)/, "$1") ?? "(none)";
      say(`host A's service: ${open(a.serviceLines)}`);
      say(`host B's service: ${open(b.serviceLines)}`);
      say(
        `guests booted in ${(a.bootMs / 1000).toFixed(1)} s (A) and ${
          (b.bootMs / 1000).toFixed(1)
        } s (B) under TCG`,
      );
      say(
        `guest A -> guest B ping: ${a.ping.lossPercent}% loss (${a.ping.rttsMs.join("/")} ms); ` +
          `guest B -> guest A ping: ${b.ping.lossPercent}% loss (${b.ping.rttsMs.join("/")} ms)`,
      );
      say(
        `4 MiB over TCP (busybox nc in both guests), SHA-256 the same at both ends: ` +
          `A -> B ${g.moved.aToB.wallMs} ms, B -> A ${g.moved.bToA.wallMs} ms ` +
          `(send command to the receiver's checksum; the sender's nc ran ` +
          `${g.moved.aToB.senderMs} and ${g.moved.bToA.senderMs} ms)`,
      );
      say(
        `afterwards: taps left A ${a.tapsLeft.length}, B ${b.tapsLeft.length}; ` +
          `OVS ports left A ${a.portsLeft.length}, B ${b.portsLeft.length}`,
      );
      ok &&= a.ping.lossPercent === 0 && b.ping.lossPercent === 0 &&
        [a, b].every((h) =>
          h.tapsLeft.length === 0 && h.portsLeft.length === 0 &&
          h.serviceLines.some((l) => / op=open .* decision=allow/.test(l))
        );
    } catch (e) {
      say(`the QEMU guests through the services FAILED: ${(e as Error).message}`);
      ok = false;
    }
  }
  return ok;
}
