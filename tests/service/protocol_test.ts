// The service's pure parts: the wire format, the command line, audit lines, the permission rule,
// the netlink messages and the capability check.

import assert from "node:assert/strict";
import {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  MAX_REQUEST,
  MAX_TEXT,
  OP,
  ProtocolError,
  STATUS,
} from "../../service/protocol.ts";
import { parseServiceArgs } from "../../service/args.ts";
import { auditLine, auditValue } from "../../service/audit.ts";
import { mayAccess } from "../../service/policy.ts";
import { ackErrno, linkMessage } from "../../service/netlink.ts";
import { capsProblem } from "../../service/caps.ts";

const req = (op: number, bridge: string, vnetHdr = false) => encodeRequest({ op, bridge, vnetHdr });

function refused(bytes: Uint8Array, truncated = false): ProtocolError {
  try {
    decodeRequest(bytes, truncated);
  } catch (e) {
    assert.ok(e instanceof ProtocolError);
    return e;
  }
  throw new Error("decodeRequest() accepted it");
}

Deno.test({
  name: "decodeRequest() round-trips open and list requests",
  permissions: "none",
  fn() {
    assert.deepEqual(decodeRequest(req(OP.OPEN, "br0", true), false), {
      op: OP.OPEN,
      bridge: "br0",
      vnetHdr: true,
    });
    assert.deepEqual(decodeRequest(req(OP.LIST, ""), false), {
      op: OP.LIST,
      bridge: "",
      vnetHdr: false,
    });
    assert.deepEqual(
      req(OP.OPEN, "br0"),
      new Uint8Array([86, 77, 66, 82, 1, 1, 0, 3, 98, 114, 48]),
    );
  },
});

Deno.test({
  name: "decodeRequest() rejects every malformed request with BAD_REQUEST and a reason",
  permissions: "none",
  fn() {
    const ok = req(OP.OPEN, "br0");
    const patch = (i: number, v: number) => {
      const m = ok.slice();
      m[i] = v;
      return m;
    };
    const cases: Array<[Uint8Array, RegExp, boolean?]> = [
      [new Uint8Array(0), /0 bytes, shorter than the header/],
      [ok.subarray(0, 7), /7 bytes/],
      [patch(0, 0x58), /not a vm-bridge message/],
      [patch(5, 3), /unknown operation 3/],
      [patch(6, 4), /unknown flags 0x4/],
      [patch(6, 2), /iface-id length 0 is not 1 to 128/],
      [patch(7, 4), /does not match the name length 4/],
      [ok, /longer than 152 bytes/, true],
      [req(OP.LIST, "br0"), /a list request names no bridge/],
      [req(OP.OPEN, ""), /no bridge named/],
      [new Uint8Array([...ok.subarray(0, 7), 2, 0xff, 0xfe]), /not UTF-8/],
      [new Uint8Array([...ok.subarray(0, 7), 2, 0x62, 0]), /NUL/],
    ];
    for (const [bytes, re, truncated] of cases) {
      const e = refused(bytes, truncated ?? false);
      assert.equal(e.status, STATUS.BAD_REQUEST, e.message);
      assert.match(e.message, /^bad request: /);
      assert.match(e.message, re);
    }
    const v = refused(patch(4, 2));
    assert.equal(v.status, STATUS.VERSION);
    assert.equal(v.message, "unsupported protocol version 2: this service speaks version 1");
  },
});

Deno.test({
  name: "encodeReply() and decodeReply() round-trip; long text is cut at a character",
  permissions: "none",
  fn() {
    const r = { status: STATUS.FAILED, text: "failed to get mtu of bridge `brü': No such device" };
    assert.deepEqual(decodeReply(encodeReply(r)), r);
    const long = decodeReply(encodeReply({ status: 0, text: "ä".repeat(MAX_TEXT) }));
    assert.ok(long.text.endsWith("..."));
    assert.ok(new TextEncoder().encode(long.text).length <= MAX_TEXT);
    const bad = encodeReply(r);
    bad[4] = 2;
    assert.throws(() => decodeReply(bad), /bad reply: protocol version 2/);
    assert.throws(() => decodeReply(encodeReply(r).subarray(0, 9)), /does not match/);
  },
});

Deno.test({
  name: "parseServiceArgs() takes each option once, numbers exactly, absolute paths",
  permissions: "none",
  fn() {
    assert.deepEqual(parseServiceArgs(["--listen=/run/x", "--max-taps-per-user", "3"]), {
      listen: "/run/x",
      maxTapsPerUser: 3,
      timeoutMs: 5000,
      maxClients: 256,
      sweepMs: 1000,
      ovsdb: "/var/run/openvswitch/db.sock",
    });
    assert.equal(parseServiceArgs(["--ovsdb", "/tmp/o/db.sock"]).ovsdb, "/tmp/o/db.sock");
    for (
      const bad of [
        ["--listen", "rel"],
        ["--listen"],
        ["--ovsdb", "db.sock"],
        ["--ovsdb"],
        ["--timeout-ms", "0"],
        ["--timeout-ms", "+5"],
        ["--max-clients", "1", "--max-clients", "2"],
        ["--verbose"],
        ["x"],
      ]
    ) {
      assert.throws(() => parseServiceArgs(bad), RangeError, bad.join(" "));
    }
  },
});

