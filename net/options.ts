// Parses the option strings QEMU takes after -netdev, -net and -nic (QemuOpts syntax) for the
// bridge and tap backends, with QEMU 7.2's own error messages where it has one. Pure: no I/O.

import { escapeForMessage, ifnameError } from "./ifname.ts";

/**
 * The helper run when `helper=` is absent: our installed helper. QEMU's own default is
 * `CONFIG_QEMU_HELPERDIR "/qemu-bridge-helper"`, which is `/usr/lib/qemu/qemu-bridge-helper` on
 * Debian.
 */
export const DEFAULT_HELPER = "/usr/local/libexec/qemu-bridge-helper";

/** The bridge used when `br=` is absent, as QEMU's `DEFAULT_BRIDGE_INTERFACE`. */
export const DEFAULT_BRIDGE = "br0";

/** The QEMU command-line option an option string belongs to. */
export type NetdevFlag = "-netdev" | "-net" | "-nic";

/**
 * `-netdev bridge`, `-net bridge` or `-nic bridge`: run a bridge helper, which creates a tap, adds
 * it to `br` and sends its fd back.
 */
export interface ParsedBridgeOptions {
  /** Discriminant. */
  kind: "bridge";
  /** The option the string came from; `model` and `mac` exist only for `-nic`. */
  flag: NetdevFlag;
  /** The backend id: always present for `-netdev`, optional for `-net` and `-nic`. */
  id?: string;
  /**
   * The bridge to attach the tap to, a valid interface name ({@linkcode DEFAULT_BRIDGE} by
   * default).
   */
  br: string;
  /**
   * The helper program, run directly (never through a shell); {@linkcode DEFAULT_HELPER_PATH} by
   * default. A relative path is kept as given: QEMU resolves it against its working directory.
   */
  helper: string;
  /** `-nic` only: the guest NIC model, verbatim (for example `virtio-net-pci`). */
  model?: string;
  /** `-nic` only: the guest NIC's MAC address, lower case with colons (`52:54:00:12:34:56`). */
  mac?: string;
}

/** `-netdev tap,id=ID,helper=H[,br=BR]`: a tap created by a bridge helper. */
export interface TapHelperNetdevOptions {
  /** Discriminant. */
  kind: "tap-helper";
  /** The backend id. */
  id: string;
  /**
   * The bridge to attach the tap to, a valid interface name ({@linkcode DEFAULT_BRIDGE} by
   * default).
   */
  br: string;
  /** The helper program, run directly (never through a shell). Always given in this form. */
  helper: string;
}

/**
 * `-netdev tap,id=ID,fd=N`: adopt an already open tap fd. QEMU rejects `vnet_hdr=` here and asks
 * the fd itself (`TUNGETIFF`) whether it has a virtio-net header, so this form has no `vnetHdr`.
 */
export interface TapFdNetdevOptions {
  /** Discriminant. */
  kind: "tap-fd";
  /** The backend id. */
  id: string;
  /** The fd number, 0 to 2147483647, inherited by the process. */
  fd: number;
}

/** `-netdev tap,id=ID,ifname=NAME,script=no,downscript=no`: open an existing persistent tap. */
export interface TapIfnameNetdevOptions {
  /** Discriminant. */
  kind: "tap-ifname";
  /** The backend id. */
  id: string;
  /** The tap interface's name, a valid interface name. */
  ifname: string;
  /**
   * `vnet_hdr=`: `true` requires `IFF_VNET_HDR` (an error if the kernel lacks it), `false`
   * avoids it. Absent means QEMU's default: use it when the kernel supports it.
   */
  vnetHdr?: boolean;
}

/** What {@linkcode parseNetdev} returns: one object per supported form. */
export type ParsedNetdevOptions =
  | ParsedBridgeOptions
  | TapHelperNetdevOptions
  | TapFdNetdevOptions
  | TapIfnameNetdevOptions;

/** Options for {@linkcode parseNetdev}. */
export interface ParseNetdevOptions {
  /** The QEMU option the string was given to; `"-netdev"` by default. */
  flag?: NetdevFlag;
}

// QEMU 7.2's messages, verified against qemu-system-x86_64 7.2 (tests/net/options_test.ts runs
// the real binary on every row that claims one of these).
const HELPER_CONFLICT =
  "ifname=, script=, downscript=, vnet_hdr=, queues=, and vhostfds= are invalid with helper=";
const FD_CONFLICT = "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, fds=, " +
  "and vhostfds= are invalid with fd=";
