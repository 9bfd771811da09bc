// The library's ways to get a Netdev: run a bridge helper as QEMU does, adopt an fd a parent
// handed over, or attach to a persistent tap the caller owns.

import { Fd } from "../sys/fd.ts";
import { IFF } from "../sys/structs.ts";
import { ifNameToIndex, OsError, readSmallFile } from "../sys/libc.ts";
import { ifnameError } from "./ifname.ts";
import { altnameMessage, checkName, Links } from "./link.ts";
import { Netdev } from "./netdev.ts";
import type { NetdevOptions } from "./netdev.ts";
import { runHelper } from "./run_helper.ts";
import { DEFAULT_HELPER, parseNetdev } from "./options.ts";
import type { ParsedNetdevOptions } from "./options.ts";
import { attachTap, openTun } from "./tap.ts";
import { requestTap, ServiceUnavailableError } from "../service/client.ts";
import { DEFAULT_SOCKET } from "../service/protocol.ts";

/** Where `sudo deno task install-suid` installs the helper. */
export const DEFAULT_HELPER_PATH: string = DEFAULT_HELPER;

/** Options for {@linkcode bridgeNetdev}. */
export interface BridgeNetdevOptions extends NetdevOptions {
  /** The bridge to join (default `"br0"`, as QEMU). */
  br?: string;
  /**
   * The helper: a path, run as QEMU runs it (execv: no shell, no PATH search), or an argv array
   * whose first element may be found on PATH. Default: the installed helper.
   */
  helper?: string | readonly string[];
  /** Ask for a tap with a virtio-net header (`--use-vnet`). Default false. */
  vnetHdr?: boolean;
  /** Aborting kills the helper and rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Who creates the tap: `"auto"` (default) asks the bridge service when one listens (no
   * process is spawned) and runs the helper when none does; `"service"` only asks the service;
   * `"helper"` only runs the helper. A tap on an Open vSwitch bridge comes from the service:
   * one a helper hands over is refused, since the kernel does not show OVS ports, so the check
   * that the tap is on `br` cannot pass.
   */
  via?: "auto" | "service" | "helper";
  /** The bridge service's socket (default `/run/vm-bridge/socket`). */
  serviceSocket?: string;
  /** Kill a helper still running after this many milliseconds (default 30 s). */
  timeoutMs?: number;
}

/**
 * Gets a tap on a bridge from the bridge service when one listens (see `via`), else through a
 * bridge helper, exactly as QEMU's `-netdev bridge` does: a
 * Unix socketpair, the child's end as its fd 3, `--fd=3 --br=BR`, `--use-vnet` only when
 * `vnetHdr` is set. Unlike QEMU, the bridge name never passes through a shell, an alternative
 * interface name is refused (`br` must be the bridge's own name), the control message is
 * checked, the tap must be a port of `br`, a helper that runs past `timeoutMs` is killed, and an
 * fd received on a failure path is closed.
 *
 * Requires `--allow-ffi`. The helper itself needs CAP_NET_ADMIN (the installed one has it).
 *
 * @param options Bridge, helper, vnet header and abort signal.
 * @returns The tap as a Netdev.
 * @throws {BridgeHelperError} when the helper fails; the message carries its stderr.
 * @throws {ServiceError} when the service refuses; the message is the helper's text.
 * @throws {ServiceUnavailableError} with `via: "service"` when no service listens.
 * @throws {RangeError} when `br` is not a valid interface name, or is an alternative name.
 *
 * @example Join br0 and print the first frame
 * ```ts ignore
 * import { bridgeNetdev } from "@vm/bridge";
 *
 * await using nic = await bridgeNetdev({ br: "br0" });
 * console.log(`attached as ${nic.name}`);
 * for await (const frame of nic) {
 *   console.log(`${frame.length} bytes`);
 *   break;
 * }
 * ```
 */
