// qemu-bridge-helper in Deno: QEMU runs `qemu-bridge-helper [--use-vnet] --br=BR --fd=N`; we
// check the ACL, create a tap on the bridge and send its fd back over the socket N.
// Read top to bottom, this file is the audit checklist; each step's reasons live beside it.

import { ACL_FILE, AclError, loadAcl } from "./acl/load.ts";
import { aclAllows } from "./acl/decide.ts";
import { parseHelperArgs, USAGE, UsageError } from "./cli/args.ts";
import { runChecks } from "./cli/check.ts";
import {
  CAP_NET_ADMIN,
  detectMode,
  dropSetuidRoot,
  lockDown,
  PrivilegeError,
} from "./caps/privileges.ts";
import { NetControl } from "./net/bridge.ts";
import { canonicalBridge, checkMaster, looksLikeOvsBridge } from "./net/link.ts";
import { attachTap, openTun, tunFeatures } from "./net/tap.ts";
import { requestTapSync, ServiceError, ServiceUnavailableError } from "./service/client.ts";
import { DEFAULT_SOCKET } from "./service/protocol.ts";
import type { Fd } from "./sys/fd.ts";
import {
  capget,
  E,
  type FileStat,
  fstat,
  getpid,
  getsockoptInt,
  OsError,
  peerCred,
  S,
  sendFd,
  SOCK,
} from "./sys/libc.ts";
import { IFF } from "./sys/structs.ts";

/** A failure with the exact text the C helper prints for it. */
class Fail extends Error {}

/**
 * How long the final sendmsg may wait for room in the caller's socket. QEMU reads at once; a
 * caller that never reads must not keep a tap up on the bridge (and this process alive) forever.
 */
const SEND_TIMEOUT_MS = 5000;

/** Runs `fn`; an OsError becomes `Fail("<what>: <strerror>")`, the C helper's format. */
function step<T>(
  what: string,
  fn: () => T,
  hint?: string,
  more?: (e: OsError) => string,
): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof OsError) {
      throw new Fail(`${what}: ${e.strerror}${more?.(e) ?? ""}${hint ? `\n${hint}` : ""}`);
    }
    throw e;
  }
}

/** The tail of the EOPNOTSUPP line for a bridge that looks like an Open vSwitch bridge. */
function ovsBridgeNote(bridge: string): string {
  return `: \`${bridge}' is not a Linux bridge but looks like an Open vSwitch bridge; ` +
    `only the bridge service (vm-bridged) attaches taps to Open vSwitch bridges: ` +
    `start it (systemctl enable --now vm-bridge.socket) and ask it for the tap`;
}

/** Printed after a kernel failure when we hold no CAP_NET_ADMIN and no service answered. */
const NO_PRIVILEGE_HINT = `hint: this helper holds no CAP_NET_ADMIN and no bridge service ` +
  `listens on \`${DEFAULT_SOCKET}': start the service (systemctl enable --now vm-bridge.socket) ` +
  `or give the helper the capability (sudo deno task install-suid)`;

function main(argv: readonly string[]): number {
  // 1. Privileges before anything the caller controls is read. Set-user-ID root drops to the
  //    caller with only CAP_NET_ADMIN and verifies it; every mode sets no-new-privileges.
  const mode = detectMode();
  if (mode === "setuid-root") {
    dropSetuidRoot();
    warn("warning: installed set-user-ID root, which is unsafe for a Deno binary; see SECURITY.md");
  }
  lockDown();

  // 2. The command line: QEMU's grammar, but duplicates, junk in --fd and bad names are errors.
  const args = parseHelperArgs(argv);
  if (args.check) return runChecks(args.bridge);

  // 3. The fd must be a connected Unix socket whose peer is not this process (the runtime holds
  //    sockets of its own) and which is none of our standard streams, checked now, before any
  //    tap exists (C finds out at the end).
  checkUnixSocket(args.fd);

  // 3b. No CAP_NET_ADMIN (installed with no privilege at all): when the bridge service listens,
  //     it decides for us (it learns who we are from the kernel, and checks the bridge's name
  //     as step 4 does) and we pass its tap fd on with step 7's send.
  const privileged = (capget().effective & (1n << BigInt(CAP_NET_ADMIN))) !== 0n;
  if (!privileged) {
    const fd = askService(args.bridge, args.useVnet);
    if (fd !== undefined) {
      using tap = fd;
      sendTap(args.fd, tap.value);
      return 0;
    }
  }
  const hint = privileged ? undefined : NO_PRIVILEGE_HINT;

  // 4. The bridge's own name, before the ACL: the kernel also resolves alternative names, so
  //    `--br=prod0' would pass a `deny br-prod' and still reach br-prod. A missing bridge goes
  //    on to fail at SIOCGIFMTU with C's message; its index 0 then matches no port's master.
  const bridgeIndex = canonicalBridge(args.bridge, Fail);

  // 5. The ACL, read with the caller's rights; any doubt about it denies.
  const rules = loadAcl(ACL_FILE, { onSkip: () => {} });
  if (!aclAllows(rules, args.bridge)) throw new Fail("access denied by acl file");

  // 6. Kernel work. Both fds are closed on every path by `using`; the tap is non-persistent,
  //    so closing its fd on a failure removes it and its bridge port.
  using ctl = step("failed to open control socket", () => new NetControl());
  using tun = step("failed to open /dev/net/tun", () => openTun(), hint);
  let flags = IFF.TAP | IFF.NO_PI;
  if (args.useVnet) {
    // As in C: no vnet header when the kernel lacks it or cannot say; QEMU asks TUNGETIFF.
    try {
      if (tunFeatures(tun) & IFF.VNET_HDR) flags |= IFF.VNET_HDR;
    } catch { /* continue without IFF_VNET_HDR */ }
  }
  const tap = step("failed to create tun device", () => attachTap(tun, flags), hint);
  const mtu = step(`failed to get mtu of bridge \`${args.bridge}'`, () => ctl.mtu(args.bridge));
  step(`failed to set mtu of device \`${tap}' to ${mtu}`, () => ctl.setMtu(tap, mtu));
  step(`failed to get MAC address of device \`${tap}'`, () => ctl.hwaddr(tap));
  step(`failed to set MAC address of device \`${tap}'`, () => ctl.setFirstMacByteFE(tap));
  // An Open vSwitch bridge is no Linux bridge (SIOCBRADDIF: EOPNOTSUPP); only the service,
  // which talks to the Open vSwitch database, attaches taps to it. Say so.
  step(
    `failed to add interface \`${tap}' to bridge \`${args.bridge}'`,
    () => ctl.addToBridge(args.bridge, tap),
    undefined,
    (e) =>
      e.errno === E.EOPNOTSUPP && looksLikeOvsBridge(args.bridge) ? ovsBridgeNote(args.bridge) : "",
  );
  // SIOCBRADDIF takes the bridge by name: if it was renamed since step 4 and another interface
  // took the name, the tap joined that one. Re-read its master by index, before it is up.
  checkMaster(tap, bridgeIndex, args.bridge, Fail);
  const up = step(`failed to get interface flags for \`${tap}'`, () => ctl.flags(tap));
  step(`failed to bring up interface \`${tap}'`, () => ctl.setFlags(tap, up | IFF.UP));

  // 7. One sendmsg: a 0x00 byte and the tap fd, waiting at most SEND_TIMEOUT_MS for room.
  //    Exit 0 only after it succeeded; on a timeout the tap goes with its fd.
  sendTap(args.fd, tun.value);
  return 0;
}

