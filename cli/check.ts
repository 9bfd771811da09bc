// Troubleshooting checks shared by `qemu-bridge-helper --check [--br=BR]` and `deno task doctor`:
// one line each, `ok` or `FAIL` with the fix. Runs inside the helper, which holds only
// --allow-ffi, so all I/O goes through sys/libc.ts; the decisions and texts are pure functions.

import { ACL_FILE, AclError, loadAcl } from "../acl/load.ts";
import { aclAllows } from "../acl/decide.ts";
import type { AclRule } from "../acl/parse.ts";
import { CAP_NET_ADMIN } from "../caps/privileges.ts";
import { escapeForMessage, ifnameError } from "../net/ifname.ts";
import { checkName, Links } from "../net/link.ts";
import { capget, close, E, getresuid, listDir, O, open, OsError } from "../sys/libc.ts";
import { listBridgesSync, ServiceUnavailableError } from "../service/client.ts";
import { DEFAULT_SOCKET } from "../service/protocol.ts";

/** The outcome of one check. */
export interface CheckResult {
  /** True when nothing needs fixing. */
  ok: boolean;
  /** What was checked and found, one line. */
  what: string;
  /** What to do about a failure, one line. */
  fix?: string;
}

/**
 * Formats one result as its report line: `ok   WHAT` or `FAIL WHAT; fix: FIX`. Control
 * characters are escaped, so a name from a file can never break the one-line format.
 *
 * @param result The check result.
 * @returns One line without a newline.
 *
 * @example Formatting a failure
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatCheck } from "./check.ts";
 *
 * assert.equal(formatCheck({ ok: true, what: "br0 is a bridge" }), "ok   br0 is a bridge");
 * assert.equal(
 *   formatCheck({ ok: false, what: "br0 does not exist", fix: "create it" }),
 *   "FAIL br0 does not exist; fix: create it",
 * );
 * ```
 */
export function formatCheck(result: CheckResult): string {
  const line = result.ok
    ? `ok   ${result.what}`
    : `FAIL ${result.what}${result.fix === undefined ? "" : `; fix: ${result.fix}`}`;
  return escapeForMessage(line);
}

/** The bridges an ACL lets the caller use, as a set that may be "all but these". */
export interface AllowedBridges {
  /** `allow all` is in effect (and no `deny all`). */
  all: boolean;
  /** With `all`: the denied names. Without: the allowed names, none of them denied. */
  names: string[];
}

/**
 * Computes which bridges the rules allow: allow rules minus deny rules, as aclAllows() decides.
 *
 * @param rules Every rule of the ACL and its includes.
 * @returns Either every bridge except `names`, or exactly `names`, in file order without repeats.
 *
 * @example Allow all but one
 * ```ts
 * import assert from "node:assert/strict";
 * import { allowedBridges } from "./check.ts";
 *
 * assert.deepEqual(
 *   allowedBridges([{ kind: "allow-all" }, { kind: "deny", name: "br9" }]),
 *   { all: true, names: ["br9"] },
 * );
 * ```
 */
export function allowedBridges(rules: readonly AclRule[]): AllowedBridges {
  const denied = new Set<string>();
  let denyAll = false;
  let allowAll = false;
  const allowed: string[] = [];
  for (const rule of rules) {
    if (rule.kind === "deny") denied.add(rule.name);
    else if (rule.kind === "deny-all") denyAll = true;
    else if (rule.kind === "allow-all") allowAll = true;
    else if (!allowed.includes(rule.name)) allowed.push(rule.name);
  }
  if (denyAll) return { all: false, names: [] };
  if (allowAll) return { all: true, names: [...denied] };
  return { all: false, names: allowed.filter((n) => !denied.has(n)) };
}

/** What a network interface name refers to. */
export type InterfaceState = "bridge" | "not-bridge" | "missing" | "invalid";

/** The result line for the privilege check: `capEffective` is the effective set. */
export function privilegeResult(capEffective: bigint, euid: number): CheckResult {
  if (capEffective & (1n << BigInt(CAP_NET_ADMIN))) {
    return {
      ok: true,
      what: `CAP_NET_ADMIN is effective${euid === 0 ? " (running as root)" : ""}`,
    };
  }
  return {
    ok: false,
    what: "no CAP_NET_ADMIN: taps cannot be created (QEMU shows " +
      "`failed to create tun device: Operation not permitted')",
    fix: "install the helper with `sudo deno task install-suid` (file capability " +
      "cap_net_admin+ep) and point QEMU at it, or check it was not copied since (a copy loses it); " +
      "or start the bridge service (systemctl enable --now vm-bridge.socket)",
  };
}