export async function bridgeNetdev(options: BridgeNetdevOptions = {}): Promise<Netdev> {
  const br = options.br ?? "br0";
  const bad = ifnameError(br);
  if (bad !== undefined) throw new RangeError(bad);
  // Before any helper runs, as our helper does before its ACL: QEMU's C helper would hand out a
  // tap on the bridge an alternative name resolves to, whatever a `deny` of its own name says.
  // (A helper run in another namespace is checked there, by runHelper, once the tap exists; the
  // service checks in its own namespace.)
  {
    using links = new Links();
    const found = checkName(links, br);
    if (found.kind === "altname") throw new RangeError(altnameMessage(br, found.canonical));
  }
  const via = options.via ?? "auto";
  let fd: Fd | undefined;
  if (via !== "helper") {
    try {
      fd = await requestTap(br, options.vnetHdr ?? false, {
        socket: options.serviceSocket ?? DEFAULT_SOCKET,
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (e) {
      // Only a missing service falls back; a refusal is the answer (the helper would agree).
      if (!(e instanceof ServiceUnavailableError) || via === "service") throw e;
    }
  }
  fd ??= await runHelper({
    helper: options.helper ?? DEFAULT_HELPER_PATH,
    bridge: br,
    vnetHdr: options.vnetHdr ?? false,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
  try {
    const nic = new Netdev(fd.value, options);
    fd.release(); // the Netdev owns it now
    return nic;
  } catch (e) {
    fd.close();
    throw e;
  }
}

/** Options for {@linkcode tapNetdev}: exactly one of `fd` and `ifname`. */
export type TapNetdevOptions =
  & NetdevOptions
  & (
    | {
      /** An open tap fd handed over by a parent (the libvirt `fd=` way); it is adopted. */ fd:
        number;
      ifname?: never;
    }
    | {
      /** A persistent tap the caller may open (`ip tuntap add dev tap7 mode tap user alice`). */
      ifname: string;
      fd?: never;
      /** Ask for a virtio-net header. Default false. */
      vnetHdr?: boolean;
    }
  );

/**
 * Adopts a tap fd, or attaches to an existing persistent tap by name. Attaching to a tap the
 * caller owns needs no privilege at all.
 *
 * Requires `--allow-ffi`.
 *
 * @throws {OsError} when the fd is not a tun/tap fd (it is then left open, still the caller's),
 * or the tap cannot be attached (EPERM: not yours).
 * @throws {TypeError} when the fd is a tun rather than a tap.
 * @throws {OsError} (ENODEV) when no interface `ifname` exists: this never creates a tap.
 *
 * @example Attach to a persistent tap
 * ```ts ignore
 * import { tapNetdev } from "@vm/bridge";
 *
 * // sudo ip tuntap add dev tap7 mode tap user $USER && sudo ip link set tap7 up master br0
 * await using nic = await tapNetdev({ ifname: "tap7" });
 * nic.send(new Uint8Array(60));
 * ```
 */
export function tapNetdev(options: TapNetdevOptions): Promise<Netdev> {
  if (options.fd !== undefined) {
    if (!Number.isInteger(options.fd) || options.fd < 0) {
      return Promise.reject(new RangeError(`Invalid file descriptor: ${options.fd}`));
    }
    // The constructor throws for an fd that is not a tap; the caller must get a rejection (a
    // synchronous throw would escape `tapNetdev(...).catch()`), and the fd stays the caller's.
    try {
      return Promise.resolve(new Netdev(options.fd, options));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  const ifname = options.ifname;
  const bad = ifnameError(ifname);
  if (bad !== undefined) return Promise.reject(new RangeError(bad));
  // TUNSETIFF with a free name would create a new, unbridged tap (for a caller with
  // CAP_NET_ADMIN): this function attaches to an existing one only.
  if (ifNameToIndex(ifname) === 0) {
    return Promise.reject(
      new OsError(`tapNetdev: no interface \`${ifname}' (create it with ip tuntap add)`, 19),
    );
  }
  let tun: Fd | undefined;
  try {
    tun = openTun();
    try {
      attachTap(tun, IFF.TAP | IFF.NO_PI | (options.vnetHdr ? IFF.VNET_HDR : 0), ifname);
    } catch (e) {
      // EINVAL says only that the flags do not match: name what the interface is instead.
      throw (e instanceof OsError && e.errno === 22 && notATap(ifname)) || e;
    }
    const nic = new Netdev(tun.value, options);
    tun.release();
    return Promise.resolve(nic);
  } catch (e) {
    tun?.close();
    return Promise.reject(e);
  }
}

/**
 * Why `ifname` cannot be attached as a tap, when its tun flags (in sysfs) say it is a tun or
 * it is no tun/tap at all; undefined when sysfs does not tell.
 */
function notATap(ifname: string): TypeError | undefined {
  let flags: number;
  try {
    flags = Number(readSmallFile(`/sys/class/net/${ifname}/tun_flags`).trim());
  } catch (e) {
    if (e instanceof OsError && e.errno === 2 && ifNameToIndex(ifname) !== 0) {
      return new TypeError(`\`${ifname}' is not a tun/tap device`);
    }
    return undefined;
  }
  if (Number.isInteger(flags) && (flags & IFF.TAP) === 0) {
    return new TypeError(`\`${ifname}' is a tun, not a tap`);
  }
  return undefined;
}

/** Options for {@linkcode openNetdev} beyond the QEMU option string. */
export interface OpenNetdevOptions extends NetdevOptions {
  /**
   * Ask the helper for a virtio-net header (`--use-vnet`). QEMU always asks, because its NIC
   * models can use one; an emulator that does not emulate virtio-net usually does not want it,
   * so the default here is false.
   */
  vnetHdr?: boolean;
  /** Aborting kills a helper that is still running. */
  signal?: AbortSignal;
  /** Kill a helper still running after this many milliseconds (default 30 s). */
  timeoutMs?: number;
}

/**
 * Opens what a QEMU `-netdev`/`-net`/`-nic` option describes: `bridge` and `tap,helper=` run
 * the helper, `tap,fd=` adopts the fd, `tap,ifname=...,script=no,downscript=no` attaches to a
 * persistent tap. An emulator can accept QEMU's flags unchanged.
 *
 * Requires `--allow-ffi`.
 *
 * @param spec A parsed option (from {@linkcode parseNetdev}) or the option string itself.
 * @throws {SyntaxError | TypeError | RangeError} for an option string QEMU (or we) reject.
 *
 * @example Accept QEMU's own flag
 * ```ts ignore
 * import { openNetdev } from "@vm/bridge";
 *
 * await using nic = await openNetdev("bridge,id=n0,br=br0");
 * console.log(nic.name);
 * ```
 */
export function openNetdev(
  spec: ParsedNetdevOptions | string,
  options: OpenNetdevOptions = {},
): Promise<Netdev> {
  let parsed: ParsedNetdevOptions;
  try {
    parsed = typeof spec === "string" ? parseNetdev(spec) : spec;
  } catch (e) {
    return Promise.reject(e);
  }
  const { vnetHdr, signal, timeoutMs, ...netdev } = options;
  switch (parsed.kind) {
    case "bridge":
    case "tap-helper":
      return bridgeNetdev({
        ...netdev,
        br: parsed.br,
        helper: parsed.helper,
        vnetHdr: vnetHdr ?? false,
        ...(signal ? { signal } : {}),
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
      });
    case "tap-fd":
      return tapNetdev({ ...netdev, fd: parsed.fd });
    case "tap-ifname":
      return tapNetdev({
        ...netdev,
        ifname: parsed.ifname,
        vnetHdr: parsed.vnetHdr ?? vnetHdr ?? false,
      });
  }
}