/** Step 7's send (also used for a tap from the service). */
function sendTap(sock: number, tapFd: number): void {
  try {
    sendFd(sock, tapFd, SEND_TIMEOUT_MS);
  } catch (e) {
    if (e instanceof OsError && e.errno === E.ETIMEDOUT) {
      throw new Fail(
        "failed to write fd to unix socket: the caller did not read it within " +
          `${SEND_TIMEOUT_MS / 1000} seconds`,
      );
    }
    throw e instanceof OsError ? new Fail(`failed to write fd to unix socket: ${e.strerror}`) : e;
  }
}

/** The service's tap fd, or undefined when no service listens; its refusal is our failure. */
function askService(bridge: string, vnetHdr: boolean): Fd | undefined {
  try {
    return requestTapSync(bridge, vnetHdr);
  } catch (e) {
    if (e instanceof ServiceUnavailableError) return undefined;
    if (e instanceof ServiceError) throw new Fail(e.message);
    throw new Fail(`failed to ask the bridge service: ${e instanceof Error ? e.message : e}`);
  }
}

function checkUnixSocket(fd: number): void {
  let st: FileStat | undefined;
  try {
    const s = fstat(fd);
    const unix = (s.mode & S.IFMT) === S.IFSOCK &&
      getsockoptInt(fd, SOCK.SOL_SOCKET, SOCK.SO_DOMAIN) === SOCK.AF_UNIX;
    if (unix) st = s;
  } catch { /* not open: st stays undefined */ }
  if (st === undefined) throw new Fail(`invalid --fd=${fd}: not an open Unix socket`);
  // Nor one of our standard streams (fd 0-2, or the copies Deno makes of them at higher fds):
  // a socket there reaches whoever reads or writes them, a log collector or a terminal server,
  // which need not be the caller.
  for (const [std, name] of [[0, "input"], [1, "output"], [2, "error"]] as const) {
    let same = false;
    try {
      const s = fstat(std);
      same = s.dev === st.dev && s.ino === st.ino;
    } catch { /* closed: not the same */ }
    if (same) throw new Fail(`invalid --fd=${fd}: the socket is this helper's standard ${name}`);
  }
  // The peer's pid is the process that connected, or that made the pair. Deno's runtime makes
  // socket pairs of its own (fds 7-9 under QEMU): sending the tap there would "succeed", exit 0,
  // and leave QEMU to adopt whatever its fd is. No peer at all (pid 0) is refused as well.
  const peer = peerCred(fd).pid;
  if (peer === 0) throw new Fail(`invalid --fd=${fd}: the socket is not connected`);
  if (peer === getpid()) {
    throw new Fail(`invalid --fd=${fd}: the socket's peer is this helper itself`);
  }
}

function warn(line: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(line + "\n"));
}

function run(): number {
  try {
    return main(Deno.args);
  } catch (e) {
    if (e instanceof UsageError) warn(USAGE);
    else if (e instanceof AclError) {
      warn(`failed to parse default acl file \`${ACL_FILE}': ${e.message}`);
    } else if (e instanceof Fail || e instanceof PrivilegeError || e instanceof RangeError) {
      warn(e.message);
    } else warn(`qemu-bridge-helper: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

Deno.exit(run());
