/**
 * @vm/bridge: a bridged Ethernet backend for emulators hosted in Deno, with QEMU's own helper
 * protocol and option syntax.
 *
 * - {@linkcode bridgeNetdev} runs a qemu-bridge-helper (ours or QEMU's) and returns a Netdev;
 * - {@linkcode tapNetdev} adopts a tap fd or attaches to a persistent tap you own;
 * - {@linkcode parseNetdev} and {@linkcode openNetdev} accept QEMU's `-netdev` strings;
 * - {@linkcode Netdev} moves frames with no thread and no promise per frame.
 *
 * Everything here requires `--allow-ffi` (the tap is driven through libc).
 *
 * @example Attach to br0 and count frames for a second
 * ```ts ignore
 * import { bridgeNetdev } from "@vm/bridge";
 *
 * await using nic = await bridgeNetdev({ br: "br0" });
 * setTimeout(() => nic.close(), 1000);
 * await nic.listen(() => {});
 * console.log(nic.counters.rx);
 * ```
 *
 * @module
 */

export { bridgeNetdev, DEFAULT_HELPER_PATH, openNetdev, tapNetdev } from "./net/open.ts";
export { ServiceError, ServiceUnavailableError } from "./service/client.ts";
export type { BridgeNetdevOptions, OpenNetdevOptions, TapNetdevOptions } from "./net/open.ts";
export { DEFAULT_BRIDGE, parseNetdev } from "./net/options.ts";
export type {
  NetdevFlag,
  ParsedBridgeOptions,
  ParsedNetdevOptions,
  ParseNetdevOptions,
  TapFdNetdevOptions,
  TapHelperNetdevOptions,
  TapIfnameNetdevOptions,
} from "./net/options.ts";
export { Netdev, parseVnetHeader } from "./net/netdev.ts";
export type {
  DirectionCounters,
  FrameBatch,
  FrameHandler,
  KernelCounters,
  NetdevCounters,
  NetdevOptions,
  Offload,
  Packet,
  VnetHeader,
  VnetMode,
} from "./net/netdev.ts";
export { BridgeHelperError, HELPER_FD } from "./net/run_helper.ts";
export { createTap } from "./net/create.ts";
export type { CreateTapOptions } from "./net/create.ts";
export { OsError } from "./sys/libc.ts";
export type { ExitStatus } from "./sys/io.ts";
