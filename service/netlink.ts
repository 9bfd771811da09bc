// Two rtnetlink requests the service needs and ioctls cannot do: label a tap with who asked
// (IFLA_IFALIAS, shown by `ip link`) and delete a tap a client made persistent (RTM_DELLINK).
// The messages are built by pure functions; the I/O is one write and one read of the ack.

import { Fd } from "../sys/fd.ts";
import { E, OsError, recvMessage, socket, write } from "../sys/libc.ts";

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const NETLINK_ROUTE = 0;
const RTM_DELLINK = 17;
const RTM_SETLINK = 19;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const IFLA_IFALIAS = 20;

/** The longest ifalias the kernel keeps (IFALIASZ - 1). */
export const MAX_IFALIAS = 255;

/**
 * Builds one rtnetlink link message: nlmsghdr, ifinfomsg for `ifindex`, and optionally an
 * IFLA_IFALIAS attribute. Pure.
 *
 * @param type RTM_SETLINK (19) or RTM_DELLINK (17).
 * @param ifindex The interface index.
 * @param seq The sequence number echoed in the ack.
 * @param alias The alias text for RTM_SETLINK.
 * @returns The message bytes.
 * @throws {RangeError} for an alias longer than MAX_IFALIAS bytes.
 */
export function linkMessage(
  type: number,
  ifindex: number,
  seq: number,
  alias?: string,
): Uint8Array<ArrayBuffer> {
  const text = alias === undefined ? undefined : new TextEncoder().encode(alias);
  if (text !== undefined && text.length > MAX_IFALIAS) {
    throw new RangeError(`Interface alias longer than ${MAX_IFALIAS} bytes`);
  }
  const attrLen = text === undefined ? 0 : 4 + text.length + 1;
  const total = 16 + 16 + ((attrLen + 3) & ~3);
  const buf = new Uint8Array(new ArrayBuffer(total));
  const v = new DataView(buf.buffer);
  v.setUint32(0, total, true); // nlmsg_len
  v.setUint16(4, type, true); // nlmsg_type
  v.setUint16(6, NLM_F_REQUEST | NLM_F_ACK, true); // nlmsg_flags
  v.setUint32(8, seq, true); // nlmsg_seq
  // ifinfomsg: family AF_UNSPEC, type 0, the index, flags and change 0.
  v.setInt32(16 + 4, ifindex, true);
  if (text !== undefined) {
    v.setUint16(32, attrLen, true); // rta_len, with the NUL
    v.setUint16(34, IFLA_IFALIAS, true);
    buf.set(text, 36);
  }
  return buf;
}

/**
 * Reads the errno of an rtnetlink ack (0 for success). Pure.
 *
 * @param bytes The received message.
 * @param seq The sequence number of the request.
 * @returns 0, or a positive errno.
 * @throws {SyntaxError} when the bytes are not the ack of that request.
 */
export function ackErrno(bytes: Uint8Array, seq: number): number {
  if (bytes.length < 20) throw new SyntaxError(`Netlink ack too short: ${bytes.length} bytes`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint16(4, true) !== NLMSG_ERROR) {
    throw new SyntaxError(`Netlink reply is type ${v.getUint16(4, true)}, not an ack`);
  }
  if (v.getUint32(8, true) !== seq) throw new SyntaxError("Netlink ack for another request");
  return -v.getInt32(16, true);
}

let seq = 0;

function request(type: number, ifindex: number, what: string, alias?: string): void {
  using sock = new Fd(socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE));
  const n = ++seq;
  const msg = linkMessage(type, ifindex, n, alias);
  if (write(sock.value, msg, what) !== msg.length) throw new OsError(what, E.ENOBUFS);
  // The kernel handles an rtnetlink request inside sendmsg, so the ack is already queued.
  const got = recvMessage(sock.value, 4096);
  if (got === undefined) throw new OsError(what, E.EAGAIN);
  const err = ackErrno(got.data, n);
  if (err !== 0) throw new OsError(what, err);
}

/** Sets the interface alias of `ifindex` (what `ip link` shows as `alias`). */
export function setIfAlias(ifindex: number, alias: string): void {
  request(RTM_SETLINK, ifindex, "netlink(RTM_SETLINK IFLA_IFALIAS)", alias);
}

/** Deletes the interface `ifindex`; an attached tap fd then reads EBADFD. */
export function deleteLink(ifindex: number): void {
  request(RTM_DELLINK, ifindex, "netlink(RTM_DELLINK)");
}
