// Issue 11, "two hosts, one segment", end to end: each host runs its own bridge service; on host
// A an unmodified QEMU as uid 65534 with our helper as a plain 0755 program (no capability) asks
// host A's service for its tap; a VM on host B (scripts/_hosts.ts) and the guest ping each other
// and move 4 MiB over TCP both ways (busybox nc in the guest, scripts/_tcp_probe.ts on B), the
// SHA-256 checked on both ends. Once over Linux bridges + kernel VXLAN, once over Open vSwitch
// netdev bridges + a userspace VXLAN tunnel. Needs root.

import assert from "node:assert/strict";
import { BRIDGE, type SegmentKind, TwoHosts } from "../../scripts/_hosts.ts";
import { ROOT } from "../../scripts/_netns.ts";
import { tempDirFor } from "../_support/deno_copy.ts";
import { buildGuest } from "../_support/guest.ts";
import { HELPER_FROM_SOURCE, type NetNs, rootTest, sandbox } from "../_support/ns.ts";
import { type GuestConsole, runQemuPing } from "../_support/qemu.ts";
import { noTapsLeft, startService } from "./_service.ts";

const VM_B = "10.0.99.2";
const GUEST = "10.0.99.20";
const BYTES = 4 << 20;
const PROBE = `${ROOT}/scripts/_tcp_probe.ts`;
const DENO = [Deno.execPath(), "run", "--no-prompt", "--allow-net"];

function gid(name: string): number {
  const line = Deno.readTextFileSync("/etc/group").split("\n").find((l) =>
    l.startsWith(`${name}:`)
  );
  assert.ok(line, `no group ${name}`);
  return Number(line.split(":")[2]);
}

async function output(argv: string[], ms: number): Promise<string> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(ms),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${argv.join(" ")} failed: ${text}${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

interface Moved {
  toGuestMs: number;
  fromGuestMs: number;
}

/** 4 MiB from host B's VM into the guest, then the same bytes from the guest back to B's VM. */
async function moveBothWays(c: GuestConsole, vmB: NetNs): Promise<Moved> {
  await c.send("vmb-tcp-recv 5001");
  assert.ok(await c.wait(/^VMB-TCP-LISTEN 5001\r?\n/m, 30_000), "the guest did not listen");
  const sent = JSON.parse(
    await output(vmB.exec([...DENO, PROBE, "client", GUEST, "5001", String(BYTES)]), 90_000),
  ) as { bytes: number; sha256: string; ms: number };
  const got = await c.wait(/^VMB-TCP-RECV bytes=\s*(\d+) sha256=([0-9a-f]{64})\r?\n/m, 60_000);
  assert.ok(got, "the guest reported no received bytes");
  assert.equal(Number(got[1]), BYTES, "bytes the guest received");
  assert.equal(got[2], sent.sha256, "SHA-256 of what host B's VM sent and the guest received");

  const argv = vmB.exec([...DENO, PROBE, "server", "5002"]);
  const server = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).spawn();
  const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  try {
    while (!out.includes("listening")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the TCP server on host B's VM did not start");
      out += value;
    }
    await c.send(`vmb-tcp-send ${VM_B} 5002`);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
  } finally {
    await server.status;
    await server.stderr.cancel().catch(() => {});
  }
  const back = JSON.parse(out.slice(out.indexOf("listening") + 9).trim()) as {
    bytes: number;
    sha256: string;
  };
  const sentBack = await c.wait(/^VMB-TCP-SENT rc=(\d+) t0=([\d.]+) t1=([\d.]+)\r?\n/m, 30_000);
  assert.ok(sentBack, "the guest did not report its send");
  assert.equal(sentBack[1], "0", "busybox nc's exit status in the guest");
  assert.equal(back.bytes, BYTES, "bytes host B's VM received from the guest");
  assert.equal(back.sha256, sent.sha256, "SHA-256 of what came back from the guest");
  return {
    toGuestMs: sent.ms,
    fromGuestMs: Math.round((Number(sentBack[3]) - Number(sentBack[2])) * 1000),
  };
}

