// A tiny Deno-hosted "machine": it owns one IPv4 address on a Netdev and answers ARP requests
// and ICMP echo (ping). Enough to show a bridged NIC working end to end; run it with
// `deno run --allow-ffi examples/responder.ts [--br=br0] [--ip=10.0.77.2] [--helper=PATH]`.

import { bridgeNetdev } from "../mod.ts";
import type { Netdev } from "../mod.ts";

/** What the responder answers as. */
export interface ResponderOptions {
  /** Our IPv4 address, for example "10.0.77.2". */
  ip: string;
  /** Our MAC address, for example "52:54:00:00:77:02". */
  mac: string;
}

/** Counts of what the responder did. */
export interface ResponderStats {
  /** ARP requests for our address answered. */
  arpReplies: number;
  /** ICMP echo requests answered. */
  pingReplies: number;
}

const parseIp = (s: string) => Uint8Array.from(s.split(".").map(Number));
const parseMac = (s: string) => Uint8Array.from(s.split(":").map((h) => parseInt(h, 16)));

function checksum(b: Uint8Array, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const equal = (a: Uint8Array, off: number, b: Uint8Array) => b.every((v, i) => a[off + i] === v);

/**
 * Answers ARP and ping on `nic` until it is closed.
 *
 * @returns Live statistics and the promise of the read loop.
 */
export function respond(
  nic: Netdev,
  options: ResponderOptions,
): { stats: ResponderStats; done: Promise<void> } {
  const ip = parseIp(options.ip);
  const mac = parseMac(options.mac);
  const stats: ResponderStats = { arpReplies: 0, pingReplies: 0 };
  const done = nic.listen((f) => {
    if (f.length < 42) return;
    const type = (f[12]! << 8) | f[13]!;
    if (type === 0x0806 && f[21] === 1 && equal(f, 38, ip)) {
      // ARP request for our address: reply with our MAC.
      const r = new Uint8Array(42);
      r.set(f.subarray(6, 12), 0);
      r.set(mac, 6);
      r.set([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2], 12);
      r.set(mac, 22);
      r.set(ip, 28);
      r.set(f.subarray(22, 32), 32); // sender MAC and IP become the target
      nic.send(r);
      stats.arpReplies++;
    } else if (type === 0x0800 && equal(f, 30, ip) && f[23] === 1) {
      const ihl = (f[14]! & 0x0f) * 4;
      const icmp = 14 + ihl;
      if (f[icmp] !== 8) return; // only echo requests
      const total = (f[16]! << 8) | f[17]!;
      const r = f.slice(0, 14 + total);
      r.set(f.subarray(6, 12), 0);
      r.set(mac, 6);
      r.set(f.subarray(30, 34), 26); // source IP = our IP
      r.set(f.subarray(26, 30), 30); // destination = the sender
      r[22] = 64; // TTL
      r[24] = r[25] = 0;
      const ipsum = checksum(r, 14, icmp);
      r[24] = ipsum >> 8;
      r[25] = ipsum & 0xff;
      r[icmp] = 0; // echo reply
      r[icmp + 2] = r[icmp + 3] = 0;
      const sum = checksum(r, icmp, 14 + total);
      r[icmp + 2] = sum >> 8;
      r[icmp + 3] = sum & 0xff;
      nic.send(r);
      stats.pingReplies++;
    }
  });
  return { stats, done };
}

if (import.meta.main) {
  const arg = (k: string, d: string) =>
    Deno.args.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
  const helper = arg("helper", "/usr/local/libexec/qemu-bridge-helper");
  await using nic = await bridgeNetdev({ br: arg("br", "br0"), helper: helper.split(" ") });
  const ip = arg("ip", "10.0.77.2");
  console.log(`responder: ${ip} on ${nic.name} (MTU ${nic.mtu ?? "unknown"})`);
  const { done } = respond(nic, { ip, mac: arg("mac", "52:54:00:00:77:02") });
  Deno.addSignalListener("SIGINT", () => void nic.close());
  Deno.addSignalListener("SIGTERM", () => void nic.close());
  await done;
}
