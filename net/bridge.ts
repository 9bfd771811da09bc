// Interface configuration through an AF_INET control socket, as the C helper does it: MTU,
// MAC address, bridge port and UP flag. No netlink, no shell, no `ip`.

import { Fd } from "../sys/fd.ts";
import { ifNameToIndex, ioctl, OsError, SOCK, socket } from "../sys/libc.ts";
import {
  IFF,
  IFNAMSIZ_OFFSET,
  ifreq,
  ifreqFlags,
  ifreqInt,
  ifreqMac,
  IOCTL,
  setIfreqFlags,
  setIfreqInt,
} from "../sys/structs.ts";

/** An AF_INET socket used only as a handle for interface ioctls. */
export class NetControl implements Disposable {
  #sock: Fd;

  /** Opens the control socket (`socket(AF_INET, SOCK_STREAM, 0)`, as the C helper). */
  constructor() {
    this.#sock = new Fd(socket(SOCK.AF_INET, SOCK.STREAM));
  }

  /** SIOCGIFMTU. */
  mtu(name: string): number {
    const req = ifreq(name);
    ioctl(this.#sock.value, IOCTL.SIOCGIFMTU, req, "SIOCGIFMTU");
    return ifreqInt(req);
  }

  /** SIOCSIFMTU. */
  setMtu(name: string, mtu: number): void {
    const req = ifreq(name);
    setIfreqInt(req, mtu);
    ioctl(this.#sock.value, IOCTL.SIOCSIFMTU, req, "SIOCSIFMTU");
  }

  /** SIOCGIFHWADDR: the sockaddr (family + 6 address bytes) as raw ifreq bytes. */
  hwaddr(name: string): Uint8Array<ArrayBuffer> {
    const req = ifreq(name);
    ioctl(this.#sock.value, IOCTL.SIOCGIFHWADDR, req, "SIOCGIFHWADDR");
    return req;
  }

  /** The 6-byte MAC address. */
  mac(name: string): Uint8Array {
    return ifreqMac(this.hwaddr(name));
  }

  /**
   * Sets the first MAC byte to 0xFE, keeping the kernel's random remaining five, exactly as the
   * C helper: a bridge takes the lowest port MAC, and 0xFE keeps a tap from becoming it.
   */
  setFirstMacByteFE(name: string): void {
    const req = this.hwaddr(name);
    req[IFNAMSIZ_OFFSET + 2] = 0xfe; // sa_data[0], after the 2-byte sa_family
    ioctl(this.#sock.value, IOCTL.SIOCSIFHWADDR, req, "SIOCSIFHWADDR");
  }

  /** SIOCBRADDIF: makes `port` a port of `bridge`. A non-bridge gives EOPNOTSUPP. */
  addToBridge(bridge: string, port: string): void {
    const index = ifNameToIndex(port);
    if (index === 0) throw new OsError(`if_nametoindex(${port})`, 19 /* ENODEV */);
    const req = ifreq(bridge);
    setIfreqInt(req, index);
    ioctl(this.#sock.value, IOCTL.SIOCBRADDIF, req, "SIOCBRADDIF");
  }

  /** SIOCBRDELIF: removes `port` from `bridge`. */
  removeFromBridge(bridge: string, port: string): void {
    const index = ifNameToIndex(port);
    if (index === 0) throw new OsError(`if_nametoindex(${port})`, 19 /* ENODEV */);
    const req = ifreq(bridge);
    setIfreqInt(req, index);
    ioctl(this.#sock.value, IOCTL.SIOCBRDELIF, req, "SIOCBRDELIF");
  }

  /** SIOCGIFFLAGS. */
  flags(name: string): number {
    const req = ifreq(name);
    ioctl(this.#sock.value, IOCTL.SIOCGIFFLAGS, req, "SIOCGIFFLAGS");
    return ifreqFlags(req);
  }

  /** SIOCSIFFLAGS. */
  setFlags(name: string, flags: number): void {
    const req = ifreq(name);
    setIfreqFlags(req, flags);
    ioctl(this.#sock.value, IOCTL.SIOCSIFFLAGS, req, "SIOCSIFFLAGS");
  }

  /** Sets IFF_UP, keeping the other flags. */
  up(name: string): void {
    this.setFlags(name, this.flags(name) | IFF.UP);
  }

  /** Closes the socket; idempotent. */
  close(): void {
    this.#sock.close();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
