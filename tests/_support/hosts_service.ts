// A QEMU guest on each host of scripts/_hosts.ts, each guest's tap from its own host's bridge
// service: the two guests ping each other and move 4 MiB over TCP both ways (busybox nc in both
// guests, the SHA-256 checked at both ends). Shared by tests/privileged/hosts_service_test.ts and
// `deno task demo --hosts`. Needs root.

import { BRIDGE, type Host, type SegmentKind, type TwoHosts } from "../../scripts/_hosts.ts";
import { clientSetup, type ServiceProc, startService } from "../privileged/_service.ts";
import { tempDirFor } from "./deno_copy.ts";
import { buildGuest, type GuestImage } from "./guest.ts";
import { HELPER_FROM_SOURCE, sandbox } from "./ns.ts";
import { parsePingLoss, parsePingRtts, QemuGuest, type QemuGuestOptions } from "./qemu.ts";

/** The guests' addresses (one segment, 10.0.99.0/24) and MACs, by host. */
export const GUESTS: Readonly<Record<Host, { ip: string; mac: string }>> = {
  a: { ip: "10.0.99.20", mac: "52:54:00:99:00:20" },
  b: { ip: "10.0.99.21", mac: "52:54:00:99:00:21" },
};
const BYTES = 4 << 20;
/** Bounds the whole run; the guests' own watchdogs power them off 30 s after it. */
const TIMEOUT_MS = 240_000;

/** One guest's pings to the other guest. */
export interface GuestPing {
  /** Packet loss reported by busybox ping (100 if unparsable). */
  lossPercent: number;
  /** Per-reply RTTs, ms. */
  rttsMs: number[];
  /** busybox ping's output. */
  output: string;
}

/** One 4 MiB transfer between the guests (it throws on a mismatch, so present means intact). */
export interface GuestTransfer {
  /** The sender's busybox nc, connect to close, from the guest's uptime (10 ms steps), ms. */
  senderMs: number;
  /** From the send command on the sender's console to the receiver's byte count and SHA-256, ms. */
  wallMs: number;
}

/** What one host saw. */
export interface HostRun {
  /** ms from spawning QEMU to the guest's `VMB-READY` (both boot at once). */
  bootMs: number;
  /** This host's guest pinging the other host's guest. */
  ping: GuestPing;
  /** The host's service's stderr lines (the audit). */
  serviceLines: string[];
  /** Guest taps (`tapN`) on the host while its guest ran. */
  tapsDuring: string[];
  /** For OVS: `tapN` ports on the host's bridge while its guest ran. */
  portsDuring: string[];
  /** Guest taps (`tapN`) left on the host after QEMU ended. */
  tapsLeft: string[];
  /** For OVS: `tapN` ports left on the host's bridge 15 s after QEMU ended. */
  portsLeft: string[];
}

/** What {@linkcode serviceGuests} saw. */
export interface ServiceGuestsRun {
  /** Per host. */
  hosts: Record<Host, HostRun>;
  /** 4 MiB from guest A to guest B, and the same bytes from B back to A. */
  moved: { aToB: GuestTransfer; bToA: GuestTransfer };
}

/** Guest taps (`tapN`: OVS's netdev datapath has tap devices of its own) on a host. */
async function guestTaps(hosts: TwoHosts, h: Host): Promise<string[]> {
  return (await hosts.hosts[h].taps()).filter((t) => /^tap\d+$/.test(t));
}

/** `tapN` ports on a host's OVS bridge ([] for Linux bridges). */
async function guestPorts(hosts: TwoHosts, h: Host): Promise<string[]> {
  if (hosts.kind === "linux") return [];
  using db = hosts.ovs(h).db();
  return (await db.listPorts(BRIDGE)).map((p) => p.name).filter((n) => /^tap\d+$/.test(n));
}

/** Polls `f` until it returns [] or `ms` pass; returns its last answer. */
async function untilEmpty(f: () => Promise<string[]>, ms: number): Promise<string[]> {
  const end = Date.now() + ms;
  let left = await f();
  while (left.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    left = await f();
  }
  return left;
}

/** A failure with both guests' consoles and both services' lines. */
class TwoGuestsError extends Error {
  constructor(
    message: string,
    guests: Partial<Record<Host, QemuGuest>>,
    services: Partial<Record<Host, ServiceProc>>,
  ) {
    const tail = (s: string) => s.length > 6000 ? `[...]\n${s.slice(-6000)}` : s;
    const parts = [message];
    for (const [h, g] of Object.entries(guests)) {
      parts.push(`--- guest ${h}: serial ---\n${tail(g.serial)}`);
      parts.push(`--- guest ${h}: QEMU stderr ---\n${tail(g.stderr)}`);
    }
    for (const [h, svc] of Object.entries(services)) {
      parts.push(`--- host ${h}'s service ---\n${svc.lines.join("\n")}`);
    }
    super(parts.join("\n"));
    this.name = "TwoGuestsError";
  }
}