/** The result line for opening /dev/net/tun; `errno` is 0 when it opened. */
export function tunResult(errno: number, strerror = ""): CheckResult {
  const what = "/dev/net/tun";
  if (errno === 0) return { ok: true, what: `${what} can be opened read-write by you` };
  if (errno === E.EACCES || errno === E.EPERM) {
    return {
      ok: false,
      what: `${what} cannot be opened by you: ${strerror}`,
      fix: "make it mode 0666, the kernel's default (`sudo chmod 0666 /dev/net/tun`; a udev " +
        'rule KERNEL=="tun", MODE="0666" keeps it), or give your group read-write access',
    };
  }
  if (errno === E.ENOENT || errno === E.ENODEV) {
    return {
      ok: false,
      what: `${what} is missing: ${strerror}`,
      fix: "load the tun driver: `sudo modprobe tun`",
    };
  }
  return { ok: false, what: `${what} cannot be opened: ${strerror}`, fix: "check the device node" };
}

/** The result line for loading the ACL: the rules, or the error that stopped it. */
export function aclResult(
  outcome: { rules: readonly AclRule[] } | { error: unknown },
  uid: number,
  file = ACL_FILE,
): CheckResult {
  if ("rules" in outcome) {
    const n = outcome.rules.length;
    return { ok: true, what: `\`${file}' parses: ${n} rule${n === 1 ? "" : "s"}` };
  }
  const e = outcome.error;
  const cause = e instanceof AclError && e.file === file && e.cause instanceof OsError
    ? e.cause
    : undefined;
  if (cause?.errno === E.ENOENT) {
    return {
      ok: false,
      what: `\`${file}' does not exist, so every bridge is denied`,
      fix: `create it, root-owned 0644, with one line per bridge: ` +
        `\`echo 'allow br0' | sudo tee ${file}'`,
    };
  }
  if (cause?.errno === E.EACCES) {
    return {
      ok: false,
      what: `\`${file}' cannot be read by you (uid ${uid}): the helper reads it with your rights`,
      fix: `\`sudo chmod 0644 ${file}' (put per-group rules in group-readable include files)`,
    };
  }
  return {
    ok: false,
    what: `\`${file}' is refused: ${e instanceof Error ? e.message : String(e)}`,
    fix: `correct it: lines are \`allow NAME', \`deny NAME', \`allow all', \`deny all', ` +
      "`include PATH`; every file, and every directory above it, root-owned and not group- or " +
      "world-writable",
  };
}

/** An include that loadAcl() skipped, and why (its errno). */
export interface SkippedInclude {
  /** The include's path, as resolved. */
  path: string;
  /** EACCES when the caller may not read it; ENOENT or ENOTDIR when it does not exist. */
  errno: number;
}

/**
 * The result line for one skipped include. An include the caller cannot read is skipped, as in
 * QEMU (per-group include files are its way to give groups different bridges): its rules, `deny`
 * ones included, do not apply to this caller, which the line says in so many words. It is not a
 * failure: that is the design, and only the administrator can tell whether it was meant.
 */
export function skippedIncludeResult(skip: SkippedInclude, uid: number): CheckResult {
  if (skip.errno === E.ENOENT || skip.errno === E.ENOTDIR) {
    return { ok: true, what: `include \`${skip.path}' does not exist: its rules apply to no one` };
  }
  return {
    ok: true,
    what: `you (uid ${uid}) cannot read include \`${skip.path}': its rules do not apply to you, ` +
      "`deny' rules included",
  };
}

/** The result line for the ACL decision: for `bridge`, or the whole set when `bridge` is "". */
export function decisionResult(rules: readonly AclRule[], bridge: string): CheckResult {
  const fix = `add \`allow ${bridge || "br0"}' to ${ACL_FILE} ` +
    "(and remove any `deny` of it and any `deny all`)";
  if (bridge !== "") {
    return aclAllows(rules, bridge)
      ? { ok: true, what: `the ACL allows you bridge \`${bridge}'` }
      : {
        ok: false,
        what: `the ACL denies you bridge \`${bridge}' (QEMU shows \`access denied by acl file')`,
        fix,
      };
  }
  const set = allowedBridges(rules);
  const list = (names: readonly string[]) => names.map((n) => `\`${n}'`).join(", ");
  if (set.all) {
    return {
      ok: true,
      what: `the ACL allows you every bridge${
        set.names.length ? ` except ${list(set.names)}` : ""
      }`,
    };
  }
  if (set.names.length === 0) {
    return { ok: false, what: "the ACL allows you no bridge at all", fix };
  }
  return { ok: true, what: `the ACL allows you ${list(set.names)}` };
}

