// The library's I/O, the other half of the unsafe boundary (with sys/libc.ts): frame I/O (raw
// read(2) and write(2) for hot loops, batches of them in one system call through an io_uring,
// read buffers whose address is taken once), epoll readiness, and spawning the helper. The
// helper and the bridge service never load this file (tests/helper_graph_test.ts checks the
// helper and its guard): none of it is on a privileged path, and its code would only slow their
// start-up.

import { cstr, E, F, fcntl, LIBC_PATH, O, OsError, SYSCALL_NUMBERS as NR } from "./libc.ts";

/** syscall(2) and errno: bound before any other group, so errno is readable after any call. */
const CORE = {
  // long syscall(long number, ...);  io_uring, mmap and pidfd_open, by the numbers in sys/libc.ts's
  // SYSCALL_TABLES (see sys/libc.ts on declaring it with six fixed long arguments)
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"], result: "i64" },
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** Frame I/O. */
const SYMBOLS = {
  // ssize_t read(int fd, void *buf, size_t n);  (result read as int: frames are far below
  // 2 GiB, and -1 keeps its value in the low 32 bits)
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  // ssize_t write(int fd, const void *buf, size_t n);  (as read)
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t n);  (ReadArena: buf is an address it checked)
  read_at: { name: "read", parameters: ["i32", "usize", "usize"], result: "i32" },
} as const;

let coreBound: Deno.DynamicLibrary<typeof CORE>["symbols"] | undefined;
let bound: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | undefined;

/** syscall(2) and errno, bound on first use. */
function core(): Deno.DynamicLibrary<typeof CORE>["symbols"] {
  return coreBound ??= bind(CORE);
}

/**
 * The frame I/O symbols, bound on first use after core(): a failing call is never followed by a
 * dlopen (which may itself set errno) before errno() reads it.
 */
function io(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  return bound ??= (core(), bind(SYMBOLS));
}

/**
 * Binds `symbols` from LIBC_PATH: this file's one dlopen (core(), io() and the groups below).
 * Unlike sys/libc.ts, which calls libc through addresses, this binds function symbols: Deno
 * compiles a trampoline for each (ext/ffi turbocall.rs), the fast path V8 takes from optimized
 * code, which a frame loop becomes.
 */
function bind<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): Deno.DynamicLibrary<S>["symbols"] {
  return Deno.dlopen(LIBC_PATH, symbols).symbols;
}

/** Reads errno. Call it straight after the failing call, before anything else touches libc. */
function errno(): number {
  const p = core().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
}