Deno.test({
  name: "auditLine() quotes client-chosen values so they cannot forge fields or lines",
  permissions: "none",
  fn() {
    assert.equal(auditValue("qemu-system-x86"), "qemu-system-x86");
    assert.equal(auditValue(""), '""');
    assert.equal(auditValue('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(auditValue("é"), '"\\xc3\\xa9"');
    const line = auditLine(new Date(0), [["comm", "x\ndecision=allow"], ["uid", 5]]);
    assert.equal(line, 'time=1970-01-01T00:00:00.000Z comm="x\\x0adecision=allow" uid=5');
    assert.equal(line.split("\n").length, 1);
  },
});

Deno.test({
  name: "mayAccess() applies owner, then group (primary or supplementary), then other bits",
  permissions: "none",
  fn() {
    const who = { uid: 1000, gid: 1000, groups: [50] };
    assert.equal(mayAccess({ uid: 1000, gid: 0, mode: 0o100040 }, who, 4), false, "owner bits win");
    assert.equal(mayAccess({ uid: 0, gid: 1000, mode: 0o100640 }, who, 4), true);
    assert.equal(mayAccess({ uid: 0, gid: 50, mode: 0o100604 }, who, 4), false, "group bits win");
    assert.equal(mayAccess({ uid: 0, gid: 7, mode: 0o100604 }, who, 4), true);
    assert.equal(mayAccess({ uid: 0, gid: 50, mode: 0o040750 }, who, 1), true);
    assert.equal(mayAccess({ uid: 0, gid: 51, mode: 0o040750 }, who, 1), false);
    assert.equal(mayAccess({ uid: 0, gid: 0, mode: 0o100000 }, { ...who, uid: 0 }, 4), true);
  },
});

Deno.test({
  name: "linkMessage() builds RTM_SETLINK with IFLA_IFALIAS; ackErrno() reads the ack",
  permissions: "none",
  fn() {
    const m = linkMessage(19, 7, 42, "ab");
    const v = new DataView(m.buffer);
    assert.equal(m.length, 40);
    assert.equal(v.getUint32(0, true), 40);
    assert.equal(v.getUint16(4, true), 19);
    assert.equal(v.getUint16(6, true), 5);
    assert.equal(v.getUint32(8, true), 42);
    assert.equal(v.getInt32(20, true), 7);
    assert.deepEqual([...m.subarray(32, 39)], [7, 0, 20, 0, 97, 98, 0]);
    assert.equal(linkMessage(17, 7, 1).length, 32);
    assert.throws(() => linkMessage(19, 1, 1, "x".repeat(256)), RangeError);
    const ack = new Uint8Array(36);
    const av = new DataView(ack.buffer);
    av.setUint16(4, 2, true);
    av.setUint32(8, 42, true);
    av.setInt32(16, -16, true);
    assert.equal(ackErrno(ack, 42), 16);
    assert.throws(() => ackErrno(ack, 43), SyntaxError);
  },
});

Deno.test({
  name: "capsProblem() accepts CAP_NET_ADMIN alone and names any other capability",
  permissions: "none",
  fn() {
    const ok = "CapInh:\t0000000000000000\nCapPrm:\t0000000000001000\n" +
      "CapEff:\t0000000000001000\nCapBnd:\t0000000000001000\nCapAmb:\t0000000000000000\n";
    assert.equal(capsProblem(ok), undefined);
    assert.equal(
      capsProblem(ok.replace("CapEff:\t0000000000001000", "CapEff:\t0000000000003000")),
      "holds more than CAP_NET_ADMIN: CapEff=0000000000003000",
    );
    assert.equal(capsProblem(ok.replace(/CapAmb.*\n/, "")), "has no readable CapAmb");
  },
});

Deno.test({
  name: "an iface-id travels after the bridge name under FLAG.IFACE_ID, and is checked",
  permissions: "none",
  fn() {
    const bytes = encodeRequest({ op: OP.OPEN, bridge: "sw0", vnetHdr: false, ifaceId: "al:vm1" });
    assert.deepEqual(
      bytes,
      new Uint8Array([86, 77, 66, 82, 1, 1, 2, 3, 115, 119, 48, 6, 97, 108, 58, 118, 109, 49]),
    );
    assert.deepEqual(decodeRequest(bytes, false), {
      op: OP.OPEN,
      bridge: "sw0",
      vnetHdr: false,
      ifaceId: "al:vm1",
    });
    const long = "x".repeat(128);
    const max = encodeRequest({
      op: OP.OPEN,
      bridge: "b".repeat(15),
      vnetHdr: true,
      ifaceId: long,
    });
    assert.equal(max.length, MAX_REQUEST);
    assert.equal(decodeRequest(max, false).ifaceId, long);
    const cases: Array<[Uint8Array, RegExp]> = [
      [bytes.subarray(0, bytes.length - 1), /does not match the name and iface-id lengths 3, 6/],
      [new Uint8Array([...bytes, 0x41]), /does not match/],
      [new Uint8Array([...bytes.subarray(0, 12), 0x20, ...bytes.subarray(13)]), /characters other/],
      [new Uint8Array([86, 77, 66, 82, 1, 2, 2, 0, 1, 0x41]), /only an open request/],
      [
        new Uint8Array(
          [...bytes.subarray(0, 11), 129, ...long, "x"].map((c) =>
            typeof c === "string" ? c.charCodeAt(0) : c
          ),
        ),
        /iface-id length 129/,
      ],
    ];
    for (const [b, re] of cases) {
      const e = refused(b, false);
      assert.equal(e.status, STATUS.BAD_REQUEST, e.message);
      assert.match(e.message, re);
    }
    assert.throws(
      () => encodeRequest({ op: OP.OPEN, bridge: "sw0", vnetHdr: false, ifaceId: "" }),
      RangeError,
    );
  },
});
