// The tap lifecycle in the service: create a tap exactly as the helper does (same steps, same
// messages), label it with who asked, attach it through a per-bridge-kind plug, and afterwards
// keep track of it: count live taps per user, delete a tap its holder made persistent.

import { NetControl } from "../net/bridge.ts";
import { checkMaster } from "../net/link.ts";
import { attachTap, openTun, tunFeatures } from "../net/tap.ts";
import { Fd } from "../sys/fd.ts";
import { ifNameToIndex, OsError, readSmallFile, stat } from "../sys/libc.ts";
import { IFF } from "../sys/structs.ts";
import { deleteLink, setIfAlias } from "./netlink.ts";

/**
 * How a tap joins and leaves one kind of bridge. Linux bridges are the only kind today; an
 * Open vSwitch kind adds its port through OVSDB in attach() and removes it in released().
 */
export interface BridgeKind {
  /** A short name for the audit line ("linux", "ovs"). */
  readonly name: string;
  /**
   * The tap is not attached in the kernel: createTap() makes it and brings it up, and the
   * service attaches it afterwards (Open vSwitch: a port added through OVSDB).
   */
  readonly attachedLater?: boolean;
  /** Makes `tap` a port of `bridge`; throws with the helper's message on failure. */
  attach(ctl: NetControl, bridge: string, tap: string): void;
  /** Takes `tap` off `bridge` while the tap still exists (before a forced delete). */
  detach(ctl: NetControl, bridge: string, tap: string): void;
  /** The tap is gone (its last fd closed, or deleted): forget whatever attach() recorded. */
  released(bridge: string, tap: string, record?: TapRecord): void;
}

/** A failure with the exact one-line text the helper prints for it. */
export class TapError extends Error {
  /** `message` is the helper's line. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TapError";
  }
}

/** Runs `fn`; an OsError becomes `TapError("<what>: <strerror>")`, the helper's format. */
function step<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof OsError) throw new TapError(`${what}: ${e.strerror}`, { cause: e });
    throw e;
  }
}

/** Linux bridges: SIOCBRADDIF, as the helper; the kernel drops the port with the tap. */
export const LINUX_BRIDGE: BridgeKind = {
  name: "linux",
  attach(ctl, bridge, tap) {
    step(
      `failed to add interface \`${tap}' to bridge \`${bridge}'`,
      () => ctl.addToBridge(bridge, tap),
    );
  },
  detach(ctl, bridge, tap) {
    ctl.removeFromBridge(bridge, tap);
  },
  released() {},
};

/**
 * The kind of `bridge`. Anything that is not recognised is treated as a Linux bridge, so a
 * name that is no bridge at all fails in attach() with the helper's own message.
 */
export function bridgeKind(bridge: string): BridgeKind {
  void bridge;
  return LINUX_BRIDGE;
}

/** A tap the service created and handed out. */
export interface TapRecord {
  /** Interface index: names are reused, indexes are not. */
  ifindex: number;
  /** Interface name when created. */
  name: string;
  /** The bridge it was attached to. */
  bridge: string;
  /** How it was attached. */
  kind: BridgeKind;
  /** Who asked. */
  uid: number;
  /** The client's pid when it asked. */
  pid: number;
  /** The Open vSwitch Port row added for it (uuid), to remove exactly that row when it goes. */
  ovsPort?: string;
}

/** A freshly created tap: its fd (the only reference keeping it alive) and its identity. */
export interface NewTap extends Disposable {
  /** The tun fd; closing it before it was sent removes the tap and its bridge port. */
  tun: Fd;
  /** The interface name the kernel chose. */
  name: string;
  /** Its interface index. */
  ifindex: number;
}

/**
 * Creates a non-persistent tap on `bridge` in the helper's order and with its messages:
 * TUNSETIFF, the bridge's MTU, MAC with first byte 0xFE, attach, master re-checked by index
 * (`bridgeIndex` from canonicalBridge()), up; plus the ifalias label.
 * On any failure the fd is closed, which removes the tap.
 *
 * @throws {TapError} with the helper's one-line message.
 */