function ptr(buf: ArrayBufferView<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** The buffers whose addresses the system call in progress uses (see sys/libc.ts's inFlight). */
let inFlight: readonly object[] = [];
const NONE: readonly object[] = Object.freeze([]);

/** One system call through syscall(2), holding `keep` for it; -1 with errno set on failure. */
function sc(
  keep: readonly object[],
  nr: bigint,
  a = 0n,
  b = 0n,
  c = 0n,
  d = 0n,
  e = 0n,
  f = 0n,
): number {
  inFlight = keep;
  try {
    return Number(core().syscall(nr, a, b, c, d, e, f));
  } finally {
    inFlight = NONE;
  }
}

/** How many buffers are held for a call now: 0 between calls. */
export function ioBuffersInFlight(): number {
  return inFlight.length;
}

const L = (n: number): bigint => BigInt(n);

/** The raw read(2) for hot loops: returns the count or `-errno`, never throws. */
export function readRaw(fd: number, buf: Uint8Array<ArrayBuffer>, len: bigint): number {
  const n = io().read(fd, buf, len);
  return n < 0 ? -errno() : n;
}

/**
 * A buffer that read(2) fills at an offset with no view per call, so hot loops read frames
 * straight into a batch rather than into a scratch buffer and then copy them (a per-frame
 * TypedArray.prototype.set cost 4-8% of the CPU per frame in bench:netdev). The address is
 * taken once; every read is bounds-checked against the buffer, and refused once the buffer was
 * detached (say by a caller's `frame.buffer.transfer()`, which hands its memory to another
 * ArrayBuffer).
 */
export class ReadArena {
  /** The buffer, never resized; views of it are what callers get. */
  readonly bytes: Uint8Array<ArrayBuffer>;
  readonly #base: bigint;

  /** The address as a number, for io_uring's requests; NaN when it is not exact as one. */
  readonly #addr: number;

  constructor(size: number) {
    this.bytes = new Uint8Array(new ArrayBuffer(size));
    this.#base = ptr(this.bytes);
    this.#addr = this.#base <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(this.#base) : NaN;
  }

  /**
   * read(2) of at most `len` bytes into `bytes[at ...]`: the count or `-errno`.
   *
   * @throws {RangeError} when `at + len` is outside the buffer or the buffer was detached.
   */
  read(fd: number, at: number, len: number): number {
    this.#checkRange(at, len);
    const n = io().read_at(fd, this.#base + BigInt(at), BigInt(len));
    return n < 0 ? -errno() : n;
  }

  /** Throws RangeError unless `len` bytes at `at` are inside the buffer (none once detached). */
  #checkRange(at: number, len: number): void {
    // A detached buffer's views have byteLength 0, so this check covers it too.
    const size = this.bytes.byteLength;
    if (!(at >= 0 && len >= 0 && at + len <= size)) {
      throw new RangeError(
        size === 0
          ? "The read buffer was detached (transferred)"
          : `read of ${len} bytes at ${at} is outside a buffer of ${size}`,
      );
    }
  }

  /**
   * `k` reads (at most RING_BATCH) of at most `len` bytes each, read i into `bytes[at[i] ...]`:
   * in one system call where this thread has an io_uring ({@link Ring}), else read(2) after
   * read(2) until one fails. `out[i]` gets read i's count or -errno; a read not tried (after
   * one that failed) gets -EAGAIN. With `useRing` false, always read(2).
   *
   * @throws {RangeError} when a read would leave the buffer, or the buffer was detached.
   */
  readMany(
    fd: number,
    at: Uint32Array,
    len: number,
    k: number,
    out: Int32Array,
    useRing = true,
  ): void {
    if (!(k >= 0 && k <= RING_BATCH && k <= at.length && k <= out.length && len >= 0)) {
      throw new RangeError(`bad batch of reads: ${k} of ${len} bytes`);
    }
    for (let i = 0; i < k; i++) this.#checkRange(at[i]!, len);
    const r = useRing && k > 1 && this.#addr === this.#addr ? batchRing() : undefined;
    if (r !== undefined) {
      for (let i = 0; i < k; i++) r.put(i, IOU.OP_READ, fd, this.#addr + at[i]!, len);
      r.submit(k, out, [this.bytes]);
      if (out[0] !== -E.EOPNOTSUPP) return;
      retire(); // a file that cannot honour RWF_NOWAIT: read(2) from now on
    }
    let i = 0;
    for (; i < k; i++) {
      const n = this.read(fd, at[i]!, len);
      out[i] = n;
      if (n < 0) {
        i++;
        break;
      }
    }
    for (; i < k; i++) out[i] = -E.EAGAIN;
  }
}

/**
 * The address of each buffer writeMany() wrote from, taken once: Deno.UnsafePointer.of costs
 * about 0.8 µs a call here, more than the write it would be for. A buffer's memory never moves
 * (resizable ones reserve theirs up front); once detached, its views have length 0, so a stale
 * address is never read from.
 */
const bufferAddress = new WeakMap<ArrayBufferLike, number>();

function addressOf(view: Uint8Array): number {
  if (view.length === 0) return 0; // nothing is read (a detached buffer's views too)
  const buffer = view.buffer;
  let base = bufferAddress.get(buffer);
  if (base === undefined) {
    base = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(buffer))));
    if (base === 0) return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)));
    bufferAddress.set(buffer, base);
  }
  return base + view.byteOffset;
}

/**
 * `k` writes (at most RING_BATCH), frames[i] each, in one system call where this thread has an
 * io_uring ({@link Ring}), else write(2) after write(2), stopping at the first EAGAIN or
 * ENOBUFS (a full kernel). `out[i]` gets write i's count or -errno; a write not tried gets
 * -EAGAIN. With `useRing` false, always write(2).
 */
export function writeMany(
  fd: number,
  frames: readonly Uint8Array<ArrayBuffer>[],
  k: number,
  out: Int32Array,
  useRing = true,
): void {
  if (!(k >= 0 && k <= RING_BATCH && k <= frames.length && k <= out.length)) {
    throw new RangeError(`bad batch of writes: ${k}`);
  }
  const r = useRing && k > 1 ? batchRing() : undefined;
  if (r !== undefined) {
    let ok = true;
    for (let i = 0; i < k && ok; i++) {
      const f = frames[i]!;
      const addr = addressOf(f);
      ok = addr <= Number.MAX_SAFE_INTEGER;
      r.put(i, IOU.OP_WRITE, fd, addr, f.length);
    }
    if (ok) {
      r.submit(k, out, frames);
      if (out[0] !== -E.EOPNOTSUPP) return;
      retire(); // a file that cannot honour RWF_NOWAIT: write(2) from now on
    }
  }
  writeEach(fd, k, out, (i) => frames[i]!);
}

/**
 * write(2) after write(2) of frame(0) … frame(k-1), stopping at the first EAGAIN or ENOBUFS (a
 * full kernel): out[i] gets each count or -errno, -EAGAIN for a write not tried.
 */