async function twoHostsThroughTheService(kind: SegmentKind): Promise<void> {
  const guest = await buildGuest();
  await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
  await using hosts = await TwoHosts.create(kind);
  const vmB = await hosts.vm("b", VM_B);
  const hostA = hosts.hosts.a;
  await using svc = await startService(hostA, {
    etcQemu: { "bridge.conf": `allow ${BRIDGE}\n` },
    args: kind === "linux" ? [] : ["--ovsdb", hosts.ovs("a").dbSock, "--sweep-ms", "200"],
  });
  const sb = await sandbox(hostA, {
    user: { uid: 65534, gid: 65534, groups: [gid("kvm")] },
    setup: [
      `export DENO_DIR=${denoDir.path}`,
      "mount -t tmpfs -o mode=0755 vmb-run /run",
      "mkdir /run/vm-bridge",
      `mount --bind ${svc.dir} /run/vm-bridge`,
    ].join("\n"),
  });
  let moved: Moved | undefined;
  try {
    const r = await runQemuPing({
      netns: vmB.name,
      netdev: `bridge,id=n0,br=${BRIDGE},helper=${HELPER_FROM_SOURCE}`,
      prefix: sb.argv,
      guest,
      guestIp: `${GUEST}/24`,
      peerIp: VM_B,
      timeoutMs: 240_000,
      // OVS's userspace datapath reads the tap raw (AF_PACKET) and forwards TCP segments whose
      // checksum the guest left to the "NIC" (virtio-net's VIRTIO_NET_F_CSUM over the vnet
      // header): host B's kernel drops them all (ping passes; ICMP checksums are complete).
      // `csum=off` makes the guest compute its own, as `ethtool -K eth0 tx off` does for a
      // veth VM (scripts/_hosts.ts). The Linux bridge + kernel VXLAN path completes them.
      ...(kind === "linux" ? {} : { extraQemuArgs: ["-global", "virtio-net-pci.csum=off"] }),
      whileIdle: async (c) => {
        moved = await moveBothWays(c, vmB);
      },
    });
    const ctx =
      `\n--- ping from host B's VM ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}` +
      `\n--- service ---\n${svc.lines.join("\n")}`;
    console.log(
      `  ${kind}: boot ${(r.bootMs / 1000).toFixed(1)} s, host B VM -> guest ${
        r.hostRttsMs.join("/")
      } ms, guest -> host B VM ${
        r.guestRttsMs.join("/")
      } ms; 4 MiB B -> guest ${moved?.toGuestMs} ms, ` +
        `guest -> B ${moved?.fromGuestMs} ms`,
    );
    assert.ok(r.hostPingOk, `the VM on host B could not ping the guest on host A${ctx}`);
    assert.ok(r.guestPingOk, `the guest on host A could not ping the VM on host B${ctx}`);
    assert.ok(moved, "no TCP transfer");
    await svc.waitFor(
      new RegExp(
        `event=request uid=65534 gid=65534 pid=\\d+ comm=\\S+ op=open bridge=${BRIDGE} kind=${
          kind === "linux" ? "linux" : "ovs"
        } tap=tap\\d+ decision=allow`,
      ),
    );
  } finally {
    await sb.cleanup();
  }
  // (OVS's netdev datapath has tap devices of its own: ovs-netdev and one per bridge.)
  const taps = (await noTapsLeft(hostA)).filter((t) => /^tap\d+$/.test(t));
  assert.deepEqual(taps, [], "the tap went with QEMU");
  if (kind !== "linux") {
    using db = hosts.ovs("a").db();
    const end = Date.now() + 15_000;
    let left: string[] = [];
    do {
      left = (await db.listPorts(BRIDGE)).map((p) => p.name).filter((n) => /^tap\d+$/.test(n));
      if (left.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < end);
    assert.deepEqual(left, [], "the service removed the guest's OVS port");
  }
}

rootTest(
  "two hosts, each with its bridge service, Linux bridges + kernel VXLAN: QEMU on A (tap from the service) and a VM on B ping and move 4 MiB over TCP both ways",
  () => twoHostsThroughTheService("linux"),
);

rootTest(
  "two hosts, each with its bridge service, OVS + userspace VXLAN: QEMU on A (tap from the service) and a VM on B ping and move 4 MiB over TCP both ways",
  () => twoHostsThroughTheService("ovs-vxlan"),
);
