// C struct layouts the network code needs (struct ifreq), and the ioctl request numbers.
// Shared by x86_64 and aarch64 Linux.

import { IFNAMSIZ } from "../net/ifname.ts";

/** sizeof(struct ifreq) on LP64 Linux: a 16-byte name and a 24-byte union. */
export const IFREQ_SIZE = 40;

/** Offset of the ifreq union, right after ifr_name. */
export const IFNAMSIZ_OFFSET = 16;

/** ioctl request numbers (linux/sockios.h, linux/if_tun.h). */
export const IOCTL = {
  SIOCGIFFLAGS: 0x8913,
  SIOCSIFFLAGS: 0x8914,
  SIOCGIFMTU: 0x8921,
  SIOCSIFMTU: 0x8922,
  SIOCSIFHWADDR: 0x8924,
  SIOCGIFHWADDR: 0x8927,
  SIOCGIFINDEX: 0x8933,
  SIOCBRADDIF: 0x89a2,
  SIOCBRDELIF: 0x89a3,
  TUNSETIFF: 0x400454ca,
  TUNSETOFFLOAD: 0x400454d0,
  TUNGETFEATURES: 0x800454cf,
  TUNGETIFF: 0x800454d2,
  TUNGETVNETHDRSZ: 0x800454d7,
  TUNSETVNETHDRSZ: 0x400454d8,
  TUNSETPERSIST: 0x400454cb,
  TUNSETOWNER: 0x400454cc,
  TUNGETSNDBUF: 0x800454d3,
  TUNSETSNDBUF: 0x400454d4,
  TUNSETCARRIER: 0x400454e2,
} as const;

/** Interface and tun flags. */
export const IFF = {
  UP: 0x1,
  RUNNING: 0x40,
  TUN: 0x0001,
  TAP: 0x0002,
  NO_PI: 0x1000,
  ONE_QUEUE: 0x2000,
  VNET_HDR: 0x4000,
  TUN_EXCL: 0x8000,
  MULTI_QUEUE: 0x0100,
  PERSIST: 0x0800,
} as const;

/** A zeroed struct ifreq with `name` in ifr_name; the name must already be validated. */
export function ifreq(name: string): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(new ArrayBuffer(IFREQ_SIZE));
  const bytes = new TextEncoder().encode(name);
  // Never truncate (the CVE-2019-13164 class): a name that does not fit is a bug upstream.
  if (bytes.length >= IFNAMSIZ || bytes.includes(0)) {
    throw new RangeError(`Interface name does not fit in ifr_name: ${JSON.stringify(name)}`);
  }
  buf.set(bytes, 0);
  return buf;
}

/** ifr_name of a struct ifreq. */
export function ifreqName(buf: Uint8Array): string {
  const raw = buf.subarray(0, IFNAMSIZ);
  const end = raw.indexOf(0);
  return new TextDecoder().decode(raw.subarray(0, end < 0 ? IFNAMSIZ : end));
}

/** The int at the start of the ifreq union (ifr_mtu, ifr_ifindex). */
export function ifreqInt(buf: Uint8Array<ArrayBuffer>): number {
  return new DataView(buf.buffer).getInt32(IFNAMSIZ, true);
}

/** Sets the int at the start of the ifreq union. */
export function setIfreqInt(buf: Uint8Array<ArrayBuffer>, v: number): void {
  new DataView(buf.buffer).setInt32(IFNAMSIZ, v, true);
}

/** ifr_flags (a short at the start of the union). */
export function ifreqFlags(buf: Uint8Array<ArrayBuffer>): number {
  return new DataView(buf.buffer).getUint16(IFNAMSIZ, true);
}

/** Sets ifr_flags. */
export function setIfreqFlags(buf: Uint8Array<ArrayBuffer>, v: number): void {
  new DataView(buf.buffer).setUint16(IFNAMSIZ, v, true);
}

/** The 6 MAC bytes in ifr_hwaddr.sa_data (after the 2-byte sa_family). */
export function ifreqMac(buf: Uint8Array): Uint8Array {
  return buf.slice(IFNAMSIZ + 2, IFNAMSIZ + 8);
}
