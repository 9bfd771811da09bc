// Tests for net/netdev.ts and tapNetdev() that need no tap: the virtio-net header parser, and
// the checks that turn a wrong fd or name into an error before any frame moves. Frames through
// real taps are in tests/privileged/netdev_test.ts.

import assert from "node:assert/strict";
import { tapNetdev } from "../../net/open.ts";
import { Netdev, parseProcNetDev, parseVnetHeader } from "../../net/netdev.ts";
import { Fd } from "../../sys/fd.ts";
import { close, isOpen, O, open, OsError, SOCK, socketpair } from "../../sys/libc.ts";

Deno.test({
  name: "parseVnetHeader() reads the 10-byte header, little-endian, without num_buffers",
  permissions: "none",
  fn() {
    const h = Uint8Array.of(0x01, 0x04, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00);
    assert.deepEqual(parseVnetHeader(h), {
      flags: 1, // VIRTIO_NET_HDR_F_NEEDS_CSUM
      gsoType: 4, // VIRTIO_NET_HDR_GSO_TCPV6
      hdrLen: 0x36,
      gsoSize: 1448,
      csumStart: 0x22,
      csumOffset: 0x10,
    });
  },
});

Deno.test({
  name: "parseVnetHeader() reads num_buffers from a 12-byte header",
  permissions: "none",
  fn() {
    const h = new Uint8Array(12);
    h[10] = 0x02;
    h[11] = 0x01;
    assert.deepEqual(parseVnetHeader(h), {
      flags: 0,
      gsoType: 0,
      hdrLen: 0,
      gsoSize: 0,
      csumStart: 0,
      csumOffset: 0,
      numBuffers: 0x0102,
    });
  },
});

Deno.test({
  name: "parseVnetHeader() reads a header inside a larger buffer at its own offset",
  permissions: "none",
  fn() {
    const buf = new Uint8Array(40).fill(0xff);
    buf.set([0x02, 0, 0x0e, 0, 0, 0, 0, 0, 0, 0], 20);
    assert.deepEqual(parseVnetHeader(buf.subarray(20, 30)), {
      flags: 2, // VIRTIO_NET_HDR_F_DATA_VALID
      gsoType: 0,
      hdrLen: 14,
      gsoSize: 0,
      csumStart: 0,
      csumOffset: 0,
    });
  },
});

Deno.test({
  name: "parseVnetHeader() rejects any length but 10 and 12",
  permissions: "none",
  fn() {
    for (const n of [0, 9, 11, 13, 20]) {
      assert.throws(() => parseVnetHeader(new Uint8Array(n)), {
        name: "RangeError",
        message: `A virtio-net header is 10 or 12 bytes, got ${n}`,
      });
    }
  },
});

Deno.test("new Netdev() rejects an fd that is not a tun/tap, and leaves it open", () => {
  using fd = new Fd(open("/dev/null", O.RDWR));
  assert.throws(
    () => new Netdev(fd.value),
    (e: unknown) => e instanceof OsError && e.syscall === "ioctl(TUNGETIFF)" && e.code === "ENOTTY",
  );
  assert.equal(isOpen(fd.value), true);
});

Deno.test("tapNetdev({ fd }) rejects (never throws) for a socket, and the fd stays the caller's", async () => {
  const [a, b] = socketpair(SOCK.AF_UNIX, SOCK.STREAM);
  try {
    let p: Promise<Netdev> | undefined;
    // A rejected promise, not a synchronous throw: `tapNetdev(...).catch()` must see it.
    assert.doesNotThrow(() => (p = tapNetdev({ fd: a })));
    await assert.rejects(p!, (e: unknown) => e instanceof OsError && e.code === "ENOTTY");
    assert.equal(isOpen(a), true);
  } finally {
    close(a);
    close(b);
  }
});

Deno.test({
  name: "tapNetdev({ fd }) rejects a negative or fractional fd with a RangeError",
  permissions: "none",
  async fn() {
    await assert.rejects(tapNetdev({ fd: -1 }), {
      name: "RangeError",
      message: "Invalid file descriptor: -1",
    });
    await assert.rejects(tapNetdev({ fd: 3.5 }), {
      name: "RangeError",
      message: "Invalid file descriptor: 3.5",
    });
  },
});

Deno.test({
  name: "tapNetdev({ ifname }) rejects an invalid interface name before opening anything",
  // No FFI permission: the name is checked before /dev/net/tun is touched.
  permissions: "none",
  async fn() {
    await assert.rejects(tapNetdev({ ifname: "tap 7" }), {
      name: "RangeError",
      message: "invalid interface name `tap 7': contains the whitespace byte 0x20",
    });
    await assert.rejects(tapNetdev({ ifname: "0123456789abcdef" }), {
      name: "RangeError",
      message: "name `0123456789abcdef' too long: 16",
    });
    await assert.rejects(tapNetdev({ ifname: "" }), {
      name: "RangeError",
      message: "invalid interface name `': empty",
    });
  },
});

Deno.test({
  name: "parseProcNetDev() reads one interface's counters from /proc/net/dev",
  permissions: "none",
  fn() {
    const text = [
      "Inter-|   Receive                                                |  Transmit",
      " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed",
      "    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0",
      "  tap10:  123456     789    1    2    0     0          0         0   654321     987    0   42    0     0       0          0",
    ].join("\n");
    assert.deepEqual(parseProcNetDev(text, "tap10"), {
      rxBytes: 123456,
      rxPackets: 789,
      rxDropped: 2,
      txBytes: 654321,
      txPackets: 987,
      txDropped: 42,
    });
    // A prefix of another name is not a match.
    assert.throws(() => parseProcNetDev(text, "tap1"), {
      name: "SyntaxError",
      message: "No counters for `tap1' in /proc/net/dev",
    });
  },
});