/** The result line for one bridge name and what it turned out to be. */
export function bridgeResult(name: string, state: InterfaceState): CheckResult {
  const create = `create it: \`sudo ip link add ${name} type bridge && ` +
    `sudo ip link set ${name} up' (or with NetworkManager/systemd-networkd), then add your ` +
    "uplink to it";
  switch (state) {
    case "bridge":
      return { ok: true, what: `\`${name}' exists and is a bridge` };
    case "missing":
      return {
        ok: false,
        what: `\`${name}' does not exist (QEMU shows \`failed to get mtu of bridge')`,
        fix: create,
      };
    case "not-bridge":
      return {
        ok: false,
        what: `\`${name}' is a network interface but not a bridge: a Wi-Fi or Ethernet NIC ` +
          "cannot take taps (QEMU shows `Operation not supported')",
        fix: "create a bridge (`sudo ip link add br0 type bridge`), enslave an Ethernet NIC to " +
          "it (`sudo ip link set NIC master br0`; most Wi-Fi NICs cannot be bridged: use a " +
          "bridge with NAT instead), allow that bridge and use it",
      };
    case "invalid":
      return {
        ok: false,
        what: `\`${name}' is not a valid interface name: ${ifnameError(name) ?? "?"}`,
        fix: "use the name of an existing bridge (see `ip -br link show type bridge`)",
      };
  }
}

/**
 * The result line for `name`, an alternative name of the bridge `canonical`, given as `--br`
 * (`where` = "argument") or written in the ACL ("acl"). The helper refuses alternative names
 * before the ACL (the kernel would resolve them, and a `deny` of the bridge's own name would not
 * match), so the fix is to use the bridge's own name.
 */
export function altnameResult(
  name: string,
  canonical: string,
  where: "argument" | "acl",
): CheckResult {
  return {
    ok: false,
    what: `\`${name}' is an alternative name of \`${canonical}': the helper refuses it`,
    fix: where === "argument"
      ? `use --br=${canonical} (QEMU: br=${canonical})`
      : `use \`${canonical}' in ${ACL_FILE}`,
  };
}

/** The bridge's own name when `name` is an alternative name of it, else undefined. */
export function altnameOf(name: string): string | undefined {
  if (ifnameError(name) !== undefined) return undefined;
  try {
    using links = new Links();
    const found = checkName(links, name);
    return found.kind === "altname" ? found.canonical : undefined;
  } catch {
    return undefined; // the existence check below reports what is wrong with it
  }
}

/** The result line when the ACL allows every bridge: which of them exist. */
export function existingBridgesResult(existing: readonly string[]): CheckResult {
  if (existing.length === 0) {
    return {
      ok: false,
      what: "the ACL allows you every bridge, but there is none on this machine",
      fix: "create one: `sudo ip link add br0 type bridge && sudo ip link set br0 up`",
    };
  }
  return { ok: true, what: `bridges you may use: ${existing.map((n) => `\`${n}'`).join(", ")}` };
}

// ---------------------------------------------------------------------------------------------
// I/O, through libc only (the helper has no --allow-read, and /sys needs --allow-all in Deno)

function exists(path: string, flags: number): boolean {
  try {
    close(open(path, O.RDONLY | O.NOCTTY | O.NONBLOCK | flags));
    return true;
  } catch (e) {
    if (e instanceof OsError && (e.errno === E.ENOENT || e.errno === 20 /* ENOTDIR */)) {
      return false;
    }
    throw e;
  }
}

/** What `name` is in this network namespace, from /sys/class/net (a bridge has `bridge/`). */
export function interfaceState(name: string): InterfaceState {
  // A name from the ACL or argv goes into a path: only valid interface names (no `/`, `..`).
  if (ifnameError(name) !== undefined) return "invalid";
  if (!exists(`/sys/class/net/${name}`, O.DIRECTORY)) return "missing";
  return exists(`/sys/class/net/${name}/bridge`, O.DIRECTORY) ? "bridge" : "not-bridge";
}

/** Every bridge in this network namespace. */
export function listBridges(): string[] {
  return listDir("/sys/class/net").filter((n) => interfaceState(n) === "bridge").sort();
}

function tunCheck(): CheckResult {
  try {
    close(open("/dev/net/tun", O.RDWR | O.NOCTTY));
    return tunResult(0);
  } catch (e) {
    if (e instanceof OsError) return tunResult(e.errno, e.strerror);
    throw e;
  }
}

/** What asking the bridge service found. */
export type ServiceState =
  | { kind: "absent" }
  | { kind: "ok"; bridges: string[] }
  | { kind: "error"; message: string };

/**
 * The report line for the bridge service: it answers and which bridges it would give you, or
 * what went wrong. Pure.
 *
 * @param state What asking it found (not called for "absent": no line then).
 * @param path The socket path.
 * @returns The result.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { serviceResult } from "./check.ts";
 *
 * assert.equal(
 *   serviceResult({ kind: "ok", bridges: ["br0"] }, "/run/vm-bridge/socket").what,
 *   "the bridge service at `/run/vm-bridge/socket' answers and would give you `br0'",
 * );
 * ```
 */
export function serviceResult(state: ServiceState, path: string): CheckResult {
  if (state.kind === "ok") {
    return state.bridges.length > 0
      ? {
        ok: true,
        what: `the bridge service at \`${path}' answers and would give you ${
          state.bridges.map((b) => `\`${b}'`).join(", ")
        }`,
      }
      : {
        ok: false,
        what: `the bridge service at \`${path}' answers but would give you no existing bridge`,
        fix: "ask the administrator to allow you a bridge in /etc/qemu/bridge.conf",
      };
  }
  if (state.kind === "error") {
    return {
      ok: false,
      what: `the bridge service at \`${path}' cannot help: ${state.message}`,
      fix: "see its journal (journalctl -u vm-bridge.service)",
    };
  }
  return { ok: true, what: `no bridge service at \`${path}'` };
}