const FDS_CONFLICT = "ifname=, script=, downscript=, vnet_hdr=, helper=, queues=, " +
  "and vhostfd= are invalid with fds=";

/** Keys `net_init_tap` checks against `fd=`, `fds=` and `helper=`, in that precedence. */
const FD_CONFLICT_KEYS = [
  "ifname",
  "script",
  "downscript",
  "vnet_hdr",
  "helper",
  "queues",
  "fds",
  "vhostfds",
] as const;
const FDS_CONFLICT_KEYS = [
  "ifname",
  "script",
  "downscript",
  "vnet_hdr",
  "helper",
  "queues",
  "vhostfd",
] as const;
const HELPER_CONFLICT_KEYS = [
  "ifname",
  "script",
  "downscript",
  "vnet_hdr",
  "queues",
  "vhostfds",
] as const;

/**
 * The values of QEMU 7.2's `NetClientDriver` enum on Linux (the vmnet-* members exist only on
 * macOS). Anything else gets QEMU's "does not accept value" message; these get ours.
 */
const QEMU_NET_TYPES: ReadonlySet<string> = new Set([
  "none",
  "nic",
  "user",
  "tap",
  "l2tpv3",
  "socket",
  "stream",
  "dgram",
  "vde",
  "bridge",
  "hubport",
  "netmap",
  "vhost-user",
  "vhost-vdpa",
]);

/** `NetdevBridgeOptions` members, plus the keys every backend has. */
const BRIDGE_KEYS: ReadonlySet<string> = new Set(["type", "id", "br", "helper"]);
/** `-nic` adds the guest NIC's keys to the backend's. */
const NIC_KEYS: ReadonlySet<string> = new Set(["model", "mac"]);
/** `NetdevTapOptions` members we implement. */
const TAP_KEYS: ReadonlySet<string> = new Set([
  "type",
  "id",
  "ifname",
  "fd",
  "script",
  "downscript",
  "br",
  "helper",
  "vnet_hdr",
]);
/** `NetdevTapOptions` members QEMU knows and we do not implement (multiqueue, vhost, sndbuf). */
const TAP_UNSUPPORTED_KEYS: ReadonlySet<string> = new Set([
  "fds",
  "sndbuf",
  "vhost",
  "vhostfd",
  "vhostfds",
  "vhostforce",
  "queues",
  "poll-us",
]);

/** `qapi_bool_parse`: exactly these spellings, case-sensitive ("ON" and "1" are rejected). */
const BOOLS: ReadonlyMap<string, boolean> = new Map([
  ["on", true],
  ["yes", true],
  ["true", true],
  ["y", true],
  ["off", false],
  ["no", false],
  ["false", false],
  ["n", false],
]);

const INT_MAX = 2147483647;

/** Quotes user text for a one-line message. */
function q(text: string): string {
  return `'${escapeForMessage(text)}'`;
}

/**
 * Splits a QemuOpts string into `[key, value]` pairs in order, as `opts_do_parse` does: elements
 * end at a `,` that is not doubled, `,,` in a value is a literal comma, and a first element
 * without `=` is the implied `type`. A key cannot contain `,` or `=`.
 */
function tokenize(text: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  let pos = 0;
  while (pos < text.length) {
    let end = pos;
    while (end < text.length && text[end] !== "=" && text[end] !== ",") end++;
    let key: string;
    if (text[end] === "=") {
      key = text.slice(pos, end);
      pos = end + 1;
    } else if (pairs.length === 0 && pos === 0) {
      key = "type";
    } else {
      // QEMU reads `foo` as foo=on and `nofoo` as foo=off, with a deprecation warning. Better
      // to fail than to guess which key a typo meant to switch.
      const name = text.slice(pos, end);
      const [real, value] = name.startsWith("no") ? [name.slice(2), "off"] : [name, "on"];
      throw new SyntaxError(
        `Short-form boolean option ${q(name)} is not supported: write ${q(`${real}=${value}`)}`,
      );
    }
    let value = "";
    while (pos < text.length) {
      const c = text[pos];
      if (c === ",") {
        if (text[pos + 1] !== ",") break;
        pos++; // the first of ",,"; the second is taken below as a literal comma
      }
      value += text[pos];
      pos++;
    }
    pairs.push([key, value]);
    if (pos < text.length) pos++; // the separating comma
  }
  return pairs;
}

