// Tests for sys/netlink.ts: the RTM_GETLINK request bytes and the parse of replies, without a
// kernel (the privileged tests exercise the real thing).

import assert from "node:assert/strict";
import { getLinkRequest, IFLA, NL, parseLinkReply } from "../../sys/netlink.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

/** A reply: nlmsghdr, ifinfomsg with `index`, then `attrs` ([type, payload]). */
function reply(seq: number, index: number, attrs: Array<[number, Uint8Array]>): Uint8Array {
  const parts = attrs.map(([type, data]) => {
    const a = new Uint8Array((4 + data.length + 3) & ~3);
    new DataView(a.buffer).setUint16(0, 4 + data.length, true);
    new DataView(a.buffer).setUint16(2, type, true);
    a.set(data, 4);
    return a;
  });
  const len = 32 + parts.reduce((n, p) => n + p.length, 0);
  const buf = new Uint8Array(len);
  const v = new DataView(buf.buffer);
  v.setUint32(0, len, true);
  v.setUint16(4, NL.RTM_NEWLINK, true);
  v.setUint32(8, seq, true);
  v.setInt32(20, index, true);
  let off = 32;
  for (const p of parts) {
    buf.set(p, off);
    off += p.length;
  }
  return buf;
}
const str = (s: string) => new TextEncoder().encode(s + "\0");
const u32 = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);

test("getLinkRequest() asks by name with IFLA_IFNAME, NUL-terminated and padded", () => {
  const req = getLinkRequest({ name: "prod0" }, 7);
  const v = new DataView(req.buffer);
  assert.equal(v.getUint32(0, true), req.length);
  assert.equal(req.length, 16 + 16 + 8 + 12);
  assert.equal(v.getUint16(4, true), NL.RTM_GETLINK);
  assert.equal(v.getUint16(6, true), NL.NLM_F_REQUEST);
  assert.equal(v.getUint32(8, true), 7);
  assert.equal(v.getInt32(20, true), 0, "index 0: look up by name");
  assert.equal(v.getUint16(40, true), 4 + 6);
  assert.equal(v.getUint16(42, true), IFLA.IFNAME);
  assert.deepEqual([...req.subarray(44, 52)], [...new TextEncoder().encode("prod0"), 0, 0, 0]);
});

test("getLinkRequest() asks by index without a name", () => {
  const req = getLinkRequest({ index: 42 }, 1);
  assert.equal(req.length, 40);
  assert.equal(new DataView(req.buffer).getInt32(20, true), 42);
});

test("parseLinkReply() reads index, own name, master and kind", () => {
  const info = new Uint8Array([...[9, 0, IFLA.INFO_KIND, 0], ...str("tun"), 0, 0, 0]);
  const r = reply(3, 12, [[IFLA.IFNAME, str("tap0")], [IFLA.MASTER, u32(5)], [
    IFLA.LINKINFO,
    info.subarray(0, 12),
  ]]);
  assert.deepEqual(parseLinkReply(r, 3), { index: 12, name: "tap0", master: 5, kind: "tun" });
});

test("parseLinkReply() returns the errno of an error reply, and refuses bad replies", () => {
  const err = new Uint8Array(36);
  const v = new DataView(err.buffer);
  v.setUint32(0, 36, true);
  v.setUint16(4, NL.NLMSG_ERROR, true);
  v.setUint32(8, 4, true);
  v.setInt32(16, -19, true);
  assert.equal(parseLinkReply(err, 4), -19);
  assert.throws(() => parseLinkReply(err, 5), RangeError);
  const ok = reply(1, 2, [[IFLA.IFNAME, str("br0")]]);
  assert.throws(() => parseLinkReply(ok.subarray(0, ok.length - 4), 1), /truncated/);
  assert.throws(() => parseLinkReply(reply(1, 2, []), 1), /without name/);
});
