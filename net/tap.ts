// The tun/tap side: open /dev/net/tun, create a tap the way qemu-bridge-helper does, and ask a
// tap fd what it is (TUNGETIFF), for the helper, the library and the tests.

import { Fd } from "../sys/fd.ts";
import { ioctl, ioctlValue, O, open } from "../sys/libc.ts";
import {
  IFF,
  IFNAMSIZ_OFFSET,
  ifreq,
  IFREQ_SIZE,
  ifreqFlags,
  ifreqMac,
  ifreqName,
  IOCTL,
  setIfreqFlags,
} from "../sys/structs.ts";

/** The tun clone device. */
export const TUN_PATH = "/dev/net/tun";

/** The kernel picks the lowest free tapN, as in the C helper. */
export const TAP_TEMPLATE = "tap%d";

/** Opens /dev/net/tun read-write (through libc: Deno's own open needs --allow-all for /dev). */
export function openTun(): Fd {
  return new Fd(open(TUN_PATH, O.RDWR));
}

/** TUNGETFEATURES: the IFF_* flags this kernel's tun driver supports. */
export function tunFeatures(tun: Fd): number {
  const buf = new Uint8Array(new ArrayBuffer(4));
  ioctl(tun.value, IOCTL.TUNGETFEATURES, buf, "TUNGETFEATURES");
  return new DataView(buf.buffer).getUint32(0, true);
}

/**
 * TUNSETIFF: turns the open tun fd into a non-persistent tap named from `template`; returns the
 * name the kernel chose. The tap lives exactly as long as the fd.
 */
export function attachTap(tun: Fd, flags: number, template = TAP_TEMPLATE): string {
  const req = ifreq(template);
  setIfreqFlags(req, flags);
  ioctl(tun.value, IOCTL.TUNSETIFF, req, "TUNSETIFF");
  return ifreqName(req);
}

/** What TUNGETIFF reports for a tun/tap fd. */
export interface TapInfo {
  /** The interface name, for example "tap0". */
  name: string;
  /** The tun flags (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, ...). */
  flags: number;
  /** True for a tap (Ethernet frames), false for a tun (IP packets). */
  tap: boolean;
  /** True when every frame carries a virtio-net header. */
  vnetHdr: boolean;
}

/** TUNGETIFF on an fd; throws OsError (ENOTTY, EBADFD) when it is not an attached tun fd. */
export function tapInfo(fd: number): TapInfo {
  const req = new Uint8Array(new ArrayBuffer(40));
  ioctl(fd, IOCTL.TUNGETIFF, req, "TUNGETIFF");
  const flags = ifreqFlags(req);
  return {
    name: ifreqName(req),
    flags,
    tap: (flags & IFF.TAP) !== 0,
    vnetHdr: (flags & IFF.VNET_HDR) !== 0,
  };
}

/** TUNGETVNETHDRSZ: the virtio-net header length the tap uses (10 by default, 12 for mrg). */
export function vnetHdrSize(fd: number): number {
  const buf = new Uint8Array(new ArrayBuffer(4));
  ioctl(fd, IOCTL.TUNGETVNETHDRSZ, buf, "TUNGETVNETHDRSZ");
  return new DataView(buf.buffer).getInt32(0, true);
}

/** TUNSETCARRIER: carrier on or off, as a cable plugged in or pulled (Linux 5.0+). */
export function setTapCarrier(fd: number, on: boolean): void {
  const buf = new Uint8Array(new ArrayBuffer(4));
  new DataView(buf.buffer).setInt32(0, on ? 1 : 0, true);
  ioctl(fd, IOCTL.TUNSETCARRIER, buf, "TUNSETCARRIER");
}

/** SIOCGIFHWADDR through the tap fd (the tun driver answers it): the tap's 6-byte MAC. */
export function tapMac(fd: number): Uint8Array {
  const req = new Uint8Array(new ArrayBuffer(IFREQ_SIZE));
  ioctl(fd, IOCTL.SIOCGIFHWADDR, req, "SIOCGIFHWADDR");
  return ifreqMac(req);
}

/** SIOCSIFHWADDR through the tap fd: sets the MAC (ARPHRD_ETHER). */
export function setTapMac(fd: number, mac: Uint8Array): void {
  const req = new Uint8Array(new ArrayBuffer(IFREQ_SIZE));
  const v = new DataView(req.buffer);
  v.setUint16(IFNAMSIZ_OFFSET, 1, true); // sa_family = ARPHRD_ETHER
  req.set(mac.subarray(0, 6), IFNAMSIZ_OFFSET + 2);
  ioctl(fd, IOCTL.SIOCSIFHWADDR, req, "SIOCSIFHWADDR");
}

/** TUNGETSNDBUF: the tap's send buffer in bytes. */
export function tapSndbuf(fd: number): number {
  const buf = new Uint8Array(new ArrayBuffer(4));
  ioctl(fd, IOCTL.TUNGETSNDBUF, buf, "TUNGETSNDBUF");
  return new DataView(buf.buffer).getInt32(0, true);
}

/** TUNSETSNDBUF. */
export function setTapSndbuf(fd: number, bytes: number): void {
  const buf = new Uint8Array(new ArrayBuffer(4));
  new DataView(buf.buffer).setInt32(0, bytes, true);
  ioctl(fd, IOCTL.TUNSETSNDBUF, buf, "TUNSETSNDBUF");
}

/** TUNSETOFFLOAD: the TUN_F_* offload bits (passed by value). */
export function tapSetOffload(fd: number, bits: number): void {
  ioctlValue(fd, IOCTL.TUNSETOFFLOAD, bits, "TUNSETOFFLOAD");
}
