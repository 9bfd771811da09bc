// rtnetlink's RTM_GETLINK on the wire (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h):
// the request for one interface, by name or by index, and the parse of the kernel's reply.
// Pure: no I/O, so the layouts are tested without a kernel.

/** Message types and flags used here. */
export const NL = {
  NLMSG_ERROR: 2,
  RTM_NEWLINK: 16,
  RTM_GETLINK: 18,
  NLM_F_REQUEST: 1,
  NETLINK_ROUTE: 0,
} as const;

/** Interface attributes used here (IFLA_*). */
export const IFLA = {
  IFNAME: 3,
  MASTER: 10,
  LINKINFO: 18,
  INFO_KIND: 1,
  EXT_MASK: 29,
} as const;

/** RTEXT_FILTER_SKIP_STATS: leave the counters out of the reply, which keeps it small. */
const RTEXT_FILTER_SKIP_STATS = 1 << 3;

const NLMSG_HDRLEN = 16;
const IFINFOMSG_LEN = 16;
const align4 = (n: number) => (n + 3) & ~3;

/** One interface as RTM_NEWLINK describes it. */
export interface Link {
  /** ifindex. */
  index: number;
  /** The interface's own (canonical) name: never an alternative name. */
  name: string;
  /** The ifindex of its master (the bridge it is a port of), when it has one. */
  master?: number;
  /** The link kind ("bridge", "tun", "veth", ...), when the driver reports one. */
  kind?: string;
}

/**
 * Builds an RTM_GETLINK request for one interface: by `index` (> 0), or by `name`, which the
 * kernel resolves like every other name it accepts, alternative names included.
 *
 * @param query The interface, by ifindex or by name (a valid interface name).
 * @param seq The sequence number the reply must carry.
 * @returns The request bytes, for one write(2) on a NETLINK_ROUTE socket.
 */
export function getLinkRequest(
  query: { index: number } | { name: string },
  seq: number,
): Uint8Array<ArrayBuffer> {
  const name = "name" in query ? new TextEncoder().encode(query.name) : undefined;
  const attrs = 8 /* IFLA_EXT_MASK */ + (name ? align4(4 + name.length + 1) : 0);
  const len = NLMSG_HDRLEN + IFINFOMSG_LEN + attrs;
  const buf = new Uint8Array(new ArrayBuffer(len));
  const v = new DataView(buf.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, NL.RTM_GETLINK, true);
  v.setUint16(6, NL.NLM_F_REQUEST, true);
  v.setUint32(8, seq, true);
  // ifinfomsg: family AF_UNSPEC, index (0 to look up by name).
  v.setInt32(NLMSG_HDRLEN + 4, "index" in query ? query.index : 0, true);
  let off = NLMSG_HDRLEN + IFINFOMSG_LEN;
  v.setUint16(off, 8, true);
  v.setUint16(off + 2, IFLA.EXT_MASK, true);
  v.setUint32(off + 4, RTEXT_FILTER_SKIP_STATS, true);
  off += 8;
  if (name) {
    v.setUint16(off, 4 + name.length + 1, true);
    v.setUint16(off + 2, IFLA.IFNAME, true);
    buf.set(name, off + 4); // the NUL and the padding are the buffer's zeros
  }
  return buf;
}

/**
 * Parses the kernel's reply to {@linkcode getLinkRequest}.
 *
 * @param reply The bytes of one read(2).
 * @param seq The request's sequence number.
 * @returns The link, or a negative errno from an NLMSG_ERROR reply (-19 ENODEV: no such
 * interface).
 * @throws {RangeError} for a reply that is truncated, malformed or not for `seq`.
 */
export function parseLinkReply(reply: Uint8Array, seq: number): Link | number {
  const v = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
  if (reply.length < NLMSG_HDRLEN) throw new RangeError("Netlink reply too short");
  const len = v.getUint32(0, true);
  const type = v.getUint16(4, true);
  if (len < NLMSG_HDRLEN || len > reply.length) {
    throw new RangeError(`Netlink reply truncated: ${len} bytes announced, ${reply.length} read`);
  }
  if (v.getUint32(8, true) !== seq) throw new RangeError("Netlink reply for another request");
  if (type === NL.NLMSG_ERROR) {
    if (len < NLMSG_HDRLEN + 4) throw new RangeError("Netlink error reply too short");
    const err = v.getInt32(NLMSG_HDRLEN, true);
    if (err >= 0) throw new RangeError("Netlink acknowledgement where a link was expected");
    return err;
  }
  if (type !== NL.RTM_NEWLINK || len < NLMSG_HDRLEN + IFINFOMSG_LEN) {
    throw new RangeError(`Unexpected netlink reply type ${type}`);
  }
  const link: Link = { index: v.getInt32(NLMSG_HDRLEN + 4, true), name: "" };
  let hasName = false;
  const attrs = (
    start: number,
    end: number,
    each: (type: number, at: number, n: number) => void,
  ) => {
    for (let off = start; off + 4 <= end;) {
      const alen = v.getUint16(off, true);
      if (alen < 4 || off + alen > end) throw new RangeError("Malformed netlink attribute");
      each(v.getUint16(off + 2, true) & 0x3fff, off + 4, alen - 4);
      off += align4(alen);
    }
  };
  const text = (at: number, n: number) => {
    const raw = reply.subarray(at, at + n);
    const nul = raw.indexOf(0);
    return new TextDecoder().decode(nul < 0 ? raw : raw.subarray(0, nul));
  };
  attrs(NLMSG_HDRLEN + IFINFOMSG_LEN, len, (t, at, n) => {
    if (t === IFLA.IFNAME) {
      link.name = text(at, n);
      hasName = true;
    } else if (t === IFLA.MASTER && n >= 4) {
      link.master = v.getUint32(at, true);
    } else if (t === IFLA.LINKINFO) {
      attrs(at, at + n, (it, iat, inn) => {
        if (it === IFLA.INFO_KIND) link.kind = text(iat, inn);
      });
    }
  });
  if (!hasName || link.index <= 0) throw new RangeError("Netlink link reply without name or index");
  return link;
}