/** Strips a leading `-netdev `, `--net ` etc. and reconciles it with `options.flag`. */
function splitFlag(text: string, flag: NetdevFlag | undefined): [NetdevFlag, string] {
  if (!text.startsWith("-")) return [flag ?? "-netdev", text];
  const match = /^--?(netdev|net|nic)(?:[ \t]+|$)/.exec(text);
  if (match === null || match[1] === undefined) {
    const word = /^\S*/.exec(text)?.[0] ?? text;
    throw new SyntaxError(`Unknown option ${q(word)}: expected -netdev, -net or -nic`);
  }
  const given = `-${match[1]}` as NetdevFlag;
  if (flag !== undefined && flag !== given) {
    throw new TypeError(`Option string starts with ${q(given)} but the flag is ${q(flag)}`);
  }
  const rest = text.slice(match[0].length);
  if (rest === "") throw new SyntaxError(`Option ${q(given)} requires an argument`);
  return [given, rest];
}

/** `qemu_parse_fd` accepts what `strtol(s, &end, 10)` fully converts to 0..INT_MAX. */
function parseFd(text: string): number {
  if (/^(?:0|[1-9][0-9]*)$/.test(text)) {
    const fd = Number(text);
    if (fd <= INT_MAX) return fd;
    throw new RangeError(`Invalid file descriptor number ${q(text)}`);
  }
  const loose = /^[\t\n\v\f\r ]*[+-]?([0-9]+)$/.exec(text);
  const digits = loose?.[1];
  if (
    digits !== undefined && Number(digits) <= INT_MAX &&
    (Number(digits) === 0 || !text.includes("-"))
  ) {
    // QEMU takes " 3", "+3" and "03" as 3; we parse numbers exactly.
    const why = "expected a decimal number without sign, spaces or leading zeros";
    throw new SyntaxError(`Invalid file descriptor number ${q(text)}: ${why}`);
  }
  // A monitor fd name (getfd) only means something to netdev_add over QMP/HMP; on the command
  // line QEMU 7.2 has no monitor to ask and gives this same message.
  throw new SyntaxError(`Invalid file descriptor number ${q(text)}`);
}

/**
 * Canonical MAC syntax only. QEMU's `net_parse_macaddr` is strtol-based and also takes
 * `0x123`, `1:2:3:4:5:6`, `52:54:00:12:34:567` and an empty value, so its "invalid syntax for
 * ethernet address" would not describe what we reject; the message here is ours.
 */
function parseMac(text: string): string {
  if (!/^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}$/.test(text)) {
    throw new SyntaxError(
      `Invalid MAC address ${q(text)}: expected six two-digit hex octets like '52:54:00:12:34:56'`,
    );
  }
  const mac = text.toLowerCase().replaceAll("-", ":");
  if (parseInt(mac.slice(0, 2), 16) & 1) {
    throw new RangeError("NIC cannot have multicast MAC address");
  }
  return mac;
}

function checkIfname(key: string, name: string): void {
  const why = ifnameError(name);
  if (why !== undefined) {
    throw new RangeError(`Parameter ${q(key)} is not a valid interface name: ${why}`);
  }
}

function checkHelper(helper: string): void {
  if (helper === "") throw new RangeError("Parameter 'helper' must not be empty");
  if (helper.includes("\0")) throw new RangeError("Parameter 'helper' contains a NUL byte");
  // QEMU runs a helper string containing a space or tab through `/bin/sh -c`, with the bridge
  // name pasted in unquoted. We never use a shell, so such a string would silently mean
  // something else here (a path with spaces in it): better to fail.
  if (/[ \t]/.test(helper)) {
    throw new RangeError(
      `Parameter 'helper' contains a space or tab: QEMU would run ${q(helper)} through ` +
        "/bin/sh, and we never use a shell",
    );
  }
}

