// Which interface a name really is. The kernel resolves alternative names (`ip link property add
// dev br-prod altname prod0`) wherever it takes a name, so an ACL that compares strings would
// let `--br=prod0` through a `deny br-prod`. Everything that takes a bridge name settles it here:
// the helper, `--check`, the doctor and the library.

import { Fd } from "../sys/fd.ts";
import { OsError, read, SOCK, socket, write } from "../sys/libc.ts";
import { getLinkRequest, type Link, NL, parseLinkReply } from "../sys/netlink.ts";
import { escapeForMessage } from "./ifname.ts";

export type { Link } from "../sys/netlink.ts";

/**
 * The buffer every reply is read into, one for the process, made on first use: parseLinkReply()
 * copies what it keeps, and nothing runs between the read and the parse (no await). A fresh
 * 64 KiB per question was garbage V8 collects late (the bridge service asks several per request).
 */
let reply: Uint8Array<ArrayBuffer> | undefined;

/** A NETLINK_ROUTE socket that asks the kernel about one interface at a time. */
export class Links implements Disposable {
  #sock: Fd;
  #seq = 0;

  /** Opens the socket in this thread's network namespace, or adopts `fd` (one made elsewhere). */
  constructor(fd?: number) {
    this.#sock = new Fd(fd ?? socket(SOCK.AF_NETLINK, SOCK.RAW, NL.NETLINK_ROUTE));
  }

  /**
   * RTM_GETLINK for one interface, by ifindex or by name (alternative names resolve, as in every
   * ioctl). Returns undefined when there is no such interface.
   *
   * @throws {OsError} for any other error the kernel reports.
   */
  get(query: { index: number } | { name: string }): Link | undefined {
    const seq = ++this.#seq;
    write(this.#sock.value, getLinkRequest(query, seq), "write(netlink)");
    const buf = reply ??= new Uint8Array(new ArrayBuffer(65536));
    const n = read(this.#sock.value, buf, "read(netlink)");
    const r = parseLinkReply(buf.subarray(0, Math.max(n, 0)), seq);
    if (typeof r === "number") {
      if (r === -19 /* ENODEV */) return undefined;
      throw new OsError("netlink RTM_GETLINK", -r);
    }
    return r;
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

/** What a bridge name given by a caller turned out to be. */
export type NameCheck =
  /** No interface has this name (or alternative name). */
  | { kind: "missing" }
  /** It is the interface's own name. */
  | { kind: "canonical"; index: number }
  /** It is an alternative name of the interface `canonical`. */
  | { kind: "altname"; index: number; canonical: string };

/**
 * Settles which interface `name` is: missing, its own name, or an alternative name of another.
 *
 * @param links The netlink socket to ask (in the namespace where the name matters).
 * @param name A valid interface name.
 */
export function checkName(links: Links, name: string): NameCheck {
  const link = links.get({ name });
  if (link === undefined) return { kind: "missing" };
  if (link.name === name) return { kind: "canonical", index: link.index };
  return { kind: "altname", index: link.index, canonical: link.name };
}

/**
 * The refusal for an alternative name, one line:
 * ``bridge `prod0' is an alternative name of `br-prod': use its name``.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { altnameMessage } from "./link.ts";
 *
 * assert.equal(
 *   altnameMessage("prod0", "br-prod"),
 *   "bridge `prod0' is an alternative name of `br-prod': use its name",
 * );
 * ```
 */
export function altnameMessage(name: string, canonical: string): string {
  return `bridge \`${escapeForMessage(name)}' is an alternative name of \`${
    escapeForMessage(canonical)
  }': use its name`;
}

/**
 * True when the interface `name` looks like an Open vSwitch bridge to the kernel: a tap (the
 * bridge device of a userspace, `datapath_type=netdev`, bridge) or an `openvswitch` device (the
 * kernel datapath's internal port). Only the OVS database can say for sure. Asks `links` (the
 * caller's, in another namespace) or a socket of its own; false when the kernel cannot be asked.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { looksLikeOvsBridge } from "./link.ts";
 *
 * const kernel = { get: () => ({ index: 7, name: "br-int", kind: "openvswitch" }) };
 * assert.equal(looksLikeOvsBridge("br-int", kernel), true);
 * ```
 */
export function looksLikeOvsBridge(name: string, links?: Pick<Links, "get">): boolean {
  try {
    using own = links === undefined ? new Links() : undefined;
    const kind = (links ?? own!).get({ name })?.kind;
    return kind === "tun" || kind === "openvswitch";
  } catch {
    return false;
  }
}

/** How a caller turns a one-line message into its own error type (the helper's, the service's). */
export type LineError = new (message: string, options?: ErrorOptions) => Error;

/** Runs `fn`; an OsError becomes `new fail("<what>: <strerror>")`, the helper's format. */
function step<T>(fail: LineError, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof OsError) throw new fail(`${what}: ${e.strerror}`, { cause: e });
    throw e;
  }
}

/**
 * The helper's step 4, shared with the service: the bridge's own name, settled before the ACL
 * (the kernel also resolves alternative names, so `prod0` would pass a `deny br-prod` and still
 * reach br-prod).
 *
 * @param name The bridge name as asked for.
 * @param fail The caller's error type for a one-line message.
 * @returns The bridge's ifindex, 0 when no interface has that name (a later step fails then with
 * the helper's text).
 * @throws {Error} a `fail` for an alternative name or a failed lookup.
 */
export function canonicalBridge(name: string, fail: LineError): number {
  using links = step(fail, "failed to open netlink socket", () => new Links());
  const found = step(
    fail,
    `failed to look up bridge \`${escapeForMessage(name)}'`,
    () => checkName(links, name),
  );
  if (found.kind === "altname") throw new fail(altnameMessage(name, found.canonical));
  return found.kind === "missing" ? 0 : found.index;
}

/**
 * After SIOCBRADDIF, which takes the bridge by name: the tap's master must be the interface
 * {@linkcode canonicalBridge} returned (by index), and still so named; a rename in between
 * would have put the tap on another interface.
 *
 * @param tap The tap's name.
 * @param bridgeIndex What canonicalBridge() returned.
 * @param bridge The bridge's name.
 * @param fail The caller's error type for a one-line message.
 * @throws {Error} a `fail` when the master is anything else.
 */
export function checkMaster(
  tap: string,
  bridgeIndex: number,
  bridge: string,
  fail: LineError,
): void {
  using links = step(fail, "failed to open netlink socket", () => new Links());
  const port = step(fail, `failed to look up \`${tap}'`, () => links.get({ name: tap }));
  const master = port?.master === undefined
    ? undefined
    : step(fail, `failed to look up bridge \`${escapeForMessage(bridge)}'`, () =>
      links.get({ index: port.master! }));
  if (bridgeIndex === 0 || master?.index !== bridgeIndex || master.name !== bridge) {
    throw new fail(
      `bridge \`${escapeForMessage(bridge)}' changed while \`${tap}' was added to it: refusing`,
    );
  }
}
