// The library's check of a tap a helper sent: is it a port of the bridge asked for, looked up in
// the tap's own network namespace. Apart from net/link.ts because the helper never runs it, and
// every module the helper loads costs it start-up time.

import { Fd } from "../sys/fd.ts";
import { fstat, inNetNamespace, ioctlValue, O, open, OsError, SOCK, socket } from "../sys/libc.ts";
import { NL } from "../sys/netlink.ts";
import { escapeForMessage } from "./ifname.ts";
import { Links, looksLikeOvsBridge } from "./link.ts";
import { tapInfo } from "./tap.ts";

/** TUNGETDEVNETNS (`_IO('T', 227)`): an fd for the network namespace the tap lives in. */
const TUNGETDEVNETNS = 0x54e3;

/** True when the namespace fd `nsfd` is this thread's network namespace. */
function isOurNetNamespace(nsfd: number): boolean {
  const ours = open("/proc/thread-self/ns/net", O.RDONLY);
  try {
    const a = fstat(ours), b = fstat(nsfd);
    return a.ino === b.ino && a.dev === b.dev;
  } finally {
    new Fd(ours).close();
  }
}

/**
 * A netlink socket in the namespace of the tap `fd`. A helper normally runs in its caller's
 * namespace; one run through `ip netns exec` (the tests, the demo) made its tap elsewhere, and
 * only a caller allowed to enter that namespace (CAP_SYS_ADMIN) can check it there. Without
 * CAP_NET_ADMIN over the tap's namespace TUNGETDEVNETNS fails, and the caller, who could not have
 * sent a helper anywhere else, looks in its own.
 */
function linksForTap(fd: number): Links {
  let nsfd: number;
  try {
    nsfd = ioctlValue(fd, TUNGETDEVNETNS, 0, "TUNGETDEVNETNS");
  } catch {
    return new Links();
  }
  using ns = new Fd(nsfd);
  if (isOurNetNamespace(ns.value)) return new Links();
  try {
    return new Links(
      inNetNamespace(ns.value, () => socket(SOCK.AF_NETLINK, SOCK.RAW, NL.NETLINK_ROUTE)),
    );
  } catch (e) {
    const why = e instanceof OsError ? e.strerror : String(e);
    throw new Error(`the tap is in another network namespace, which cannot be entered: ${why}`);
  }
}

/**
 * Checks that the tap behind `fd` is a port of the bridge whose own name is `bridge`, in the
 * tap's network namespace. Returns undefined when it is, otherwise why not, one line.
 *
 * Requires `--allow-ffi`.
 */
export function tapPortProblem(fd: number, bridge: string): string | undefined {
  const tap = tapInfo(fd).name;
  let links: Links;
  try {
    links = linksForTap(fd);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  using _l = links;
  const shown = escapeForMessage(tap);
  const port = links.get({ name: tap });
  if (port === undefined) return `no interface \`${shown}' where the tap should be`;
  if (port.kind !== "tun") return `\`${shown}' is not the tap that was received`;
  if (port.master === undefined) {
    return `\`${shown}' is not a port of any bridge${ovsNote(links, bridge)}`;
  }
  const master = links.get({ index: port.master });
  if (master === undefined) return `the bridge of \`${shown}' has gone`;
  if (master.name !== bridge) {
    return `\`${shown}' is a port of \`${escapeForMessage(master.name)}', not of \`${
      escapeForMessage(bridge)
    }'${ovsNote(links, bridge)}`;
  }
  return undefined;
}

/**
 * Where `bridge` looks like an Open vSwitch bridge, why the check cannot pass and what to do
 * instead. Its ports are the OVS database's to know (a port of the kernel datapath has
 * `ovs-system` as its master, one of the userspace datapath none), and a library user can rarely
 * read that database.
 */
function ovsNote(links: Links, bridge: string): string {
  if (!looksLikeOvsBridge(bridge, links)) return "";
  return `; \`${escapeForMessage(bridge)}' looks like an Open vSwitch bridge, whose ports the ` +
    `kernel does not show, so this cannot be checked: ask the bridge service for the tap ` +
    `(bridgeNetdev() with via "service" or "auto")`;
}