/**
 * Starts a bridge service on each host (for OVS with `--ovsdb` at that host's database), boots a
 * QEMU guest on each at the same time ({@linkcode GUESTS}), each as uid 65534 with our helper as
 * a plain 0755 program (no capability: it asks its host's service), has each guest ping the
 * other, moves 4 MiB from guest A to guest B and back (busybox nc; SHA-256 compared at both
 * ends, a mismatch throws), stops everything it started and reports what is left.
 */
export async function serviceGuests(
  hosts: TwoHosts,
  image?: GuestImage,
): Promise<ServiceGuestsRun> {
  const kind: SegmentKind = hosts.kind;
  const guest = image ?? await buildGuest();
  const deadline = Date.now() + TIMEOUT_MS;
  const services: Partial<Record<Host, ServiceProc>> = {};
  const guests: Partial<Record<Host, QemuGuest>> = {};
  const sandboxes: (() => Promise<void>)[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  const fail = (msg: string) => new TwoGuestsError(msg, guests, services);
  try {
    for (const h of ["a", "b"] as const) {
      const denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
      cleanups.push(async () => await denoDir[Symbol.asyncDispose]());
      const svc = await startService(hosts.hosts[h], {
        etcQemu: { "bridge.conf": `allow ${BRIDGE}\n` },
        args: kind === "linux" ? [] : ["--ovsdb", hosts.ovs(h).dbSock, "--sweep-ms", "200"],
      });
      services[h] = svc;
      cleanups.push(async () => await svc[Symbol.asyncDispose]());
      const sb = await sandbox(hosts.hosts[h], {
        user: { uid: 65534, gid: 65534 },
        setup: clientSetup(svc, denoDir.path),
      });
      sandboxes.push(sb.cleanup);
      const opts: QemuGuestOptions = {
        netdev: `bridge,id=n0,br=${BRIDGE},helper=${HELPER_FROM_SOURCE}`,
        prefix: sb.argv,
        guest,
        guestIp: `${GUESTS[h].ip}/24`,
        mac: GUESTS[h].mac,
        // The guests ping each other from their consoles once both are up.
        peerIp: "none",
        timeoutMs: TIMEOUT_MS,
        // OVS's userspace datapath reads the tap raw (AF_PACKET) and forwards TCP segments whose
        // checksum the guest left to the "NIC" (virtio-net's VIRTIO_NET_F_CSUM over the vnet
        // header): the other guest's kernel drops them all (ping passes; ICMP checksums are
        // complete). `csum=off` makes the guest compute its own, as `ethtool -K eth0 tx off`
        // does for a veth VM (scripts/_hosts.ts). The Linux bridge + kernel VXLAN path
        // completes them.
        ...(kind === "linux" ? {} : { extraQemuArgs: ["-global", "virtio-net-pci.csum=off"] }),
      };
      // Returns once QEMU is spawned: the two guests boot at the same time.
      guests[h] = await QemuGuest.start(opts);
    }
    const a = guests.a!;
    const b = guests.b!;
    const [readyA, readyB] = await Promise.all([a.ready(deadline), b.ready(deadline)]).catch(
      (e) => {
        throw fail(`a guest did not boot: ${(e as Error).message.split("\n")[0]}`);
      },
    );
    const idle = /^VMB-IDLE\r?\n/m;
    for (const [h, g] of [["a", a], ["b", b]] as const) {
      if (!(await g.wait(idle, Math.min(deadline, Date.now() + 10_000)))) {
        throw fail(`guest ${h} did not reach VMB-IDLE`);
      }
    }
    const during = {
      a: { taps: await guestTaps(hosts, "a"), ports: await guestPorts(hosts, "a") },
      b: { taps: await guestTaps(hosts, "b"), ports: await guestPorts(hosts, "b") },
    };

    // Each pings the other, both at once.
    const pingFrom = async (g: QemuGuest, to: string): Promise<GuestPing> => {
      const from = g.serial.length;
      await g.send(`vmb-ping ${to} 3`);
      const m = await g.wait(
        new RegExp(`^VMB-PING-DONE ${to.replaceAll(".", "\\.")} rc=\\d+\\r?\\n`, "m"),
        Math.min(deadline, Date.now() + 30_000),
        from,
      );
      if (!m) throw fail(`no VMB-PING-DONE from the guest pinging ${to}`);
      const output = g.serial.slice(from, from + m.index!);
      return { lossPercent: parsePingLoss(output), rttsMs: parsePingRtts(output), output };
    };
    const [pingA, pingB] = await Promise.all([
      pingFrom(a, GUESTS.b.ip),
      pingFrom(b, GUESTS.a.ip),
    ]);

    // 4 MiB of random bytes made in guest A, to B, and from B back to A.
    const made = await (async () => {
      const from = a.serial.length;
      await a.send(`vmb-tcp-make ${BYTES}`);
      const m = await a.wait(
        /^VMB-TCP-MADE bytes=\s*(\d+) sha256=([0-9a-f]{64})\r?\n/m,
        Math.min(deadline, Date.now() + 60_000),
        from,
      );
      if (!m || Number(m[1]) !== BYTES) throw fail(`guest A did not make ${BYTES} bytes`);
      return m[2]!;
    })();
    const transfer = async (
      src: QemuGuest,
      dst: QemuGuest,
      dstIp: string,
      port: number,
      what: string,
    ): Promise<GuestTransfer> => {
      const dstFrom = dst.serial.length;
      const srcFrom = src.serial.length;
      await dst.send(`vmb-tcp-recv ${port}`);
      const ms = (n: number) => Math.min(deadline, Date.now() + n);
      if (
        !(await dst.wait(new RegExp(`^VMB-TCP-LISTEN ${port}\\r?\\n`, "m"), ms(30_000), dstFrom))
      ) {
        throw fail(`${what}: the receiver did not listen`);
      }
      const t0 = Date.now();
      await src.send(`vmb-tcp-send ${dstIp} ${port}`);
      const got = await dst.wait(
        /^VMB-TCP-RECV bytes=\s*(\d+) sha256=([0-9a-f]{64})\r?\n/m,
        ms(90_000),
        dstFrom,
      );
      const wallMs = Date.now() - t0;
      if (!got) throw fail(`${what}: the receiver reported no bytes`);
      const sent = await src.wait(
        /^VMB-TCP-SENT rc=(\d+) t0=([\d.]+) t1=([\d.]+)\r?\n/m,
        ms(30_000),
        srcFrom,
      );
      if (!sent) throw fail(`${what}: the sender did not report its send`);
      if (sent[1] !== "0") throw fail(`${what}: busybox nc in the sender exited ${sent[1]}`);
      if (Number(got[1]) !== BYTES) throw fail(`${what}: ${got[1]} bytes received, not ${BYTES}`);
      if (got[2] !== made) {
        throw fail(`${what}: SHA-256 ${got[2]} received, ${made} made in guest A`);
      }
      return { senderMs: Math.round((Number(sent[3]) - Number(sent[2])) * 1000), wallMs };
    };
    const aToB = await transfer(a, b, GUESTS.b.ip, 5001, "guest A -> guest B");
    const bToA = await transfer(b, a, GUESTS.a.ip, 5002, "guest B -> guest A");
    const result = {
      hosts: {
        a: {
          bootMs: readyA.bootMs,
          ping: pingA,
          tapsDuring: during.a.taps,
          portsDuring: during.a.ports,
        },
        b: {
          bootMs: readyB.bootMs,
          ping: pingB,
          tapsDuring: during.b.taps,
          portsDuring: during.b.ports,
        },
      },
      moved: { aToB, bToA },
    };
    await Promise.all([a.stop(), b.stop()]);
    for (const c of sandboxes.splice(0)) await c();
    // What is left, while the services still run: each removes its OVS port when its tap goes
    // (the kernel removes a tap asynchronously once its last fd is closed).
    const left = async (h: Host) => ({
      tapsLeft: await untilEmpty(() => guestTaps(hosts, h), 5000),
      portsLeft: await untilEmpty(() => guestPorts(hosts, h), 15_000),
    });
    const [leftA, leftB] = [await left("a"), await left("b")];
    return {
      moved: result.moved,
      hosts: {
        a: { ...result.hosts.a, ...leftA, serviceLines: [...services.a!.lines] },
        b: { ...result.hosts.b, ...leftB, serviceLines: [...services.b!.lines] },
      },
    };
  } finally {
    await Promise.all(Object.values(guests).map((g) => g.stop()));
    // The sandboxes, then the services, then the DENO_DIRs.
    for (const c of [...sandboxes, ...cleanups.reverse()]) await c().catch(() => {});
  }
}