/**
 * Parses the option string a user would give QEMU after `-netdev`, `-net` or `-nic`, for the
 * bridge and tap backends, following QEMU 7.2's QemuOpts syntax and checks in QEMU's order.
 *
 * Syntax: comma-separated `key=value` pairs; `,,` inside a value is a literal comma; a first
 * element without `=` is the backend type (`type=bridge` anywhere works too). A trailing comma is
 * ignored, as in QEMU. For convenience `text` may start with the option itself followed by
 * whitespace (`"-netdev bridge,id=n0"`, also `--netdev`); the rest is taken verbatim.
 *
 * Accepted forms:
 * - `-netdev bridge,id=ID[,br=BR][,helper=H]`, `-net bridge[,id=ID][,br=BR][,helper=H]` and
 *   `-nic bridge[,id=ID][,br=BR][,helper=H][,model=M][,mac=MAC]` → `kind: "bridge"`;
 * - `-netdev tap,id=ID,helper=H[,br=BR]` → `kind: "tap-helper"`;
 * - `-netdev tap,id=ID,fd=N` → `kind: "tap-fd"`;
 * - `-netdev tap,id=ID,ifname=NAME,script=no,downscript=no[,vnet_hdr=on|off]` →
 *   `kind: "tap-ifname"`.
 *
 * Differences from QEMU, all failing closed:
 * - a repeated key is an error (QEMU silently keeps the last value, or the first for `id=`);
 * - short-form booleans (`vnet_hdr`, `novnet_hdr`) are an error (deprecated in QEMU);
 * - scripts are never run, so a tap opened by name needs `script=no,downscript=no`;
 * - `fds=`, `sndbuf=`, `vhost=`, `vhostfd=`, `vhostfds=`, `vhostforce=`, `queues=` and
 *   `poll-us=` are not supported, nor other backends, nor tap with `-net`/`-nic`;
 * - `br=` is checked as an interface name and rejected where QEMU ignores it (with `fd=` or
 *   `ifname=`); `helper=` must be non-empty without spaces or tabs (QEMU would use a shell);
 * - `fd=` must be a plain decimal number; `mac=` must be six two-digit hex octets.
 *
 * @param text The option string, for example `"bridge,id=n0,br=br1"`.
 * @param options Which QEMU option the string belongs to (`"-netdev"` by default).
 * @returns The parsed options, with QEMU's defaults filled in (`br` = {@linkcode DEFAULT_BRIDGE},
 * `helper` = {@linkcode DEFAULT_HELPER_PATH}); absent optional keys are omitted, not `undefined`.
 * @throws {SyntaxError} When the string or a value is malformed (a short-form boolean, an `id`
 * that is not an identifier, a `vnet_hdr=` that is not a QEMU boolean, an `fd=` or `mac=` that is
 * not a number or address, an unknown leading option).
 * @throws {TypeError} When the set of keys is wrong: a missing `id` or `type`, an unknown or
 * unsupported type or key, a repeated key, a combination QEMU rejects, a tap without `helper=`,
 * `fd=` or `ifname=`, or an `ifname=` without `script=no,downscript=no`.
 * @throws {RangeError} When a value is out of range: an invalid bridge or interface name, an
 * `fd=` above 2147483647, a multicast MAC, a script other than `no`, an empty `model=`, or an
 * unusable `helper=`.
 *
 * @example Bridge backends and their defaults
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_HELPER_PATH, parseNetdev } from "@vm/bridge";
 *
 * assert.deepEqual(parseNetdev("bridge,id=n0"), {
 *   kind: "bridge",
 *   flag: "-netdev",
 *   id: "n0",
 *   br: "br0",
 *   helper: DEFAULT_HELPER_PATH,
 * });
 * assert.deepEqual(parseNetdev("-nic bridge,br=br1,mac=52:54:00:12:34:56"), {
 *   kind: "bridge",
 *   flag: "-nic",
 *   br: "br1",
 *   helper: DEFAULT_HELPER_PATH,
 *   mac: "52:54:00:12:34:56",
 * });
 * ```
 *
 * @example Tap forms and QEMU's messages
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseNetdev } from "@vm/bridge";
 *
 * assert.deepEqual(parseNetdev("tap,id=n0,fd=5"), { kind: "tap-fd", id: "n0", fd: 5 });
 * assert.throws(() => parseNetdev("bridge"), new TypeError("Parameter 'id' is missing"));
 * ```
 */