/** Asks the service at the default socket which bridges it would give us. */
export function serviceState(): ServiceState {
  try {
    return { kind: "ok", bridges: listBridgesSync({ timeoutMs: 5000 }) };
  } catch (e) {
    if (e instanceof ServiceUnavailableError) return { kind: "absent" };
    return { kind: "error", message: e instanceof Error ? e.message : String(e) };
  }
}

/** Which checks to run. */
export interface CheckOptions {
  /** Check that this process holds CAP_NET_ADMIN (true in the helper, false in the doctor). */
  privilege: boolean;
}

/**
 * Runs the checks and returns one result each: privilege (optional), /dev/net/tun, the ACL, the
 * ACL's decision for `bridge` (or the whole set when `bridge` is ""), and whether each bridge
 * that decision names exists and is a bridge.
 *
 * Requires `--allow-ffi`.
 */
export function collectChecks(bridge: string, options: CheckOptions): CheckResult[] {
  const results: CheckResult[] = [];
  const uid = getresuid().real;
  // The bridge service, when one listens: a helper without CAP_NET_ADMIN then asks it, so the
  // missing capability and a 0600 /dev/net/tun are no problem.
  const service = serviceState();
  if (service.kind !== "absent") results.push(serviceResult(service, DEFAULT_SOCKET));
  const viaService = service.kind === "ok" && service.bridges.length > 0;
  if (options.privilege) {
    const p = privilegeResult(capget().effective, getresuid().effective);
    results.push(
      !p.ok && viaService
        ? { ok: true, what: "no CAP_NET_ADMIN, which is fine: the bridge service creates taps" }
        : p,
    );
  }
  if (!viaService) results.push(tunCheck());
  // As in the helper, an alternative name is refused before the ACL is read.
  const argAltname = bridge === "" ? undefined : altnameOf(bridge);
  if (argAltname !== undefined) results.push(altnameResult(bridge, argAltname, "argument"));

  const skipped: SkippedInclude[] = [];
  let rules: AclRule[];
  try {
    rules = loadAcl(ACL_FILE, { onSkip: (path, _, errno) => skipped.push({ path, errno }) });
  } catch (error) {
    results.push(aclResult({ error }, uid));
    return results;
  }
  results.push(aclResult({ rules }, uid));
  results.push(...skipped.map((skip) => skippedIncludeResult(skip, uid)));
  const decision = decisionResult(rules, bridge);
  results.push(decision);
  if (!decision.ok) return results;

  if (bridge !== "") {
    if (argAltname === undefined) results.push(bridgeResult(bridge, interfaceState(bridge)));
    return results;
  }
  const set = allowedBridges(rules);
  if (set.all) {
    results.push(existingBridgesResult(listBridges().filter((n) => !set.names.includes(n))));
  } else {
    for (const name of set.names) {
      const canonical = altnameOf(name);
      results.push(
        canonical === undefined
          ? bridgeResult(name, interfaceState(name))
          : altnameResult(name, canonical, "acl"),
      );
    }
  }
  return results;
}

/**
 * `qemu-bridge-helper --check [--br=BR]`: prints one line per check to stdout (the report is
 * this mode's output; QEMU never passes `--check`) and returns the exit status, 0 only when
 * every check is ok.
 *
 * Requires `--allow-ffi`.
 */
export function runChecks(bridge: string): number {
  const results = collectChecks(bridge, { privilege: true });
  let bytes = new TextEncoder().encode(results.map((r) => formatCheck(r) + "\n").join(""));
  while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
  return results.every((r) => r.ok) ? 0 : 1;
}