function writeEach(
  fd: number,
  k: number,
  out: Int32Array,
  frame: (i: number) => Uint8Array<ArrayBuffer>,
): void {
  let i = 0;
  for (; i < k; i++) {
    const f = frame(i);
    const n = io().write(fd, f, BigInt(f.length));
    if (n < 0) {
      const e = errno();
      out[i] = -e;
      if (e === E.EAGAIN || e === E.ENOBUFS) {
        i++;
        break;
      }
    } else out[i] = n;
  }
  for (; i < k; i++) out[i] = -E.EAGAIN;
}

/**
 * Like {@linkcode writeMany}, for `k` frames laid out in one buffer: write i is `len[i]` bytes
 * at `bytes[at[i] ...]` (Netdev.send()'s batch of coalesced frames, with no view per frame).
 *
 * @throws {RangeError} when a write would leave the buffer, or the buffer was detached.
 */
export function writeManyAt(
  fd: number,
  bytes: Uint8Array<ArrayBuffer>,
  at: Uint32Array,
  len: Uint32Array,
  k: number,
  out: Int32Array,
  useRing = true,
): void {
  if (!(k >= 0 && k <= RING_BATCH && k <= at.length && k <= len.length && k <= out.length)) {
    throw new RangeError(`bad batch of writes: ${k}`);
  }
  // A detached buffer's views have byteLength 0, so this check covers it too.
  const size = bytes.byteLength;
  for (let i = 0; i < k; i++) {
    if (!(at[i]! + len[i]! <= size && len[i]! > 0)) {
      throw new RangeError(`write of ${len[i]} bytes at ${at[i]} is outside a buffer of ${size}`);
    }
  }
  const base = addressOf(bytes);
  const r = useRing && k > 1 && base <= Number.MAX_SAFE_INTEGER - size ? batchRing() : undefined;
  if (r !== undefined) {
    for (let i = 0; i < k; i++) r.put(i, IOU.OP_WRITE, fd, base + at[i]!, len[i]!);
    r.submit(k, out, [bytes]);
    if (out[0] !== -E.EOPNOTSUPP) return;
    retire(); // a file that cannot honour RWF_NOWAIT: write(2) from now on
  }
  writeEach(fd, k, out, (i) => bytes.subarray(at[i]!, at[i]! + len[i]!));
}

/** linux/io_uring.h, the parts the ring below uses. */
const IOU = {
  OP_ASYNC_CANCEL: 14,
  OP_READ: 22,
  OP_WRITE: 23,
  SETUP_SINGLE_ISSUER: 1 << 12,
  FEAT_SINGLE_MMAP: 1 << 0,
  OFF_SQ_RING: 0n,
  OFF_CQ_RING: 0x8000000n,
  OFF_SQES: 0x10000000n,
  ENTER_GETEVENTS: 1n,
  RWF_NOWAIT: 0x8,
} as const;
/** PROT_READ | PROT_WRITE, and MAP_SHARED | MAP_POPULATE. */
const PROT_RW = 3n;
const MAP_SHARED_POPULATE = 0x8001n;
const TWO_32 = 4294967296;
/** A result slot not yet completed (no -errno is this large). */
const PENDING = -0x40000000;
/** Added to a request's index in the user_data of its cancellation. */
const CANCEL_TAG = 0x40000000;

/** The most reads or writes one batch (one io_uring_enter) carries. */
export const RING_BATCH = 64;

/**
 * Many reads or writes of frames in one system call: an io_uring (Linux 5.6+), one per thread
 * (this module's instance), made on the first batch and kept for the process.
 *
 * Why: a system call's entry and exit can cost more than the tap's read itself (1.1 µs a call
 * here, a paravirtualized VM, against about 0.3 µs for the read's own work), and a read loop
 * pays it for every frame and once more for the read that finds the queue empty. A batch of k
 * requests pays it once.
 *
 * The contract is read(2)'s: every request carries RWF_NOWAIT, so the kernel completes each one
 * before io_uring_enter returns, with data or with -EAGAIN where read(2) on the non-blocking fd
 * returns EAGAIN (a file that cannot honour RWF_NOWAIT fails it with EOPNOTSUPP). Nothing is
 * left running: no poll armed, no worker thread, no buffer written after the call returned.
 * submit() checks that every request it submitted completed; if one did not (a kernel breaking
 * that contract), it cancels it and waits for it before returning, and the thread goes back to
 * read(2) and write(2) for good.
 */
class Ring {
  readonly fd: number;
  /** The SQ and CQ rings' words; the CQEs' results are read through #cq (signed). */
  #r: Uint32Array;
  #cq: Int32Array;
  /** The submission queue entries, 16 words each. */
  #sqe: Uint32Array;
  #sqTailAt: number;
  #sqMask: number;
  #cqHeadAt: number;
  #cqTailAt: number;
  #cqMask: number;
  #cqesAt: number;
  /** Our copy of the SQ tail (only this thread writes it). */
  #tail: number;
  /** Set when a request outlived its io_uring_enter: the ring is not used again. */
  broken = false;
  /** Its mappings, [address, length], for close(). */
  #maps: readonly [number, number][] = [];