export function parseNetdev(text: string, options: ParseNetdevOptions = {}): ParsedNetdevOptions {
  const [flag, body] = splitFlag(text, options.flag);

  const opts = new Map<string, string>();
  for (const [key, value] of tokenize(body)) {
    // QEMU keeps the last value of a repeated key (the first for id=, which QemuOpts handles
    // itself), so `br=br0,br=evil` would quietly mean evil. Better to fail.
    if (opts.has(key)) throw new TypeError(`Parameter ${q(key)} is given more than once`);
    opts.set(key, value);
  }

  // The checks below run in QEMU's order, so that a string with several faults gets the same
  // first message: id syntax (QemuOpts), -nic's mac, id presence, type, values, unknown keys,
  // then net_init_tap's combinations and fd number.
  const id = opts.get("id");
  if (id !== undefined && !/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) {
    throw new SyntaxError("Parameter 'id' expects an identifier");
  }
  const macText = opts.get("mac");
  const mac = flag === "-nic" && macText !== undefined ? parseMac(macText) : undefined;
  if (flag === "-netdev" && id === undefined) throw new TypeError("Parameter 'id' is missing");

  const type = opts.get("type");
  if (type === undefined) {
    throw new TypeError(
      flag === "-nic"
        ? "Parameter 'type' is missing: -nic without a type means the 'user' backend, " +
          "which is not supported"
        : "Parameter 'type' is missing",
    );
  }
  if (!QEMU_NET_TYPES.has(type)) {
    throw new TypeError(`Parameter 'type' does not accept value ${q(type)}`);
  }
  if (type !== "bridge" && (type !== "tap" || flag !== "-netdev")) {
    throw new TypeError(
      flag === "-netdev"
        ? `Network backend ${q(type)} is not supported: use 'bridge' or 'tap'`
        : `Network backend ${q(type)} is not supported with ${flag}: use 'bridge', or -netdev tap`,
    );
  }

  if (type === "bridge") {
    for (const key of opts.keys()) {
      if (!BRIDGE_KEYS.has(key) && !(flag === "-nic" && NIC_KEYS.has(key))) {
        throw new TypeError(`Invalid parameter ${q(key)}`);
      }
    }
    const br = opts.get("br") ?? DEFAULT_BRIDGE;
    checkIfname("br", br);
    const helper = opts.get("helper") ?? DEFAULT_HELPER;
    checkHelper(helper);
    const result: ParsedBridgeOptions = { kind: "bridge", flag, br, helper };
    if (id !== undefined) result.id = id;
    const model = opts.get("model");
    if (model !== undefined) {
      if (model === "") throw new RangeError("Parameter 'model' must not be empty");
      result.model = model;
    }
    if (mac !== undefined) result.mac = mac;
    return result;
  }

  // type === "tap", flag === "-netdev", so id is defined.
  const tapId = id as string;
  const vnetHdrText = opts.get("vnet_hdr");
  const vnetHdr = vnetHdrText === undefined ? undefined : BOOLS.get(vnetHdrText);
  if (vnetHdrText !== undefined && vnetHdr === undefined) {
    throw new SyntaxError("Parameter 'vnet_hdr' expects 'on' or 'off'");
  }
  for (const key of opts.keys()) {
    if (!TAP_KEYS.has(key) && !TAP_UNSUPPORTED_KEYS.has(key)) {
      throw new TypeError(`Invalid parameter ${q(key)}`);
    }
  }
  if (opts.has("fd")) {
    if (FD_CONFLICT_KEYS.some((k) => opts.has(k))) throw new TypeError(FD_CONFLICT);
  } else if (opts.has("fds")) {
    if (FDS_CONFLICT_KEYS.some((k) => opts.has(k))) throw new TypeError(FDS_CONFLICT);
  } else if (opts.has("helper")) {
    if (HELPER_CONFLICT_KEYS.some((k) => opts.has(k))) throw new TypeError(HELPER_CONFLICT);
  }
  for (const key of opts.keys()) {
    if (TAP_UNSUPPORTED_KEYS.has(key)) {
      throw new TypeError(`Parameter ${q(key)} is not supported`);
    }
  }

  const fdText = opts.get("fd");
  if (fdText !== undefined) {
    const fd = parseFd(fdText);
    if (opts.has("br")) throw new TypeError("Parameter 'br' is only valid with helper=");
    return { kind: "tap-fd", id: tapId, fd };
  }

  const helper = opts.get("helper");
  if (helper !== undefined) {
    const br = opts.get("br") ?? DEFAULT_BRIDGE;
    checkIfname("br", br);
    checkHelper(helper);
    return { kind: "tap-helper", id: tapId, br, helper };
  }

  for (const key of ["script", "downscript"]) {
    const script = opts.get(key);
    if (script !== undefined && script !== "no") {
      throw new RangeError(`Parameter ${q(key)} must be 'no': we don't run scripts`);
    }
  }
  const ifname = opts.get("ifname");
  if (ifname === undefined) {
    throw new TypeError(
      "Tap backend needs helper=, fd= or ifname=: without them QEMU creates a new tap, " +
        "which only the bridge helper does here",
    );
  }
  if (!opts.has("script") || !opts.has("downscript")) {
    throw new TypeError(
      "Parameter 'ifname' needs script=no,downscript=no: QEMU would run /etc/qemu-ifup and " +
        "/etc/qemu-ifdown by default, and we don't run scripts",
    );
  }
  checkIfname("ifname", ifname);
  if (opts.has("br")) throw new TypeError("Parameter 'br' is only valid with helper=");
  const result: TapIfnameNetdevOptions = { kind: "tap-ifname", id: tapId, ifname };
  if (vnetHdr !== undefined) result.vnetHdr = vnetHdr;
  return result;
}