export function createTap(
  ctl: NetControl,
  bridge: string,
  bridgeIndex: number,
  vnetHdr: boolean,
  kind: BridgeKind,
  label: string,
): NewTap {
  const tun = step("failed to open /dev/net/tun", () => openTun());
  try {
    let flags = IFF.TAP | IFF.NO_PI;
    if (vnetHdr) {
      try {
        if (tunFeatures(tun) & IFF.VNET_HDR) flags |= IFF.VNET_HDR;
      } catch { /* as the helper: continue without IFF_VNET_HDR */ }
    }
    const tap = step("failed to create tun device", () => attachTap(tun, flags));
    const mtu = step(`failed to get mtu of bridge \`${bridge}'`, () => ctl.mtu(bridge));
    step(`failed to set mtu of device \`${tap}' to ${mtu}`, () => ctl.setMtu(tap, mtu));
    step(`failed to get MAC address of device \`${tap}'`, () => ctl.hwaddr(tap));
    step(`failed to set MAC address of device \`${tap}'`, () => ctl.setFirstMacByteFE(tap));
    const ifindex = ifNameToIndex(tap);
    if (ifindex === 0) throw new TapError(`failed to find device \`${tap}': No such device`);
    step(`failed to label device \`${tap}'`, () => setIfAlias(ifindex, label));
    if (!kind.attachedLater) {
      kind.attach(ctl, bridge, tap);
      // Attached by name: if the bridge was renamed meanwhile, the tap joined another interface.
      checkMaster(tap, bridgeIndex, bridge, TapError);
    }
    const up = step(`failed to get interface flags for \`${tap}'`, () => ctl.flags(tap));
    step(`failed to bring up interface \`${tap}'`, () => ctl.setFlags(tap, up | IFF.UP));
    return { tun, name: tap, ifindex, [Symbol.dispose]: () => tun.close() };
  } catch (e) {
    tun.close();
    throw e;
  }
}

/** What a sweep found out about one tap. */
export interface TapEvent {
  /** The tap. */
  tap: TapRecord;
  /** `gone`: its last fd closed; `persistent`: its holder set TUNSETPERSIST, so we deleted it. */
  event: "gone" | "persistent";
  /** For `persistent`: why the delete failed, if it did. */
  error?: string;
}

/** The tun flag TUNSETPERSIST sets (/sys/class/net/TAP/tun_flags). */
const IFF_PERSIST = 0x800;

/**
 * The taps the service handed out, by interface index. The service keeps no fd of them (a held
 * fd would keep every tap alive): a tap is live while its index still names it.
 */
export class TapRegistry {
  #taps = new Map<number, TapRecord>();

  /** Records a tap that was handed to a client. */
  add(tap: TapRecord): void {
    this.#taps.set(tap.ifindex, tap);
  }

  /** How many taps are recorded. */
  get size(): number {
    return this.#taps.size;
  }

  /**
   * How many live taps `uid` holds, at least up to `limit`: the recorded count is exact unless a
   * tap went away since the last sweep, so only a count at the limit is re-checked tap by tap
   * (each request stays O(1); checking every tap on every request was O(n) syscalls).
   */
  live(uid: number, limit: number, onEvent: (e: TapEvent) => void): number {
    const mine = [...this.#taps.values()].filter((t) => t.uid === uid);
    if (mine.length < limit) return mine.length;
    let n = 0;
    for (const tap of mine) {
      if (this.#alive(tap)) n++;
      else this.#gone(tap, onEvent);
    }
    return n;
  }

  /** Checks every tap: forgets the gone ones, deletes the ones made persistent. */
  sweep(ctl: NetControl, onEvent: (e: TapEvent) => void): void {
    for (const tap of [...this.#taps.values()]) {
      if (!this.#alive(tap)) {
        this.#gone(tap, onEvent);
        continue;
      }
      if (!this.#persistent(tap)) continue;
      // A tap must not outlive its VM: TUNSETPERSIST needs no capability, so any fd holder
      // can make one. Take it off the bridge and delete it now, even while the fd is held:
      // better to cut that VM off than to leave a tap nobody accounts for.
      let error: string | undefined;
      try {
        tap.kind.detach(ctl, tap.bridge, tap.name);
      } catch { /* deleting it below removes the port anyway */ }
      try {
        deleteLink(tap.ifindex);
      } catch (e) {
        error = e instanceof OsError ? e.message : String(e);
      }
      if (error === undefined) {
        this.#taps.delete(tap.ifindex);
        tap.kind.released(tap.bridge, tap.name, tap);
      }
      onEvent(
        error === undefined ? { tap, event: "persistent" } : { tap, event: "persistent", error },
      );
    }
  }

  #alive(tap: TapRecord): boolean {
    return ifNameToIndex(tap.name) === tap.ifindex;
  }

  #persistent(tap: TapRecord): boolean {
    try {
      const text = readSmallFile(`/sys/class/net/${tap.name}/tun_flags`, 64).trim();
      return (Number.parseInt(text, 16) & IFF_PERSIST) !== 0;
    } catch {
      return false; // gone between the two reads; the next sweep forgets it
    }
  }

  #gone(tap: TapRecord, onEvent: (e: TapEvent) => void): void {
    this.#taps.delete(tap.ifindex);
    tap.kind.released(tap.bridge, tap.name, tap);
    onEvent({ tap, event: "gone" });
  }
}

/** The Linux bridges in this network namespace (/sys/class/net/NAME/bridge exists). */
export function linuxBridges(names: readonly string[]): string[] {
  return names.filter((name) => {
    try {
      stat(`/sys/class/net/${name}/bridge`);
      return true;
    } catch {
      return false;
    }
  });
}
