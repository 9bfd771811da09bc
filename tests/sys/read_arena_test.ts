// ReadArena: read(2) into a buffer at an offset through an address taken once (the batch
// readers of net/netdev.ts), one read or many (readMany, writeMany: io_uring). What keeps it
// memory-safe: bounds checks and a detached buffer.

import assert from "node:assert/strict";
import {
  ioBuffersInFlight,
  ReadArena,
  RING_BATCH,
  ringInUse,
  ringSafetyNetCheck,
  writeMany,
  writeManyAt,
} from "../../sys/io.ts";
import { close, E, SOCK, socketpair, write } from "../../sys/libc.ts";

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

Deno.test("ReadArena.readMany() reads each datagram into its slot in one call, as a read(2) loop does", () => {
  for (const useRing of [true, false]) {
    const [a, b, done] = pair();
    try {
      const arena = new ReadArena(5 * 64);
      arena.bytes.fill(0xee);
      const at = new Uint32Array([0, 64, 128, 192, 256]);
      const out = new Int32Array(5).fill(12345);
      for (const n of [3, 1, 2]) write(b, new Uint8Array(n).fill(n));
      arena.readMany(a, at, 64, 5, out, useRing);
      // Three datagrams, then an empty queue: -EAGAIN, tried (io_uring) or not (read(2) loop).
      assert.deepEqual([...out], [3, 1, 2, -E.EAGAIN, -E.EAGAIN], `useRing ${useRing}`);
      assert.deepEqual([...arena.bytes.subarray(0, 4)], [3, 3, 3, 0xee]);
      assert.deepEqual([...arena.bytes.subarray(64, 66)], [1, 0xee]);
      assert.deepEqual([...arena.bytes.subarray(128, 131)], [2, 2, 0xee]);
      assert.ok(arena.bytes.subarray(192).every((x) => x === 0xee), "an empty read wrote");
    } finally {
      done();
    }
  }
  // The machines this project runs on have io_uring: the batches' speed depends on it.
  assert.ok(ringInUse(), "no io_uring in this process (seccomp, kernel.io_uring_disabled?)");
  // The buffers were held for the system calls only.
  assert.equal(ioBuffersInFlight(), 0);
});

Deno.test("ReadArena.readMany() refuses a slot outside the buffer, or too many, before any read", () => {
  const [a, b, done] = pair();
  try {
    const arena = new ReadArena(128);
    const out = new Int32Array(RING_BATCH + 1);
    write(b, new Uint8Array(8));
    assert.throws(() => arena.readMany(a, new Uint32Array([0, 100]), 64, 2, out), RangeError);
    assert.throws(() => arena.readMany(a, new Uint32Array([0]), 64, 2, out), RangeError);
    const many = new Uint32Array(RING_BATCH + 1);
    assert.throws(() => arena.readMany(a, many, 1, RING_BATCH + 1, out), RangeError);
    const moved = new Uint8Array(arena.bytes.buffer.transfer());
    assert.throws(() => arena.readMany(a, new Uint32Array([0, 0]), 8, 2, out), /detached/);
    assert.ok(moved.every((x) => x === 0), "a read wrote into the transferred memory");
    // The datagram is still there: no read happened.
    const fresh = new ReadArena(64);
    assert.equal(fresh.read(a, 0, 64), 8);
  } finally {
    done();
  }
});

Deno.test("writeMany() sends each frame as one write, in order, with io_uring and without", () => {
  for (const useRing of [true, false]) {
    const [a, b, done] = pair();
    try {
      const frames = [5, 1, 3].map((n) => new Uint8Array(new ArrayBuffer(n)).fill(n));
      // A view into a larger buffer goes from its own offset.
      const big = new Uint8Array(new ArrayBuffer(16)).fill(9);
      big.set([4, 4], 10);
      frames.push(big.subarray(10, 12));
      const out = new Int32Array(4);
      writeMany(b, frames, 4, out, useRing);
      assert.deepEqual([...out], [5, 1, 3, 2], `useRing ${useRing}`);
      const arena = new ReadArena(64);
      for (const want of [[5, 5], [1, 1], [3, 3], [2, 4]]) {
        assert.equal(arena.read(a, 0, 64), want[0]);
        assert.ok(arena.bytes.subarray(0, want[0]).every((x) => x === want[1]));
      }
      assert.equal(arena.read(a, 0, 64), -E.EAGAIN);
    } finally {
      done();
    }
  }
});

