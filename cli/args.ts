// The helper's command line, QEMU-compatible: `[--use-vnet] --br=BRIDGE --fd=N` in any order,
// plus our `--check` troubleshooting mode. Pure: argv in, typed arguments or a thrown error out.

import { ifnameError } from "../net/ifname.ts";

/** The usage line, word for word as the C helper prints it (without the trailing newline). */
export const USAGE = "Usage: qemu-bridge-helper [--use-vnet] --br=bridge --fd=unixfd";

/**
 * Thrown for any malformed command line. The message is always {@linkcode USAGE}, as the C
 * helper prints nothing but the usage line for every such case.
 */
export class UsageError extends SyntaxError {
  /** Creates the error; its message is {@linkcode USAGE}. */
  constructor() {
    super(USAGE);
    this.name = "UsageError";
  }
}

/** The parsed command line of the helper. */
export interface HelperArgs {
  /** `--use-vnet` was given (QEMU asks for `IFF_VNET_HDR`). */
  useVnet: boolean;
  /** The `--br=` value; `""` in `--check` mode without `--br=`. */
  bridge: string;
  /** The `--fd=` value, the unix socket to send the tap fd on; `-1` in `--check` mode. */
  fd: number;
  /** `--check` was given: troubleshooting mode, no fd is needed or allowed. */
  check: boolean;
}

/** Largest fd number accepted: INT_MAX, as the fd is a C `int`. */
const MAX_FD = 2147483647;

/**
 * Parses the helper's arguments (without the program name). Accepted, in any order:
 * `--use-vnet` (exact, may repeat), `--br=BRIDGE` and `--fd=N` (each at most once), or `--check`
 * (may repeat) with optional `--br=` and `--use-vnet` and no `--fd=`.
 *
 * The checks run in the C helper's order: every argument is scanned first (an unknown one is a
 * usage error), then a missing `--br=`/`--fd=` is a usage error, then the bridge name is
 * validated. Unlike the C helper (last one wins, `atoi`), a repeated `--br=`/`--fd=` and an fd
 * that is not plain decimal digits up to 2147483647 are usage errors.
 *
 * @param argv The arguments after the program name.
 * @returns The parsed arguments.
 * @throws {UsageError} For an unknown, repeated or malformed argument, or a missing `--br=` or
 * `--fd=`; the message is {@linkcode USAGE}.
 * @throws {RangeError} When the bridge is not a valid interface name; the message is the
 * reason from `ifnameError`, e.g. ``name `NAME' too long: N`` as in C.
 *
 * @example Parsing QEMU's invocation
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseHelperArgs } from "./args.ts";
 *
 * assert.deepEqual(parseHelperArgs(["--use-vnet", "--br=br0", "--fd=3"]), {
 *   useVnet: true,
 *   bridge: "br0",
 *   fd: 3,
 *   check: false,
 * });
 * assert.throws(() => parseHelperArgs(["--br=br0"]), { name: "UsageError" });
 * ```
 */
export function parseHelperArgs(argv: readonly string[]): HelperArgs {
  let useVnet = false;
  let check = false;
  let bridge: string | undefined;
  let fd: number | undefined;

  // 1. Scan every argument; anything unrecognised is a usage error.
  for (const arg of argv) {
    if (arg === "--use-vnet") {
      useVnet = true;
    } else if (arg === "--check") {
      check = true;
    } else if (arg.startsWith("--br=")) {
      // A second --br= is rejected rather than last-one-wins: the two values disagree and we
      // would be guessing which bridge the caller meant.
      if (bridge !== undefined) throw new UsageError();
      bridge = arg.slice("--br=".length);
    } else if (arg.startsWith("--fd=")) {
      if (fd !== undefined) throw new UsageError();
      fd = parseFd(arg.slice("--fd=".length));
    } else {
      throw new UsageError();
    }
  }

  // 2. Required arguments.
  if (check) {
    if (fd !== undefined) throw new UsageError();
  } else if (bridge === undefined || fd === undefined) {
    throw new UsageError();
  }

  // 3. The bridge name. The C helper only checks the length here; we apply the kernel's full
  // rules so that an impossible name fails now, before the ACL is read.
  if (bridge !== undefined) {
    const reason = ifnameError(bridge);
    if (reason !== undefined) throw new RangeError(reason);
  }

  return { useVnet, bridge: bridge ?? "", fd: fd ?? -1, check };
}

/**
 * Parses an fd number exactly: decimal digits only, at most INT_MAX. C's `atoi` would accept
 * `" 3"`, `"+3"`, `"3junk"` and turn `""` or `"abc"` into fd 0 (stdin); better to fail.
 */
function parseFd(text: string): number {
  if (!/^[0-9]+$/.test(text)) throw new UsageError();
  // Number() of a long digit string rounds monotonically, so anything above INT_MAX stays above.
  const value = Number(text);
  if (value > MAX_FD) throw new UsageError();
  return value;
}