  private constructor(
    fd: number,
    ring: ArrayBuffer,
    cqRing: ArrayBuffer,
    sqes: ArrayBuffer,
    p: DataView,
  ) {
    this.fd = fd;
    this.#r = new Uint32Array(ring);
    this.#cq = new Int32Array(cqRing);
    this.#sqe = new Uint32Array(sqes);
    const u32 = (at: number) => p.getUint32(at, true);
    // struct io_uring_params: sq_off at 40 (head, tail, ring_mask, ring_entries, flags,
    // dropped, array), cq_off at 80 (head, tail, ring_mask, ring_entries, overflow, cqes).
    this.#sqTailAt = u32(44) >> 2;
    this.#sqMask = this.#r[u32(48) >> 2]!;
    this.#tail = this.#r[this.#sqTailAt]!;
    const cqWords = new Uint32Array(cqRing);
    this.#cqHeadAt = u32(80) >> 2;
    this.#cqTailAt = u32(84) >> 2;
    this.#cqMask = cqWords[u32(88) >> 2]!;
    this.#cqesAt = u32(100) >> 2;
    // The SQ's index array, identity once for all: entry i of the ring is SQE i.
    const array = u32(64) >> 2;
    for (let i = 0; i <= this.#sqMask; i++) this.#r[array + i] = i;
  }

  /** A new ring, or undefined where the kernel has none for us (ENOSYS, EPERM, too old). */
  static open(): Ring | undefined {
    const params = new Uint8Array(new ArrayBuffer(120));
    const p = new DataView(params.buffer);
    let fd = -1;
    // SINGLE_ISSUER (6.0+) lets the kernel skip locking; older kernels refuse it (EINVAL).
    for (const flags of [IOU.SETUP_SINGLE_ISSUER, 0]) {
      params.fill(0);
      p.setUint32(8, flags, true);
      fd = sc([params], NR.io_uring_setup, L(RING_BATCH), ptr(params));
      if (fd >= 0) break;
    }
    if (fd < 0) return undefined;
    const maps: [number, number][] = [];
    const map = (len: number, off: bigint): ArrayBuffer | undefined => {
      const addr = sc(NONE, NR.mmap, 0n, BigInt(len), PROT_RW, MAP_SHARED_POPULATE, L(fd), off);
      if (addr === -1 || addr <= 0) return undefined;
      maps.push([addr, len]);
      const at = Deno.UnsafePointer.create(BigInt(addr));
      return at === null ? undefined : new Deno.UnsafePointerView(at).getArrayBuffer(len);
    };
    const u32 = (at: number) => p.getUint32(at, true);
    const sqLen = u32(64) + u32(0) * 4;
    const cqLen = u32(100) + u32(4) * 16;
    const single = (u32(20) & IOU.FEAT_SINGLE_MMAP) !== 0;
    const ring = map(single ? Math.max(sqLen, cqLen) : sqLen, IOU.OFF_SQ_RING);
    const cqRing = single ? ring : map(cqLen, IOU.OFF_CQ_RING);
    const sqes = map(u32(0) * 64, IOU.OFF_SQES);
    if (ring === undefined || cqRing === undefined || sqes === undefined) {
      for (const [addr, len] of maps) sc(NONE, NR.munmap, BigInt(addr), BigInt(len));
      sc(NONE, NR.close, L(fd));
      return undefined;
    }
    const made = new Ring(fd, ring, cqRing, sqes, p);
    made.#maps = maps;
    return made;
  }

  /** Unmaps the rings and closes the fd: a retired ring, or the self-test's; nothing may be out. */
  close(): void {
    this.#r = new Uint32Array(0);
    this.#cq = new Int32Array(0);
    this.#sqe = new Uint32Array(0);
    for (const [addr, len] of this.#maps) sc(NONE, NR.munmap, BigInt(addr), BigInt(len));
    this.#maps = [];
    sc(NONE, NR.close, L(this.fd));
  }

  /**
   * Fills request i of the next submit(): opcode, fd, buffer address and length. `rwFlags` is
   * RWF_NOWAIT but in ringSafetyNetCheck(), which tests what happens without it.
   */
  put(
    i: number,
    op: number,
    fd: number,
    addr: number,
    len: number,
    rwFlags: number = IOU.RWF_NOWAIT,
  ): void {
    const o = ((this.#tail + i) & this.#sqMask) << 4;
    const s = this.#sqe;
    s[o] = op; // opcode; flags, ioprio 0
    s[o + 1] = fd;
    s[o + 2] = 0xffffffff; // off = -1: the file's position (a tap has none)
    s[o + 3] = 0xffffffff;
    s[o + 4] = addr % TWO_32;
    s[o + 5] = Math.floor(addr / TWO_32);
    s[o + 6] = len;
    s[o + 7] = rwFlags;
    s[o + 8] = i; // user_data: the request's index
    s[o + 9] = 0;
    s[o + 10] = 0;
    s[o + 11] = 0;
    s[o + 12] = 0;
    s[o + 13] = 0;
    s[o + 14] = 0;
    s[o + 15] = 0;
  }

  /**
   * Submits requests 0 … k-1 (put() before) and writes each one's result, a count or -errno, to
   * out[i]. A request the kernel did not take gets -EAGAIN (as an empty queue or a full one).
   * `keep` holds every buffer whose address a request carries, for the call.
   */
  submit(k: number, out: Int32Array, keep: readonly object[]): void {
    const old = this.#tail;
    this.#r[this.#sqTailAt] = (old + k) >>> 0; // published to the kernel by the system call
    let n = sc(keep, NR.io_uring_enter, L(this.fd), L(k));
    if (n < 0) n = 0; // nothing taken (EINTR, EAGAIN, EBUSY)
    // What it did not take is taken back: the next submit() overwrites those entries.
    this.#tail = (old + n) >>> 0;
    this.#r[this.#sqTailAt] = this.#tail;
    for (let i = 0; i < n; i++) out[i] = PENDING;
    for (let i = n; i < k; i++) out[i] = -E.EAGAIN;
    let done = this.#reap(out, n);
    if (done < n) {
      // A request is still running, and the kernel may still write into its buffer (held in
      // `keep` until this returns): RWF_NOWAIT's contract was broken. Cancel each one still out
      // (IORING_OP_ASYNC_CANCEL by user_data, Linux 5.5+), wait for every one of them, and
      // use read(2) and write(2) from now on.
      this.broken = true;
      let m = 0;
      for (let i = 0; i < n; i++) if (out[i] === PENDING) this.#putCancel(m++, i);
      const from = this.#tail;
      this.#r[this.#sqTailAt] = (from + m) >>> 0;
      const taken = Math.max(0, sc(keep, NR.io_uring_enter, L(this.fd), L(m)));
      this.#tail = (from + taken) >>> 0;
      this.#r[this.#sqTailAt] = this.#tail;
      while (done < n) {
        sc(keep, NR.io_uring_enter, L(this.fd), 0n, 1n, IOU.ENTER_GETEVENTS);
        done += this.#reap(out, n);
      }
    }
  }

  /** Request j of the next system call: cancel the request whose user_data is `target`. */
  #putCancel(j: number, target: number): void {
    const o = ((this.#tail + j) & this.#sqMask) << 4;
    this.#sqe.fill(0, o, o + 16);
    this.#sqe[o] = IOU.OP_ASYNC_CANCEL;
    this.#sqe[o + 1] = 0xffffffff; // fd -1
    this.#sqe[o + 4] = target; // addr: the user_data to cancel
    this.#sqe[o + 8] = CANCEL_TAG + target;
  }

  /**
   * Takes every completion there is; returns how many were of requests 0 … k-1 (a cancellation's
   * own completion is not counted).
   */
  #reap(out: Int32Array, k: number): number {
    const r = this.#r;
    let head = r[this.#cqHeadAt]!;
    const tail = r[this.#cqTailAt]!;
    let n = 0;
    for (; head !== tail; head = (head + 1) >>> 0) {
      const at = this.#cqesAt + ((head & this.#cqMask) << 2);
      const i = r[at]!; // struct io_uring_cqe: user_data u64, res s32, flags u32
      if (i < k) {
        out[i] = this.#cq[at + 2]!;
        n++;
      }
    }
    r[this.#cqHeadAt] = head;
    return n;
  }
}

/** This thread's ring: undefined until the first batch, null where there is none. */
let ring: Ring | null | undefined;

/** The ring for a batch, or undefined to use read(2) and write(2). */
function batchRing(): Ring | undefined {
  if (ring === undefined) ring = Ring.open() ?? null;
  if (ring?.broken) retire();
  return ring ?? undefined;
}

/** Closes this thread's ring for good (nothing of it is running: submit() saw to that). */
function retire(): void {
  ring?.close();
  ring = null;
}

/**
 * Self-test of the safety net (tests/sys/read_arena_test.ts): on a ring of its own, a read of
 * `fd` (which has nothing to read) without RWF_NOWAIT, which the kernel parks on a poll rather
 * than finish: submit() must cancel it and return only once it completed. Returns that read's
 * result (-ECANCELED) and whether the ring was then marked unusable.
 */
export function ringSafetyNetCheck(fd: number): { result: number; broken: boolean } | undefined {
  const r = Ring.open();
  if (r === undefined) return undefined;
  try {
    const buf = new Uint8Array(new ArrayBuffer(64));
    const out = new Int32Array(1);
    r.put(0, IOU.OP_READ, fd, Number(ptr(buf)), 64, 0);
    r.submit(1, out, [buf]);
    return { result: out[0]!, broken: r.broken };
  } finally {
    r.close();
  }
}

/**
 * Whether batches use an io_uring in this thread: true once one was made and still is used; for
 * the tests and benches. Makes the ring when none was tried yet.
 */
export function ringInUse(): boolean {
  return batchRing() !== undefined;
}

/** The raw write(2) for hot loops: returns the count or `-errno`, never throws. */
export function writeRaw(fd: number, buf: Uint8Array<ArrayBuffer>, len: bigint): number {
  const n = io().write(fd, buf, len);
  return n < 0 ? -errno() : n;
}

/**
 * Bench-only: read(2) on a worker thread (one promise per call; bench/netdev.ts's "naive"
 * contender). Returns the count, or -1 on any error: errno is not readable on that thread.
 */
export function benchOnlyReadAsync(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
  len: bigint,
): Promise<number> {
  return lib("bench").bench_only_read_async(fd, buf, len);
}

/** Bench-only: write(2) on a worker thread, like {@linkcode benchOnlyReadAsync}. */
export function benchOnlyWriteAsync(
  fd: number,
  buf: Uint8Array<ArrayBuffer>,
  len: bigint,
): Promise<number> {
  return lib("bench").bench_only_write_async(fd, buf, len);
}

// ---------------------------------------------------------------------------------------------
// From here to the end of the file: not frame I/O, but the library's alone all the same: epoll
// readiness (net/poller.ts), spawning a helper as QEMU does (net/run_helper.ts), and the bench's
// CPU time of reaped children. It lived in sys/libc.ts, which the helper, the service and the
// installer load; there its 10.8 KB cost the helper's start-up about 0.5 ms, measured, to
// compile (the V8 code cache is off on purpose).

/**
 * Their symbols, in groups apart from core()'s and io()'s, each bound on first use: Deno
 * compiles a trampoline for every symbol when its group is bound (see bind()), so a user of one
 * pays nothing for the others.
 */
const GROUPS = {
  // One readiness wait for many fds: the Netdevs' shared poller (net/poller.ts).
  epoll: {
    // int epoll_create1(int flags);
    epoll_create1: { parameters: ["i32"], result: "i32" },
    // int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event);
    epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
    // int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout);  (called
    // with timeout 0 only: it never blocks the event loop)
    epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
    // The same epoll_wait on a worker thread, to sleep until an fd is ready. Only for frame
    // readiness; errno is lost on that thread.
    epoll_wait_async: {
      name: "epoll_wait",
      parameters: ["i32", "buffer", "i32", "i32"],
      result: "i32",
      nonblocking: true,
    },
  },
  // Child processes: running a helper as QEMU does (net/run_helper.ts).
  proc: {
    // int posix_spawn_file_actions_init(posix_spawn_file_actions_t *fa); and friends
    posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
    posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
    posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
    posix_spawn_file_actions_addopen: {
      parameters: ["buffer", "i32", "buffer", "i32", "u32"],
      result: "i32",
    },
    posix_spawn_file_actions_addclosefrom_np: { parameters: ["buffer", "i32"], result: "i32" },
    // int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
    //                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);
    posix_spawn: {
      parameters: ["buffer", "buffer", "buffer", "pointer", "buffer", "pointer"],
      result: "i32",
    },
    posix_spawnp: {
      parameters: ["buffer", "buffer", "buffer", "pointer", "buffer", "pointer"],
      result: "i32",
    },
    // pid_t waitpid(pid_t pid, int *status, int options);
    waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
    // int kill(pid_t pid, int sig);
    kill: { parameters: ["i32", "i32"], result: "i32" },
    // extern char **environ;
    environ: { type: "pointer" },
  },
  // Bench-only: read(2)/write(2) run on a worker thread, one promise per call. This is the
  // design net/netdev.ts avoids (a thread hop per frame, and errno is lost on that thread);
  // bench/netdev.ts measures it as the "naive" contender. The library never uses it.
  bench: {
    bench_only_read_async: {
      name: "read",
      parameters: ["i32", "buffer", "usize"],
      result: "i32",
      nonblocking: true,
    },
    bench_only_write_async: {
      name: "write",
      parameters: ["i32", "buffer", "usize"],
      result: "i32",
      nonblocking: true,
    },
  },
  // Bench-only: the CPU time of reaped children (bench/helper.ts's start-up breakdown).
  usage: {
    // int getrusage(int who, struct rusage *usage);
    getrusage: { parameters: ["i32", "buffer"], result: "i32" },
  },
} as const;

type Groups = typeof GROUPS;
type Symbols<G extends keyof Groups> = Deno.DynamicLibrary<Groups[G]>["symbols"];
const groupBound: { [G in keyof Groups]?: Symbols<G> } = {};

/** The symbols of one group, bound on first use. */
function lib<G extends keyof Groups>(group: G): Symbols<G> {
  const have = groupBound[group];
  if (have !== undefined) return have;
  // errno() reads through core(): bind it first, so that a failing call in this group is never
  // followed by a dlopen (which may itself set errno) before errno is read.
  core();
  const symbols = bind(GROUPS[group] as Groups[G]);
  (groupBound as Record<string, unknown>)[group] = symbols;
  return symbols;
}
const epoll = () => lib("epoll");
const proc = () => lib("proc");
const usage = () => lib("usage");

/** Throws OsError when `result` is negative, reading errno at once. Returns `result`. */
function check(name: string, result: number): number {
  if (result < 0) throw new OsError(name, errno());
  return result;
}

// epoll

/** epoll(7) constants. */
export const EPOLL = {
  IN: 0x1,
  OUT: 0x4,
  ERR: 0x8,
  HUP: 0x10,
  ONESHOT: 1 << 30,
  CTL_ADD: 1,
  CTL_DEL: 2,
  CTL_MOD: 3,
  CLOEXEC: 0o2000000,
} as const;

/**
 * sizeof(struct epoll_event): `{ uint32_t events; uint64_t data; }` is packed on x86_64 (12
 * bytes, data at 4) and naturally aligned elsewhere (16 bytes, data at 8).
 */
export const EPOLL_EVENT_SIZE: number = Deno.build.arch === "x86_64" ? 12 : 16;
const EPOLL_DATA_AT = EPOLL_EVENT_SIZE - 8;

/** epoll_create1(EPOLL_CLOEXEC): a new epoll fd. */
export function epollCreate(): number {
  return check("epoll_create1", epoll().epoll_create1(EPOLL.CLOEXEC));
}

/** One struct epoll_event for epoll_ctl, reused (the kernel copies it during the call). */
const ctlEvent = new Uint8Array(new ArrayBuffer(EPOLL_EVENT_SIZE));
const ctlView = new DataView(ctlEvent.buffer);

/**
 * epoll_ctl(2): adds, changes (`EPOLL.CTL_MOD`) or removes `fd` with the `events` mask; `token`
 * (a u32) comes back with each of its events.
 */
export function epollCtl(ep: number, op: number, fd: number, events: number, token: number): void {
  ctlView.setUint32(0, events >>> 0, true);
  ctlView.setUint32(EPOLL_DATA_AT, token >>> 0, true);
  ctlView.setUint32(EPOLL_DATA_AT + 4, 0, true);
  check("epoll_ctl", epoll().epoll_ctl(ep, op, fd, ctlEvent));
}

/** An array of struct epoll_event for epoll_wait, read by index. */
export class EpollEvents {
  /** How many events fit. */
  readonly capacity: number;
  /** The raw array, handed to epoll_wait. */
  readonly buf: Uint8Array<ArrayBuffer>;
  #view: DataView;

  /** Room for `capacity` events. */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.buf = new Uint8Array(new ArrayBuffer(capacity * EPOLL_EVENT_SIZE));
    this.#view = new DataView(this.buf.buffer);
  }

  /** The events mask (EPOLL.IN, ...) of the `i`-th event. */
  mask(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT_SIZE, true);
  }

  /** The token (low 32 bits of data) of the `i`-th event. */
  token(i: number): number {
    return this.#view.getUint32(i * EPOLL_EVENT_SIZE + EPOLL_DATA_AT, true);
  }
}

/**
 * epoll_wait(2) with timeout 0, on the calling thread: the events ready now. Returns their
 * count, or -errno.
 */
export function epollWaitNow(ep: number, events: EpollEvents): number {
  const n = epoll().epoll_wait(ep, events.buf, events.capacity, 0);
  return n < 0 ? -errno() : n;
}

/**
 * epoll_wait(2) without a timeout on a worker thread: the event loop keeps running while it
 * sleeps. `events` must not be read until the promise settles. Returns the count, or -1 for any
 * error (EINTR; errno cannot be read after a call on another thread).
 */
export function epollWaitAsync(ep: number, events: EpollEvents): Promise<number> {
  return epoll().epoll_wait_async(ep, events.buf, events.capacity, -1);
}

// Child processes (for running a helper exactly as QEMU does, without a shell)

/** How a child should be started. */
export interface SpawnSpec {
  /** argv; argv[0] is the program. */
  argv: readonly string[];
  /** Search PATH for argv[0] (execvp) instead of using it as a path (execv, as QEMU does). */
  searchPath: boolean;
  /** fd mapping: child fd → parent fd. Every other fd above 2 is closed in the child. */
  fds: ReadonlyMap<number, number>;
  /** Open /dev/null for these child fds. */
  devNull: readonly number[];
}

/**
 * posix_spawn(3): vfork+exec done by glibc, safe in a multi-threaded process. Returns the pid.
 * The environment is inherited unchanged, as QEMU's fork+execv does.
 */
export function spawn(spec: SpawnSpec): number {
  const fa = new Uint8Array(new ArrayBuffer(256));
  const lc = proc();
  const rc0 = lc.posix_spawn_file_actions_init(fa);
  if (rc0 !== 0) throw new OsError("posix_spawn_file_actions_init", rc0);
  // The dup2 actions run in order: a source that is also an earlier target (a socket that
  // happens to be fd 1 or 2 when this process's stdio was closed) would be overwritten first.
  // Such sources are duplicated above every target here, and those copies closed afterwards.
  const highestTarget = Math.max(2, ...spec.fds.keys());
  const copies: number[] = [];
  const source = (fd: number): number => {
    if (fd > highestTarget) return fd;
    const copy = fcntl(fd, F.DUPFD_CLOEXEC, highestTarget + 1);
    copies.push(copy);
    return copy;
  };
  try {
    for (const [child, parent] of spec.fds) {
      // dup2 onto a distinct fd clears close-on-exec; when child === parent glibc does that
      // itself (POSIX 2018), and our fds are all close-on-exec, so only mapped fds survive.
      const rc = lc.posix_spawn_file_actions_adddup2(fa, source(parent), child);
      if (rc !== 0) throw new OsError("posix_spawn_file_actions_adddup2", rc);
    }
    const devnull = cstr("/dev/null");
    for (const fd of spec.devNull) {
      const rc = lc.posix_spawn_file_actions_addopen(fa, fd, devnull, O.RDWR, 0);
      if (rc !== 0) throw new OsError("posix_spawn_file_actions_addopen", rc);
    }
    // Belt and braces against fds some library opened without O_CLOEXEC: close everything
    // above the highest mapped fd, as QEMU closes every fd but the socket.
    const rc1 = lc.posix_spawn_file_actions_addclosefrom_np(fa, highestTarget + 1);
    if (rc1 !== 0) throw new OsError("posix_spawn_file_actions_addclosefrom_np", rc1);

    const strings = spec.argv.map(cstr);
    const argv = new BigUint64Array(strings.length + 1);
    strings.forEach((s, i) => (argv[i] = ptr(s)));
    const pid = new Int32Array(1);
    const fn = spec.searchPath ? lc.posix_spawnp : lc.posix_spawn;
    inFlight = [strings, argv];
    const rc = fn(
      new Uint8Array(pid.buffer),
      strings[0] ?? cstr(""),
      fa,
      null,
      new Uint8Array(argv.buffer),
      // The static is the address of `environ`; its value (read now: setenv may move it) is
      // the char** that envp must be. Passing the address gave the child a garbage environment.
      lc.environ === null ? null : new Deno.UnsafePointerView(lc.environ).getPointer(),
    );
    inFlight = NONE;
    if (rc !== 0) throw new OsError(`posix_spawn(${spec.argv[0]})`, rc);
    return pid[0]!;
  } finally {
    lc.posix_spawn_file_actions_destroy(fa);
    for (const fd of copies) sc(NONE, NR.close, L(fd));
  }
}

/** How a child ended. */
export type ExitStatus = { exited: true; code: number } | { exited: false; signal: number };

/** waitpid(2) with WNOHANG: undefined while the child still runs. */
export function tryWait(pid: number): ExitStatus | undefined {
  const status = new Int32Array(1);
  for (;;) {
    const r = proc().waitpid(pid, new Uint8Array(status.buffer), 1 /* WNOHANG */);
    if (r < 0) {
      const e = errno();
      if (e === E.EINTR) continue;
      throw new OsError("waitpid", e);
    }
    if (r === 0) return undefined;
    const s = status[0]!;
    if ((s & 0x7f) === 0) return { exited: true, code: (s >> 8) & 0xff };
    return { exited: false, signal: s & 0x7f };
  }
}

/** kill(2); a child that is already gone is not an error. */
export function kill(pid: number, signal: number): void {
  const r = proc().kill(pid, signal);
  if (r < 0) {
    const e = errno();
    if (e !== E.ESRCH) throw new OsError("kill", e);
  }
}

/** pidfd_open(2): an fd that polls readable when the process exits. */
export function pidfdOpen(pid: number): number {
  const r = sc(NONE, NR.pidfd_open, L(pid));
  if (r < 0) throw new OsError("pidfd_open", errno());
  // pidfds are always close-on-exec.
  return r;
}

// Bench-only (bench/helper.ts)

/**
 * Bench-only: user plus system CPU time, in milliseconds, of every child this process has
 * reaped so far (getrusage(RUSAGE_CHILDREN)), their own reaped children included. The
 * difference across one run is that run's CPU time, which a loaded machine inflates far less
 * than the wall-clock time.
 */
export function childrenCpuMs(): number {
  // struct rusage on LP64: ru_utime and ru_stime (timeval: i64 seconds, i64 microseconds) first.
  const ru = new BigInt64Array(18);
  const RUSAGE_CHILDREN = -1;
  check("getrusage", usage().getrusage(RUSAGE_CHILDREN, new Uint8Array(ru.buffer)));
  return Number((ru[0]! + ru[2]!) * 1_000_000n + ru[1]! + ru[3]!) / 1000;
}