Deno.test("writeManyAt() sends each range of one buffer as one write, in order, with io_uring and without", () => {
  for (const useRing of [true, false]) {
    const [a, b, done] = pair();
    try {
      const bytes = new Uint8Array(new ArrayBuffer(64)).map((_, i) => i);
      const at = new Uint32Array([40, 0, 17]);
      const len = new Uint32Array([3, 5, 1]);
      const out = new Int32Array(3);
      writeManyAt(b, bytes, at, len, 3, out, useRing);
      assert.deepEqual([...out], [3, 5, 1], `useRing ${useRing}`);
      const arena = new ReadArena(64);
      for (const want of [[40, 41, 42], [0, 1, 2, 3, 4], [17]]) {
        assert.equal(arena.read(a, 0, 64), want.length);
        assert.deepEqual([...arena.bytes.subarray(0, want.length)], want);
      }
      assert.equal(arena.read(a, 0, 64), -E.EAGAIN);
    } finally {
      done();
    }
  }
});

Deno.test("writeManyAt() refuses a range outside the buffer, an empty one or a detached buffer, before any write", () => {
  const [a, b, done] = pair();
  try {
    const out = new Int32Array(2);
    const bytes = new Uint8Array(new ArrayBuffer(64));
    for (const [at, len] of [[60, 8], [0, 65], [64, 1], [0, 0], [0xffffffff, 2]]) {
      assert.throws(
        () => writeManyAt(b, bytes, new Uint32Array([0, at!]), new Uint32Array([4, len!]), 2, out),
        RangeError,
        `at ${at}, len ${len}`,
      );
    }
    assert.throws(
      () => writeManyAt(b, bytes, new Uint32Array(1), new Uint32Array([4]), 2, out),
      RangeError,
      "more writes than ranges",
    );
    const gone = new Uint8Array(new ArrayBuffer(64));
    gone.buffer.transfer();
    assert.throws(
      () => writeManyAt(b, gone, new Uint32Array([0]), new Uint32Array([4]), 1, out),
      RangeError,
    );
    // Nothing was written.
    assert.equal(new ReadArena(64).read(a, 0, 64), -E.EAGAIN);
  } finally {
    done();
  }
});

Deno.test("writeMany() writes views at their own offsets, and an empty or detached one as empty", () => {
  const [a, b, done] = pair();
  try {
    const shared = new Uint8Array(new ArrayBuffer(32)).map((_, i) => i);
    const gone = new Uint8Array(new ArrayBuffer(8)).fill(1);
    gone.buffer.transfer();
    // Same buffer twice (its address is taken once), then an empty view and a detached one.
    const frames = [shared.subarray(4, 8), shared.subarray(20, 23), shared.subarray(0, 0), gone];
    const out = new Int32Array(4);
    writeMany(b, frames as Uint8Array<ArrayBuffer>[], 4, out);
    assert.deepEqual([...out], [4, 3, 0, 0]);
    const arena = new ReadArena(64);
    assert.equal(arena.read(a, 0, 64), 4);
    assert.deepEqual([...arena.bytes.subarray(0, 4)], [4, 5, 6, 7]);
    assert.equal(arena.read(a, 0, 64), 3);
    assert.deepEqual([...arena.bytes.subarray(0, 3)], [20, 21, 22]);
  } finally {
    done();
  }
});

Deno.test("a request the kernel parks (no RWF_NOWAIT) is cancelled and waited for, and the ring retired", () => {
  const [a, b, done] = pair();
  try {
    // Nothing to read on `a`: without RWF_NOWAIT the kernel arms a poll and the read stays out.
    const got = ringSafetyNetCheck(a);
    assert.ok(got, "no io_uring here");
    assert.deepEqual(got, { result: -125, broken: true }); // ECANCELED
    assert.equal(ioBuffersInFlight(), 0);
    // The cancelled read took nothing: a datagram sent now is still there for read(2).
    write(b, new Uint8Array([7]));
    assert.equal(new ReadArena(8).read(a, 0, 8), 1);
  } finally {
    done();
  }
});
