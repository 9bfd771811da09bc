// ReadArena: read(2) into a buffer at an offset through an address taken once (the batch
// readers of net/netdev.ts). What keeps it memory-safe: bounds checks and a detached buffer.

import assert from "node:assert/strict";
import { close, E, ReadArena, SOCK, socketpair, write } from "../../sys/libc.ts";

function pair(): [number, number, () => void] {
  const [a, b] = socketpair(SOCK.AF_UNIX, SOCK.DGRAM | SOCK.NONBLOCK);
  return [a, b, () => (close(a), close(b))];
}

Deno.test("ReadArena.read() fills the buffer at the offset asked, and nothing else", () => {
  const [a, b, done] = pair();
  try {
    const arena = new ReadArena(64);
    arena.bytes.fill(0xee);
    write(b, new Uint8Array([1, 2, 3, 4, 5]));
    assert.equal(arena.read(a, 9, 8), 5);
    assert.deepEqual([...arena.bytes.subarray(7, 16)], [0xee, 0xee, 1, 2, 3, 4, 5, 0xee, 0xee]);
    // Nothing waiting: -EAGAIN, never a throw.
    assert.equal(arena.read(a, 0, 64), -E.EAGAIN);
  } finally {
    done();
  }
});

Deno.test("ReadArena.read() refuses a range outside the buffer before any read(2)", () => {
  const [a, b, done] = pair();
  try {
    const arena = new ReadArena(64);
    write(b, new Uint8Array(32));
    for (const [at, len] of [[60, 8], [-1, 4], [0, 65], [64, 1], [Number.NaN, 1], [0, -1]]) {
      assert.throws(() => arena.read(a, at!, len!), RangeError, `at ${at}, len ${len}`);
    }
    // The datagram is still there: no read happened.
    assert.equal(arena.read(a, 0, 64), 32);
  } finally {
    done();
  }
});

Deno.test("ReadArena.read() refuses once the buffer was transferred, and the new owner's memory is left alone", () => {
  const [a, b, done] = pair();
  try {
    const arena = new ReadArena(64);
    const moved = new Uint8Array(arena.bytes.buffer.transfer());
    moved.fill(7);
    write(b, new Uint8Array([1, 2, 3]));
    assert.throws(() => arena.read(a, 0, 16), RangeError, "detached");
    assert.ok(moved.every((x) => x === 7), "read(2) wrote into the transferred memory");
  } finally {
    done();
  }
});
