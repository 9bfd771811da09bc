// A QEMU guest on host A of scripts/_hosts.ts whose tap comes from host A's own bridge service,
// and a VM on host B: they ping each other and move 4 MiB over TCP both ways. Shared by
// tests/privileged/hosts_service_test.ts and `deno task demo --hosts`. Needs root.

import assert from "node:assert/strict";
import { BRIDGE, type SegmentKind, type TwoHosts } from "../../scripts/_hosts.ts";
import { ROOT } from "../../scripts/_netns.ts";
import { noTapsLeft, startService } from "../privileged/_service.ts";
import { tempDirFor } from "./deno_copy.ts";
import { buildGuest, type GuestImage } from "./guest.ts";
import { HELPER_FROM_SOURCE, type NetNs, sandbox } from "./ns.ts";
import { type GuestConsole, runQemuPing, type RunQemuPingResult } from "./qemu.ts";

/** Host B's VM. */
export const VM_B = "10.0.99.2";
/** The guest on host A. */
export const GUEST = "10.0.99.20";
const BYTES = 4 << 20;
const PROBE = `${ROOT}/scripts/_tcp_probe.ts`;
const DENO = [Deno.execPath(), "run", "--no-prompt", "--allow-net"];

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

/** Times of the two 4 MiB transfers. */
export interface Moved {
  /** Host B's VM into the guest: the client's connect to close, ms. */
  toGuestMs: number;
  /** The guest back to host B's VM: the guest's uptime around its nc, ms (10 ms steps). */
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

/** What {@linkcode serviceGuest} saw. */
export interface ServiceGuestRun {
  /** QEMU's run: boot time, both pings, serial console. */
  qemu: RunQemuPingResult;
  /** The TCP transfers (they throw on a mismatch, so present means intact). */
  moved: Moved;
  /** Host A's service's stderr lines (the audit). */
  serviceLines: string[];
  /** Guest taps (`tapN`) left on host A afterwards. */
  tapsLeft: string[];
  /** For OVS: `tapN` ports left on host A's bridge 15 s after QEMU ended. */
  portsLeft: string[];
}

/**
 * Starts host A's bridge service (for OVS with `--ovsdb` at host A's database), runs QEMU on host
 * A as uid 65534 with our helper as a plain 0755 program (no capability: it asks the service),
 * pings between the guest ({@linkcode GUEST}) and `vmB` ({@linkcode VM_B}), moves 4 MiB both ways,
 * stops everything it started and reports what is left.
 */
export async function serviceGuest(
  hosts: TwoHosts,
  vmB: NetNs,
  guest?: GuestImage,
): Promise<ServiceGuestRun> {
  const kind: SegmentKind = hosts.kind;
  const image = guest ?? await buildGuest();
  await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
  const hostA = hosts.hosts.a;
  await using svc = await startService(hostA, {
    etcQemu: { "bridge.conf": `allow ${BRIDGE}\n` },
    args: kind === "linux" ? [] : ["--ovsdb", hosts.ovs("a").dbSock, "--sweep-ms", "200"],
  });
  const sb = await sandbox(hostA, {
    user: { uid: 65534, gid: 65534 },
    setup: [
      `export DENO_DIR=${denoDir.path}`,
      "mount -t tmpfs -o mode=0755 vmb-run /run",
      "mkdir /run/vm-bridge",
      `mount --bind ${svc.dir} /run/vm-bridge`,
    ].join("\n"),
  });
  let moved: Moved | undefined;
  let qemu: RunQemuPingResult;
  try {
    qemu = await runQemuPing({
      netns: vmB.name,
      netdev: `bridge,id=n0,br=${BRIDGE},helper=${HELPER_FROM_SOURCE}`,
      prefix: sb.argv,
      guest: image,
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
  } finally {
    await sb.cleanup();
  }
  assert.ok(moved, "no TCP transfer");
  // (OVS's netdev datapath has tap devices of its own: ovs-netdev and one per bridge.)
  const tapsLeft = (await noTapsLeft(hostA)).filter((t) => /^tap\d+$/.test(t));
  let portsLeft: string[] = [];
  if (kind !== "linux") {
    using db = hosts.ovs("a").db();
    const end = Date.now() + 15_000;
    do {
      portsLeft = (await db.listPorts(BRIDGE)).map((p) => p.name).filter((n) => /^tap\d+$/.test(n));
      if (portsLeft.length === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    } while (Date.now() < end);
  }
  return { qemu, moved, serviceLines: [...svc.lines], tapsLeft, portsLeft };
}
