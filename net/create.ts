// Creating a tap directly, for a process that already holds CAP_NET_ADMIN in its network
// namespace (root, a container, a service): no helper, the same steps the helper takes.

import { Fd } from "../sys/fd.ts";
import { IFF } from "../sys/structs.ts";
import { NetControl } from "./bridge.ts";
import { ifnameError } from "./ifname.ts";
import { Netdev } from "./netdev.ts";
import type { NetdevOptions } from "./netdev.ts";
import { attachTap, openTun, TAP_TEMPLATE } from "./tap.ts";

/** Options for {@linkcode createTap}. */
export interface CreateTapOptions extends NetdevOptions {
  /** The tap's name, or a template with `%d` (default `"tap%d"`: the kernel picks a free one). */
  name?: string;
  /** A bridge to make the tap a port of (none by default). */
  bridge?: string;
  /** Ask for a virtio-net header. Default false. */
  vnetHdr?: boolean;
  /**
   * Queues (IFF_MULTI_QUEUE): that many Netdevs on one tap, the kernel spreading received flows
   * over them. Default 1 (a single-queue tap).
   */
  queues?: number;
}

/**
 * Creates a non-persistent tap in this process's network namespace and returns its queues as
 * Netdevs (one unless `queues` says more). As the helper does, its MAC gets 0xfe as first byte
 * (a bridge takes the lowest port MAC as its own), it joins `bridge` if given, and is brought
 * up. It disappears when the last queue is closed. Every step that fails undoes the others.
 *
 * Requires `--allow-ffi` and CAP_NET_ADMIN (a user without it uses {@linkcode bridgeNetdev}).
 *
 * @throws {RangeError} for an invalid name, bridge or queue count.
 * @throws {OsError} when the kernel refuses (EPERM without CAP_NET_ADMIN, EBUSY for a name in
 * use, EOPNOTSUPP when `bridge` is not a bridge).
 *
 * @example A tap on br0, for a process running as root
 * ```ts ignore
 * import { createTap } from "@vm/bridge";
 *
 * const [nic] = await createTap({ bridge: "br0" });
 * await using _ = nic!;
 * console.log(nic!.name, nic!.mac);
 * ```
 */
export function createTap(options: CreateTapOptions = {}): Promise<Netdev[]> {
  const template = options.name ?? TAP_TEMPLATE;
  const queues = options.queues ?? 1;
  const problem = ifnameError(template.replace("%d", "0")) ??
    (options.bridge === undefined ? undefined : ifnameError(options.bridge)) ??
    (Number.isSafeInteger(queues) && queues >= 1 && queues <= 256
      ? undefined
      : `Invalid number of queues: ${queues} (1 to 256)`);
  if (problem !== undefined) return Promise.reject(new RangeError(problem));
  const flags = IFF.TAP | IFF.NO_PI | (options.vnetHdr ? IFF.VNET_HDR : 0) |
    (queues > 1 ? IFF.MULTI_QUEUE : 0);
  const fds: Fd[] = [];
  const nics: Netdev[] = [];
  try {
    const first = openTun();
    fds.push(first);
    const name = attachTap(first, flags, template);
    for (let i = 1; i < queues; i++) {
      const q = openTun();
      fds.push(q);
      attachTap(q, flags, name);
    }
    {
      using ctl = new NetControl();
      ctl.setFirstMacByteFE(name);
      if (options.bridge !== undefined) ctl.addToBridge(options.bridge, name);
      ctl.up(name);
    }
    for (const fd of fds) {
      nics.push(new Netdev(fd.value, options));
      fd.release();
    }
    return Promise.resolve(nics);
  } catch (e) {
    // Closing every queue's fd removes the tap (and with it its bridge port).
    for (const nic of nics) void nic.close();
    for (const fd of fds) fd.close();
    return Promise.reject(e);
  }
}
