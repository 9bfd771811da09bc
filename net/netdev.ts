// A tap as an emulator's Ethernet backend: frames in and out of a non-blocking tap fd with no
// thread and no promise per frame. Readiness is awaited once per burst (net/poller.ts: one
// epoll set for every Netdev of the process, at most one wait on a worker thread); every frame
// waiting is then read in a synchronous loop until EAGAIN, in batches of reads that each take one
// system call (sys/io.ts: io_uring, where the kernel has it).

import { Fd } from "../sys/fd.ts";
import { E, OsError, POLL, readSmallFile, setNonBlocking } from "../sys/libc.ts";
import { ReadArena, RING_BATCH, ringInUse, writeMany, writeManyAt, writeRaw } from "../sys/io.ts";
import { NetControl } from "./bridge.ts";
import { Watch } from "./poller.ts";
import {
  setTapCarrier,
  setTapMac,
  setTapSndbuf,
  tapInfo,
  tapMac,
  tapSetOffload,
  tapSndbuf,
  vnetHdrSize,
} from "./tap.ts";

/** The virtio-net header that precedes each frame on a tap with IFF_VNET_HDR. */
export interface VnetHeader {
  /** VIRTIO_NET_HDR_F_* flags (1 = checksum needed, 2 = data valid). */
  flags: number;
  /** VIRTIO_NET_HDR_GSO_* type (0 = none). */
  gsoType: number;
  /** Length of the headers to copy into each segment. */
  hdrLen: number;
  /** Segment size for GSO. */
  gsoSize: number;
  /** Where checksumming starts. */
  csumStart: number;
  /** Where the checksum is stored, from csumStart. */
  csumOffset: number;
  /** num_buffers, present when the header is 12 bytes long. */
  numBuffers?: number;
}

/** A received frame with its parsed virtio-net header. */
export interface Packet {
  /** The Ethernet frame, without the header. */
  frame: Uint8Array;
  /** The parsed header. */
  header: VnetHeader;
}

/** Frame and byte counters of one direction. */
export interface DirectionCounters {
  /**
   * Frames moved. `rx.frames` counts every frame read from the tap, whichever reader read it
   * (including frames a handler or a loop then ignored); `tx.frames` every frame the kernel took.
   */
  frames: number;
  /** Bytes moved (frame bytes, without any virtio-net header). */
  bytes: number;
  /**
   * Frames dropped by us: `tx`, by send() while its bounded queue was full; `rx`, frames that
   * listen() had read in a batch (one system call reads up to 16) after the handler threw or the
   * Netdev was closed, never handed out (also counted in `frames`).
   */
  drops: number;
  /**
   * Frames the kernel refused (`tx`: a write(2) failed with EIO while the link is down, EINVAL
   * for a frame shorter than an Ethernet header, EMSGSIZE, ...). Counted, never thrown.
   */
  errors: number;
  /** The last of those errors; absent until one happened. */
  lastError?: OsError;
}

/** Counters of a Netdev. */
export interface NetdevCounters {
  /** From the tap to the emulator. */
  rx: DirectionCounters;
  /** From the emulator to the tap. */
  tx: DirectionCounters;
}

/**
 * The kernel's own counters of the tap interface, from its side: `tx` is toward this process
 * (frames the tap queued for us to read), `rx` is from this process.
 */
export interface KernelCounters {
  /** Frames this process wrote that the kernel accepted. */
  rxPackets: number;
  /** Their bytes. */
  rxBytes: number;
  /** Frames this process wrote that the kernel dropped. */
  rxDropped: number;
  /** Frames queued for this process to read. */
  txPackets: number;
  /** Their bytes. */
  txBytes: number;
  /**
   * Frames the tap dropped because its queue (txqueuelen) was full: this process did not read
   * fast enough. The drops no user-space counter can see.
   */
  txDropped: number;
}

/** How a Netdev treats the virtio-net header when the tap has one. */
export type VnetMode =
  /** Strip it from received frames, prepend a zeroed one to sent frames (the default). */
  | "strip"
  /** Frames carry the header both ways, untouched (for an emulated virtio-net device). */
  | "raw";

/**
 * A tap offload (TUNSETOFFLOAD): the kernel may then hand over, and take, frames of up to 64 KiB
 * whose virtio-net header carries the GSO metadata (segment size, header length) and a partial
 * checksum, instead of one MTU-sized frame per segment. `csum` is the base of the others.
 */
export type Offload =
  /** Partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM): TUN_F_CSUM. */
  | "csum"
  /** TCP segmentation offload over IPv4: TUN_F_TSO4. */
  | "tso4"
  /** TCP segmentation offload over IPv6: TUN_F_TSO6. */
  | "tso6"
  /** TSO with the ECN bit (CWR) set: TUN_F_TSO_ECN. */
  | "tso-ecn"
  /** UDP fragmentation offload (accepted and ignored by Linux since 4.14): TUN_F_UFO. */
  | "ufo"
  /** UDP segmentation offload over IPv4 (Linux 6.2+): TUN_F_USO4. */
  | "uso4"
  /** UDP segmentation offload over IPv6 (Linux 6.2+): TUN_F_USO6. */
  | "uso6";

/** TUN_F_* (linux/if_tun.h). */
const OFFLOAD_BITS: ReadonlyMap<Offload, number> = new Map<Offload, number>([
  ["csum", 0x01],
  ["tso4", 0x02],
  ["tso6", 0x04],
  ["tso-ecn", 0x08],
  ["ufo", 0x10],
  ["uso4", 0x20],
  ["uso6", 0x40],
]);

/** Options for a Netdev. */
export interface NetdevOptions {
  /**
   * Offloads to enable (TUNSETOFFLOAD), for example `["csum", "tso4", "tso6"]`. They need a tap
   * with a virtio-net header and `vnetMode: "raw"` (the header carries each frame's GSO
   * metadata, which strip mode would lose): received frames may then be up to 64 KiB long, and
   * send() takes such frames, header first. Default none.
   */
  offloads?: readonly Offload[];
  /** What to do with the virtio-net header; only matters when the tap has one. */
  vnetMode?: VnetMode;
  /**
   * At most how many frames the async iterator and the stream read at once and keep, copied,
   * for the next steps (frames; `burst` bounds it too). Default 1024. Frames nobody asks for wait in the tap's own kernel
   * queue, which drops the excess and counts it ({@linkcode KernelCounters.txDropped}).
   */
  rxQueue?: number;
  /**
   * Bound of the transmit queue used while the kernel is full (frames). Default 1024. Past it
   * `send()` drops and counts the frame in `counters.tx.drops`.
   */
  txQueue?: number;
  /**
   * Frames read per burst before the event loop gets a turn (listen(), the iterators, batches).
   * Default 512.
   */
  burst?: number;
  /**
   * Read frames in batches of up to 16, and write writeBatch()'s and a burst of send()'s in
   * batches of up to 64, through an io_uring, one system call for a batch, where the kernel has
   * one (Linux 5.6 or later; none under a seccomp filter or `kernel.io_uring_disabled` that
   * refuses it): every request is non-blocking and done when the call returns, as read(2) is.
   * `false`: one read(2) or write(2) per frame, and send() writes every frame at once. Default
   * true.
   */
  ioUring?: boolean;
}

/** Called for each received frame, synchronously, in the read loop. */
export type FrameHandler = (frame: Uint8Array) => void;

/**
 * Many received frames at once, from {@linkcode Netdev.batches}: a reusable view, valid until
 * the iterator is asked for the next batch. Iterate it (`for (const frame of batch)`) or index
 * it with `frame(i)`; copy a frame (`slice()`) to keep it.
 */
export interface FrameBatch extends Iterable<Uint8Array> {
  /** Number of frames. */
  readonly length: number;
  /** Total frame bytes (without any virtio-net header in strip mode). */
  readonly bytes: number;
  /** The i-th frame, a view into the batch's buffer. */
  frame(i: number): Uint8Array;
}

const MAX_FRAME = 65536;
/**
 * What one read(2) may take: a 64 KiB GSO frame (an IP packet of up to 65535 bytes behind an
 * Ethernet and a VLAN header), and the largest virtio-net header, with room to spare.
 */
const MAX_READ = MAX_FRAME + 256;

/**
 * Frame lengths up to here get a BigInt length made once and reused, so send() allocates nothing
 * per frame (covers MTU 1500 with any virtio-net header). Longer frames (jumbo, GSO) get a fresh
 * one: their copy dwarfs the allocation.
 */
const SMALL_FRAME = 2048 + 64;

/** write(2)'s size_t argument as a BigInt (the FFI fast path), made once per small length. */
const bigLengths: (bigint | undefined)[] = new Array(SMALL_FRAME).fill(undefined);
function bigLength(n: number): bigint {
  return n < SMALL_FRAME ? (bigLengths[n] ??= BigInt(n)) : BigInt(n);
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });
const TRUE: Promise<boolean> = Promise.resolve(true);
const FALSE: Promise<boolean> = Promise.resolve(false);
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A bounded FIFO on a circular array: O(1) at both ends, no Array.shift() memmove. */
class Ring<T> {
  #items: (T | undefined)[];
  #head = 0;
  #size = 0;

  constructor(capacity: number) {
    this.#items = new Array(Math.max(1, capacity)).fill(undefined);
  }

  get length(): number {
    return this.#size;
  }

  get full(): boolean {
    return this.#size === this.#items.length;
  }

  push(item: T): void {
    const cap = this.#items.length;
    this.#items[(this.#head + this.#size) % cap] = item;
    this.#size++;
  }

  peek(): T | undefined {
    return this.#items[this.#head];
  }

  shift(): T | undefined {
    if (this.#size === 0) return undefined;
    const item = this.#items[this.#head];
    this.#items[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.#items.length;
    this.#size--;
    return item;
  }

  clear(): void {
    this.#items.fill(undefined);
    this.#head = 0;
    this.#size = 0;
  }
}

/** Small frames share a pooled ArrayBuffer of this size; larger ones get their own. */
const POOL_SIZE = 32768;

/**
 * Owned copies without an ArrayBuffer per frame: frames are copied back to back into a pooled
 * buffer that is never written again once handed out (a new one replaces it when full), as
 * Node's Buffer pool does. A kept frame keeps at most POOL_SIZE bytes alive.
 */
class CopyPool {
  #buf = new Uint8Array(new ArrayBuffer(POOL_SIZE));
  #at = 0;

  copy(src: Uint8Array): Uint8Array {
    const n = src.length;
    if (n > POOL_SIZE / 8) return src.slice();
    let at = this.#at;
    if (at + n > POOL_SIZE) {
      this.#buf = new Uint8Array(new ArrayBuffer(POOL_SIZE));
      at = 0;
    }
    const out = this.#buf.subarray(at, at + n);
    out.set(src);
    this.#at = (at + n + 7) & ~7;
    return out;
  }
}

/** An Ethernet header: the shortest frame a tap takes (tun_get_user() refuses less: EINVAL). */
const ETH_HLEN = 14;

/** What send() may hold for one batched write: 64 frames of up to COALESCE_MAX bytes. */
const COALESCE_BYTES = 256 * 1024;
/** A larger frame (GSO) is written at once: its copy would cost more than the call saves. */
const COALESCE_MAX = 16384;
/**
 * Microtask turns without a send() after which a burst is over and its frames are written. One
 * `await nic.write(f)` loop turns once a frame; a WritableStream's writer three times.
 */
const COALESCE_IDLE_TURNS = 4;

/**
 * Frames send() copied while a burst was open, back to back as they go on the wire (with their
 * zeroed virtio-net header in strip mode), their bounds in two arrays: the next write of them
 * all is one system call (sys/io.ts writeManyAt).
 */
class Coalesced {
  readonly bytes = new Uint8Array(new ArrayBuffer(COALESCE_BYTES));
  readonly at = new Uint32Array(RING_BATCH);
  readonly len = new Uint32Array(RING_BATCH);
  readonly res = new Int32Array(RING_BATCH);
  count = 0;
  used = 0;

  /** Copies `frame` behind `hdr` zero bytes; false when it does not fit (write the rest first). */
  add(frame: Uint8Array, hdr: number): boolean {
    const n = hdr + frame.length;
    const at = this.used;
    if (this.count === RING_BATCH || at + n > COALESCE_BYTES) return false;
    if (hdr > 0) this.bytes.fill(0, at, at + hdr);
    this.bytes.set(frame, at + hdr);
    this.at[this.count] = at;
    this.len[this.count++] = n;
    this.used = (at + n + 7) & ~7;
    return true;
  }
}

/** Reads per batch at most: 16 reads of the largest frame take 1 MiB of buffer. */
const SLOTS = 16;
/** A frame this large (GSO) stays where batches() read it rather than move down (a copy). */
const BIG_FRAME = 16384;

/** The arena behind a FrameBatch: frames read back to back, their bounds in two arrays. */
class Batch implements FrameBatch {
  length = 0;
  bytes = 0;
  /** Where the next read goes (frames start 8-byte aligned). */
  end = 0;
  /** What read(2) fills in place: no scratch buffer, no copy. */
  readonly arena: ReadArena;
  readonly data: Uint8Array<ArrayBuffer>;
  readonly starts: Uint32Array;
  readonly sizes: Uint32Array;
  /** Where the reads of one system call go (#readBatch). */
  readonly slotAt = new Uint32Array(SLOTS);

  constructor(frames: number) {
    // Room for `frames` MTU-sized frames, and always for a batch of reads of the largest size
    // (#readBatch reads them MAX_READ apart, then moves each frame down to the end).
    this.arena = new ReadArena(frames * 1536 + SLOTS * MAX_READ);
    this.data = this.arena.bytes;
    this.starts = new Uint32Array(frames);
    this.sizes = new Uint32Array(frames);
  }

  reset(): void {
    this.length = 0;
    this.bytes = 0;
    this.end = 0;
  }

  /** True when one more read of any size fits, and one more frame slot is left. */
  get room(): boolean {
    return this.length < this.starts.length && this.data.length - this.end >= MAX_READ;
  }

  frame(i: number): Uint8Array {
    if (!(i >= 0 && i < this.length)) {
      throw new RangeError(`Frame index out of range: ${i} (batch of ${this.length})`);
    }
    const s = this.starts[i]!;
    return this.data.subarray(s, s + this.sizes[i]!);
  }

  [Symbol.iterator](): IterableIterator<Uint8Array> {
    // Not a generator: one result object reused for every step, no allocation but the view.
    let i = 0;
    const result = { value: undefined as unknown as Uint8Array, done: false };
    const it: IterableIterator<Uint8Array> = {
      next: () => {
        if (i < this.length) {
          const s = this.starts[i]!;
          result.value = this.data.subarray(s, s + this.sizes[i++]!);
        } else {
          result.done = true;
          result.value = undefined as unknown as Uint8Array;
        }
        return result;
      },
      [Symbol.iterator]: () => it,
    };
    return it;
  }
}

/**
 * Where a batch of reads lands: SLOTS buffers of MAX_READ each, read i into slot i, and the
 * batch size, which adapts: it doubles while every read of a batch found a frame and falls to
 * about twice what was found when one found the queue empty (a read that finds nothing costs
 * little in a batch, but not nothing).
 */
class Slots {
  /** Where read i lands in the arena. */
  readonly at = new Uint32Array(SLOTS).map((_, i) => i * MAX_READ);
  /** Each read's count or -errno. */
  readonly res = new Int32Array(SLOTS);
  /** Reads in the next batch. */
  k = 2;
  /** Views of each slot, by the length last seen (listen() hands them out). */
  readonly #views: (Uint8Array | undefined)[] = new Array(SLOTS).fill(undefined);
  #arena: ReadArena | undefined;

  /** The 1 MiB the reads land in, made on first use (batches() reads into its batch instead). */
  get arena(): ReadArena {
    return this.#arena ??= new ReadArena(SLOTS * MAX_READ);
  }

  view(i: number, skip: number, size: number): Uint8Array {
    const v = this.#views[i];
    if (v !== undefined && v.length === size) return v;
    const start = this.at[i]! + skip;
    return (this.#views[i] = this.arena.bytes.subarray(start, start + size));
  }

  adapt(k: number, got: number): void {
    this.k = got === k ? Math.min(k * 2, SLOTS) : Math.max(2, Math.min(got * 2, SLOTS));
  }
}

/**
 * A tap device as a source and sink of Ethernet frames.
 *
 * Receiving, one reader at a time: {@linkcode Netdev.listen} (a handler called synchronously per
 * frame: the fastest), {@linkcode Netdev.batches} (many frames per await: as fast, and async),
 * `for await (const frame of netdev)` / {@linkcode Netdev.frames} and {@linkcode Netdev.readable}
 * (a promise per frame). Sending: {@linkcode Netdev.send} (synchronous),
 * {@linkcode Netdev.writeBatch}, {@linkcode Netdev.write} and {@linkcode Netdev.writable}.
 *
 * A NIC drops rather than fails: a frame the kernel refuses (the link is down, the frame is too
 * short or too long) is counted in `counters.tx.errors` with `counters.tx.lastError`, and the
 * send returns false (or, for a frame batched in a burst, true: see send()). Only a closed
 * Netdev throws.
 */
export class Netdev implements AsyncDisposable {
  /** The tap's interface name, for example `"tap0"`. */
  readonly name: string;
  /**
   * The tap's MTU when the Netdev was made (a snapshot: a later `ip link set mtu` is not seen),
   * or undefined when the tap lives in another network namespace than this process (the helper
   * may have made it there).
   */
  readonly mtu: number | undefined;
  /** True when the tap itself puts a virtio-net header before every frame. */
  readonly vnetHdr: boolean;
  /** Length of that header in bytes (0 without one). */
  readonly vnetHdrLen: number;
  /** What is done with the header: frames you see carry it only in `"raw"` mode. */
  readonly vnetMode: VnetMode;
  /** The offloads the kernel accepted (TUNSETOFFLOAD), in the order asked; empty by default. */
  readonly offloads: readonly Offload[];
  /** Live counters. */
  readonly counters: NetdevCounters = {
    rx: { frames: 0, bytes: 0, drops: 0, errors: 0 },
    tx: { frames: 0, bytes: 0, drops: 0, errors: 0 },
  };

  #fd: Fd;
  /** Readiness waits, in one epoll set shared by every Netdev of the process. */
  #watch: Watch;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** The reader's batch of reads, made on the first read. */
  #rxSlots: Slots | undefined;
  /** Frames waiting for a write(2) in strip mode get their zeroed header here. */
  #txBuf: Uint8Array<ArrayBuffer> | undefined;
  #ioUring: boolean;
  /** writeBatch()'s frames and results, made on its first use. */
  #txBatch: Uint8Array<ArrayBuffer>[] = [];
  #txRes: Int32Array | undefined;
  #burst: number;
  #rxQueueMax: number;
  #txQueueMax: number;
  #txQueue: Ring<Uint8Array<ArrayBuffer>>;
  #txFlush: Promise<void> | undefined;
  #txWaiters: (() => void)[] = [];
  /** send()'s frames held for one batched write while a burst is open (made on first use). */
  #co: Coalesced | undefined;
  /**
   * A burst: a write went out in the current chain of microtasks, so the frames sent after it
   * in the same chain are batched (send()). Only while the transmit queue is empty.
   */
  #burstOpen = false;
  #burstTurnQueued = false;
  /** Frames batched so far, and as of the burst's last microtask turn. */
  #coalescedSends = 0;
  #seenSends = 0;
  #idleTurns = 0;
  /** Who reads now, for the "already has a reader" message. */
  #reader: string | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  #pending = new Set<Promise<unknown>>();

  /**
   * Adopts an open tap fd: it becomes non-blocking and is closed by close(). Most programs get
   * a Netdev from {@linkcode bridgeNetdev} or {@linkcode tapNetdev} instead.
   *
   * @param fd An open tap fd (from /dev/net/tun after TUNSETIFF, or handed over by a parent).
   * @param options Header mode, queue bounds and burst size.
   * @throws {OsError} when the fd is not a tun/tap fd; it is then left open, still the caller's.
   * @throws {TypeError} when the fd is a tun rather than a tap (it is left open too), or
   * offloads are asked without a virtio-net header or in strip mode.
   * @throws {RangeError} for an unknown offload, or one the kernel refuses (the message names
   * them).
   */
  constructor(fd: number, options: NetdevOptions = {}) {
    const info = tapInfo(fd);
    if (!info.tap) throw new TypeError(`File descriptor ${fd} is a tun, not a tap`);
    const burst = options.burst ?? 512;
    const rxQueue = options.rxQueue ?? 1024;
    const txQueue = options.txQueue ?? 1024;
    for (const [what, v] of [["burst", burst], ["rxQueue", rxQueue], ["txQueue", txQueue]]) {
      if (!Number.isSafeInteger(v) || (v as number) < 1) {
        throw new RangeError(`Invalid ${what}: ${v} (a positive integer)`);
      }
    }
    this.name = info.name;
    this.vnetHdr = info.vnetHdr;
    this.vnetHdrLen = info.vnetHdr ? vnetHdrSize(fd) : 0;
    this.vnetMode = options.vnetMode ?? "strip";
    this.mtu = ownMtu(fd, info.name);
    this.offloads = setOffloads(fd, options.offloads ?? [], info.vnetHdr, this.vnetMode);
    this.#burst = burst;
    this.#rxQueueMax = rxQueue;
    this.#txQueueMax = txQueue;
    this.#txQueue = new Ring(txQueue);
    this.#ioUring = options.ioUring ?? true;
    setNonBlocking(fd, true);
    this.#watch = new Watch(fd);
    this.#fd = new Fd(fd);
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  #claim(who: string): void {
    if (this.#reader !== undefined) {
      throw new Error(`Netdev \`${this.name}' already has a reader: ${this.#reader}`);
    }
    this.#reader = who;
  }

  /**
   * Reads frames until close() and calls `handler` for each, synchronously. The frame is a view
   * into a reused buffer, valid only during the call: copy it (`frame.slice()`) to keep it. The
   * view object itself is reused for later frames of the same length, so keep the copy, never
   * the view. This is the fast path; only one reader (listen, the iterator, batches or the
   * stream) may run.
   *
   * When the handler throws, reading stops and the returned promise rejects with that error;
   * the Netdev stays open and another reader may start. Sending from the handler never throws
   * (a refused frame is counted), so a forwarder `a.listen((f) => b.send(f))` keeps going.
   *
   * @returns A promise that settles when the Netdev is closed or `signal` aborts (or rejects
   * when the handler throws or the tap fails).
   * @throws {Error} when another reader is running (the message names it).
   */
  listen(handler: FrameHandler, options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.#listen(handler, options.signal, "listen()");
  }

  #listen(handler: FrameHandler, signal: AbortSignal | undefined, who: string): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#claim(who);
    const wake = () => this.#wake();
    signal?.addEventListener("abort", wake, { once: true });
    const job = this.#readLoop(handler, signal).finally(() => {
      this.#reader = undefined;
      signal?.removeEventListener("abort", wake);
    });
    return this.#track(job);
  }

  /** Like listen(), but gives each frame with its parsed virtio-net header (raw or strip). */
  listenPackets(
    handler: (packet: Packet) => void,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    if (!this.vnetHdr) throw new Error("This tap has no virtio-net header");
    const len = this.vnetHdrLen;
    const raw = this.vnetMode === "raw";
    return this.#listen(
      (frame) => {
        // In strip mode the frame handed to listen() has no header; it was cut off in place, so
        // the header is still right before it in the same buffer.
        const base = raw
          ? frame
          : new Uint8Array(frame.buffer, frame.byteOffset - len, frame.length + len);
        handler({ frame: base.subarray(len), header: parseVnetHeader(base.subarray(0, len)) });
      },
      options.signal,
      "listenPackets()",
    );
  }

  async #readLoop(handler: FrameHandler, signal: AbortSignal | undefined): Promise<void> {
    const strip = this.vnetHdr && this.vnetMode === "strip" ? this.vnetHdrLen : 0;
    // Counted bytes never include the header, in either mode (DirectionCounters.bytes).
    const hdr = this.vnetHdrLen;
    const rx = this.counters.rx;
    const burst = this.#burst;
    const slots = this.#rxSlots ??= new Slots();
    const res = slots.res;
    while (!this.#closed && !signal?.aborted) {
      let read = 0;
      let empty = false;
      while (read < burst && !empty) {
        const k = Math.min(slots.k, burst - read);
        this.#readMany(slots, k);
        let got = 0;
        let error = 0;
        for (let i = 0; i < k; i++) {
          const n = res[i]!;
          if (n < 0) {
            if (n === -E.EAGAIN || n === -E.EINTR) empty = true;
            else if (error === 0) error = -n;
            continue;
          }
          got++;
          rx.frames++;
          rx.bytes += n > hdr ? n - hdr : 0;
          // The handler gets the same view object for every frame of a given length in a given
          // slot: a frame is only valid during the call anyway, and a fresh subarray per frame
          // was the loop's only allocation.
          try {
            handler(slots.view(i, strip, n > strip ? n - strip : 0));
          } catch (e) {
            this.#dropRead(res, i + 1, k);
            throw e;
          }
          if (this.#closed) return this.#dropRead(res, i + 1, k);
        }
        slots.adapt(k, got);
        read += got;
        if (error !== 0) {
          if (this.#closed) return;
          throw this.#rxError(error);
        }
        if (got === 0) empty = true;
      }
      if (!empty) {
        // A full burst: more frames are probably waiting, so nothing to poll for. Give the
        // event loop a turn (setImmediate is a macrotask: timers and I/O run; 2-6 µs) and read
        // on. A poll here was a round trip to a worker thread (15-30 µs) per burst.
        await nextTurn();
      } else {
        // Empty (EAGAIN) or interrupted: wait for readiness once.
        await this.#wait(POLL.IN);
      }
    }
  }

  /**
   * Frames of a batch read from the kernel but never handed out (results from..k-1): counted as
   * read and as dropped, so that none goes missing silently.
   */
  #dropRead(res: Int32Array, from: number, k: number): void {
    const rx = this.counters.rx;
    const hdr = this.vnetHdrLen;
    for (let i = from; i < k; i++) {
      const n = res[i]!;
      if (n < 0) continue;
      rx.frames++;
      rx.bytes += n > hdr ? n - hdr : 0;
      rx.drops++;
    }
  }

  /** `k` reads into the slots, in one system call where it can (ReadArena.readMany). */
  #readMany(slots: Slots, k: number): void {
    slots.arena.readMany(this.#fd.value, slots.at, MAX_READ, k, slots.res, this.#ioUring);
  }

  /**
   * A read of a batch that failed with `-n`: the queue is empty for now (true). An error other
   * than EAGAIN or EINTR is thrown when no frame was read yet (`read`); after some, the next read
   * meets it again, with nothing to lose.
   */
  #failedRead(n: number, read: number): true {
    if (n !== -E.EAGAIN && n !== -E.EINTR && read === 0) throw this.#rxError(-n);
    return true;
  }

  #rxError(errno: number): OsError {
    const e = new OsError(`read(${this.name})`, errno);
    this.counters.rx.errors++;
    this.counters.rx.lastError = e;
    return e;
  }

  /**
   * Reads what is waiting now, without waiting, into `batch` (up to its room and `max`
   * frames). Returns the number of frames read; throws on a read error other than EAGAIN.
   */
  #readBatch(batch: Batch, max: number): number {
    const strip = this.vnetHdr && this.vnetMode === "strip" ? this.vnetHdrLen : 0;
    const hdr = this.vnetHdrLen;
    const rx = this.counters.rx;
    const slots = this.#rxSlots ??= new Slots();
    const res = slots.res;
    const data = batch.data;
    const at = batch.slotAt;
    batch.reset();
    while (batch.length < max && batch.room) {
      // A batch of reads straight into the batch, MAX_READ apart from its end: each must fit
      // even if every frame is as large as a read can be.
      const base = batch.end;
      const fit = Math.floor((data.length - base) / MAX_READ);
      const k = Math.min(slots.k, max - batch.length, batch.starts.length - batch.length, fit);
      for (let i = 0; i < k; i++) at[i] = base + i * MAX_READ;
      batch.arena.readMany(this.#fd.value, at, MAX_READ, k, res, this.#ioUring);
      let got = 0;
      let empty = false;
      for (let i = 0; i < k; i++) {
        const n = res[i]!;
        if (n < 0) {
          empty = this.#failedRead(n, batch.length);
          continue;
        }
        got++;
        // Back to back: a frame moves down to the batch's end (never onto a later read's
        // bytes: they start MAX_READ after its own), but a large one (GSO) stays where it was
        // read, since copying it would cost more than the system call the batch saved.
        const src = at[i]!;
        let dst = batch.end;
        if (n > BIG_FRAME) dst = src;
        else if (dst !== src) data.copyWithin(dst, src, src + n);
        const j = batch.length++;
        batch.starts[j] = dst + strip;
        batch.sizes[j] = n > strip ? n - strip : 0;
        batch.bytes += n > hdr ? n - hdr : 0;
        batch.end = (dst + n + 7) & ~7;
        rx.frames++;
        rx.bytes += n > hdr ? n - hdr : 0;
      }
      slots.adapt(k, got);
      if (empty || got === 0) break;
    }
    return batch.length;
  }

  /**
   * Received frames in batches: each step of the loop gets every frame that was waiting (up to
   * `burst`, default 512), so a busy tap costs one promise per batch rather than per frame. The
   * batch is a view reused for the next one: use or copy its frames before asking for more.
   * Frames are read on demand; while the loop body runs, new ones wait in the tap's kernel
   * queue. Aborting `signal` or closing the Netdev ends the loop; so does `break`.
   *
   * @example Count frames for a second
   * ```ts ignore
   * import { bridgeNetdev } from "@vm/bridge";
   *
   * await using nic = await bridgeNetdev({ br: "br0" });
   * let frames = 0;
   * for await (const batch of nic.batches({ signal: AbortSignal.timeout(1000) })) {
   *   frames += batch.length;
   * }
   * console.log(frames);
   * ```
   */
  batches(options: { signal?: AbortSignal } = {}): AsyncIterableIterator<FrameBatch> {
    const batch = new Batch(this.#burst);
    const pull = this.#puller("batches()", options.signal, () => this.#readBatch(batch, Infinity));
    const it: AsyncIterableIterator<FrameBatch> = {
      next: async () => {
        const got = await pull.next();
        return got ? { value: batch, done: false } : DONE;
      },
      return: async () => {
        await pull.stop();
        return DONE;
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /**
   * The reader behind the iterators, the stream and batches: `read()` reads what is waiting
   * (synchronously) and returns how many frames it got; `next()` calls it, waiting for
   * readiness while it gets none, and gives the event loop a turn after every `burst` frames.
   * The reader is claimed on the first next(), released when it ends.
   */
  #puller(who: string, signal: AbortSignal | undefined, read: () => number) {
    let state: "new" | "running" | "done" = "new";
    let since = 0;
    let busy: Promise<number> | undefined;
    const burst = this.#burst;
    const onAbort = () => this.#wake();
    const end = () => {
      if (state === "running") {
        this.#reader = undefined;
        signal?.removeEventListener("abort", onAbort);
      }
      state = "done";
    };
    const step = async (): Promise<number> => {
      for (;;) {
        if (state !== "running" || this.#closed || signal?.aborted) {
          end();
          return 0;
        }
        if (since >= burst) {
          since = 0;
          await nextTurn();
          continue;
        }
        let n: number;
        try {
          n = read();
        } catch (e) {
          end();
          throw e;
        }
        if (n > 0) {
          since += n;
          return n;
        }
        since = 0;
        await this.#wait(POLL.IN);
      }
    };
    return {
      /** Frames read (0 at the end). */
      next: (): Promise<number> => {
        if (state === "new") {
          if (this.#closed || signal?.aborted) state = "done";
          else {
            try {
              this.#claim(who);
            } catch (e) {
              state = "done";
              return Promise.reject(e);
            }
            state = "running";
            signal?.addEventListener("abort", onAbort, { once: true });
          }
        }
        if (state === "done") return Promise.resolve(0);
        // Calls that overlap run one after the other.
        const run: Promise<number> = busy ? busy.then(step, step) : step();
        busy = run;
        // close() waits for it, so the fds it polls are never closed under it.
        this.#track(run).catch(() => {});
        run.then(() => {
          if (busy === run) busy = undefined;
        }, () => {
          if (busy === run) busy = undefined;
        });
        return run;
      },
      /** Ends the reader, even while a next() waits for readiness. */
      stop: async (): Promise<void> => {
        end();
        this.#wake();
        await busy?.catch(() => {});
      },
    };
  }

  /**
   * Waits until the tap is readable (POLL.IN) or writable (POLL.OUT), or #wake(). One epoll set
   * serves every Netdev of the process (net/poller.ts): a forwarder's two readers share one
   * wait on a worker thread instead of a poll(2) round trip each.
   */
  #wait(events: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#watch.wait(events);
  }

  /** Ends the current waits; with none, the next wait returns at once. */
  #wake(): void {
    this.#watch.wake();
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    p.then(() => this.#pending.delete(p), () => this.#pending.delete(p));
    return p;
  }

  /**
   * Frames as an async iterable. Each frame is a copy the caller owns (frames of up to 4 KiB
   * share a 32 KiB ArrayBuffer with their neighbours, as Node's Buffer pool does: use the view,
   * not `frame.buffer`); with `reuse: true` it is a view into a reused buffer instead, valid
   * until the next step of the loop (no copy).
   * Frames are read on demand, up to the smaller of `rxQueue` (default 1024) and `burst`
   * (default 512) at a time; frames not asked for wait in the tap's kernel queue. The reader is claimed on the first step and released when
   * the loop ends (`break` included). Aborting `signal` ends the iteration even while it waits
   * for a frame.
   *
   * @throws {Error} (from the first step) when another reader is running; the message names it.
   */
  frames(
    options: { signal?: AbortSignal; reuse?: boolean } = {},
  ): AsyncIterableIterator<Uint8Array> {
    return this.#frames("frames()", options.signal, options.reuse ?? false);
  }

  #frames(who: string, signal: AbortSignal | undefined, reuse: boolean) {
    const max = Math.min(this.#rxQueueMax, this.#burst);
    const batch = new Batch(reuse ? max : 1);
    const ring = new Ring<Uint8Array>(max);
    const pool = new CopyPool();
    let at = 0;
    const pull = this.#puller(who, signal, () => {
      if (!reuse) return this.#readCopies(ring, max, pool);
      at = 0;
      return this.#readBatch(batch, max);
    });
    const left = () => (reuse ? batch.length - at : ring.length);
    const take = (): Uint8Array => reuse ? batch.frame(at++) : ring.shift()!;
    const it = {
      next: (): Promise<IteratorResult<Uint8Array>> => {
        if (left() > 0) return Promise.resolve({ value: take(), done: false });
        return pull.next().then((n) => (n > 0 ? { value: take(), done: false } : DONE));
      },
      /** A frame already read, without a promise (the stream queues them all at once). */
      takeNow: (): Uint8Array | undefined => (left() > 0 ? take() : undefined),
      return: async (): Promise<IteratorResult<Uint8Array>> => {
        ring.clear();
        batch.reset();
        at = 0;
        await pull.stop();
        return DONE;
      },
      [Symbol.asyncIterator]: (): AsyncIterableIterator<Uint8Array> => it,
    };
    return it;
  }

  /**
   * Reads up to `max` waiting frames into `ring`, each copied into `pool` (one small view per
   * frame rather than an ArrayBuffer of its own). Returns the count; throws on a read error
   * other than EAGAIN when nothing was read.
   */
  #readCopies(ring: Ring<Uint8Array>, max: number, pool: CopyPool): number {
    const strip = this.vnetHdr && this.vnetMode === "strip" ? this.vnetHdrLen : 0;
    const hdr = this.vnetHdrLen;
    const rx = this.counters.rx;
    const slots = this.#rxSlots ??= new Slots();
    const res = slots.res;
    let read = 0;
    while (read < max) {
      const k = Math.min(slots.k, max - read);
      this.#readMany(slots, k);
      let got = 0;
      let empty = false;
      for (let i = 0; i < k; i++) {
        const n = res[i]!;
        if (n < 0) {
          empty = this.#failedRead(n, read);
          continue;
        }
        got++;
        read++;
        rx.frames++;
        rx.bytes += n > hdr ? n - hdr : 0;
        ring.push(pool.copy(slots.view(i, strip, n > strip ? n - strip : 0)));
      }
      slots.adapt(k, got);
      if (empty || got === 0) break;
    }
    return read;
  }

  /** Same as frames(). */
  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this.frames();
  }

  /**
   * Received frames as a ReadableStream of copies the caller owns. One stream per Netdev (every
   * access returns the same one until it is cancelled); getting it claims nothing: the reader
   * is claimed by the first read, released by cancel(). It does not read ahead (high-water mark
   * 0): frames not asked for wait in the tap's kernel queue, which drops the excess when full
   * (counted by the kernel, {@linkcode Netdev.kernelCounters}) rather than apply backpressure.
   */
  get readable(): ReadableStream<Uint8Array> {
    if (this.#readable) return this.#readable;
    // cancel() stops first: a pull is usually waiting for readiness, and return() alone would
    // only run after the next frame arrived.
    const it = this.#frames("the readable stream", undefined, false);
    let cancelled = false;
    const stream: ReadableStream<Uint8Array> = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        const r = await it.next();
        if (cancelled) return; // cancelled meanwhile: the stream is already closed
        if (r.done) return controller.close();
        controller.enqueue(r.value);
        // And every frame already read with it: later reads take them from the stream's own
        // queue without another pull (at most rxQueue frames, never more than were read).
        for (let f = it.takeNow(); f !== undefined; f = it.takeNow()) controller.enqueue(f);
      },
      cancel: async () => {
        cancelled = true;
        if (this.#readable === stream) this.#readable = undefined;
        await it.return();
      },
    }, { highWaterMark: 0 });
    this.#readable = stream;
    return stream;
  }

  /**
   * A WritableStream of frames, each sent as send() does (a run of writes is a burst, batched);
   * writes wait while the transmit queue is full. A frame the kernel refuses is counted
   * (`counters.tx.errors`), never an error of the stream; writing to a closed Netdev is.
   */
  get writable(): WritableStream<Uint8Array> {
    return new WritableStream<Uint8Array>({
      // Synchronous while the queue has room (no promise of our own per frame).
      write: (frame) => {
        if (this.#closed || !this.#txQueue.full) {
          this.send(frame);
          return;
        }
        return this.#writeLater(frame).then(() => {});
      },
    });
  }

  /**
   * Sends one frame, or queues it (bounded by `txQueue`) while the kernel is full. Never blocks,
   * and never throws for a frame: one the kernel refuses (EIO while the link is down, EINVAL
   * when shorter than an Ethernet header, EMSGSIZE, ...) is counted in `counters.tx.errors` with
   * `counters.tx.lastError`. Whenever it holds a frame (batched or queued), it copies the frame:
   * the caller may reuse its buffer as soon as send() returns.
   *
   * Bursts are batched (with an io_uring, see `ioUring`): the first frame is written at once;
   * the frames sent after it in the same chain of microtasks (a loop of send(), a listen()
   * handler forwarding a batch, a chain of `await write()`) are copied and written together, in
   * one system call, when 64 are waiting or when that chain of microtasks ends, so never later
   * than the event loop's next turn; {@linkcode Netdev.flush} writes them at once. A batched
   * frame the kernel refuses is counted when written, and ends the burst, so that the next
   * send() answers for its own frame again. A frame shorter than the kernel takes, and one over
   * 16 KiB, are written at once, after the batch.
   *
   * @returns true when the frame was sent, batched or queued; false when it was dropped (the
   * queue was full: `counters.tx.drops`) or refused (`counters.tx.errors`).
   * @throws {Error} when the Netdev is closed.
   */
  send(frame: Uint8Array): boolean {
    if (this.#closed) throw new Error("Netdev is closed");
    if (this.#burstOpen && this.#coalesce(frame)) return true;
    const q = this.#txQueue;
    if (q.length === 0) {
      const r = this.#writeNow(frame);
      if (r > 0) {
        if (!this.#burstOpen) this.#openBurst();
        return true;
      }
      if (r < 0) return false;
    }
    if (q.full) {
      this.counters.tx.drops++;
      return false;
    }
    q.push(this.#wireCopy(frame));
    this.#txFlush ??= this.#track(this.#flush());
    return true;
  }

  /**
   * Writes the frames send() has batched in this burst now, in one system call, rather than
   * when the burst ends (see send()): for a frame that must not wait, or before `Deno.exit()`,
   * which runs no more microtasks. A no-op when there are none, or once closed.
   */
  flush(): void {
    if (!this.#closed) this.#flushCoalesced();
  }

  /**
   * Copies `frame` into the burst's batch (written when it is full or the burst ends); false
   * when the frame must be written on its own now (the batch written first, for the order): a
   * frame shorter than the kernel takes (so its refusal is send()'s answer), a large one, or a
   * burst a refusal just ended.
   */
  #coalesce(frame: Uint8Array): boolean {
    const strip = this.vnetHdrLen > 0 && this.vnetMode === "strip" ? this.vnetHdrLen : 0;
    // An Ethernet header, behind the virtio-net header in raw mode.
    const min = ETH_HLEN + (strip > 0 ? 0 : this.vnetHdrLen);
    if (frame.length < min || frame.length > COALESCE_MAX) {
      this.#flushCoalesced();
      return false;
    }
    const co = this.#co ??= new Coalesced();
    if (!co.add(frame, strip)) {
      this.#flushCoalesced();
      if (!this.#burstOpen || !co.add(frame, strip)) return false;
    }
    this.#coalescedSends++;
    if (co.count === RING_BATCH) this.#flushCoalesced();
    return true;
  }

  /** A write went out: batch what is sent next in this chain of microtasks (with an io_uring). */
  #openBurst(): void {
    if (!this.#ioUring || !ringInUse()) return;
    this.#burstOpen = true;
    this.#seenSends = this.#coalescedSends;
    this.#idleTurns = 0;
    if (!this.#burstTurnQueued) {
      this.#burstTurnQueued = true;
      queueMicrotask(this.#burstTurn);
    }
  }

  /**
   * Follows the microtasks while frames keep being sent; COALESCE_IDLE_TURNS turns without one
   * end the burst, and its frames are written. So a frame never waits past the microtasks of the
   * task that sent it (the event loop's next turn), nor behind more than 63 others.
   */
  #burstTurn = (): void => {
    if (this.#burstOpen && this.#coalescedSends !== this.#seenSends) {
      this.#seenSends = this.#coalescedSends;
      this.#idleTurns = 0;
      queueMicrotask(this.#burstTurn);
      return;
    }
    if (this.#burstOpen && ++this.#idleTurns < COALESCE_IDLE_TURNS) {
      queueMicrotask(this.#burstTurn);
      return;
    }
    this.#burstTurnQueued = false;
    this.#burstOpen = false;
    if (!this.#closed) this.#flushCoalesced();
  };

  /**
   * Writes the burst's batch (writeManyAt: one system call with an io_uring) and counts each
   * frame as send() would have. A refusal ends the burst, so the next send() answers for its
   * own frame; a frame the kernel had no room for goes to the transmit queue (a later frame of
   * the same batch the kernel did take has then gone before it: a tap is out of room only
   * under a TUNSETSNDBUF limit, as writeBatch() does).
   */
  #flushCoalesced(): void {
    const co = this.#co;
    if (co === undefined || co.count === 0) return;
    const k = co.count;
    co.count = 0;
    co.used = 0;
    writeManyAt(this.#fd.value, co.bytes, co.at, co.len, k, co.res, this.#ioUring);
    const tx = this.counters.tx;
    const hdr = this.vnetHdrLen;
    const q = this.#txQueue;
    for (let i = 0; i < k; i++) {
      const n = co.res[i]!;
      if (n >= 0) {
        tx.frames++;
        tx.bytes += n > hdr ? n - hdr : 0;
      } else if (n === -E.EAGAIN || n === -E.ENOBUFS) {
        this.#burstOpen = false;
        if (q.full) tx.drops++;
        else q.push(co.bytes.slice(co.at[i]!, co.at[i]! + co.len[i]!));
      } else {
        this.#burstOpen = false;
        this.#txRefused(-n);
      }
    }
    if (q.length > 0) this.#txFlush ??= this.#track(this.#flush());
  }

  /**
   * Sends every frame of `frames` (a {@linkcode FrameBatch} from another Netdev, an array, any
   * iterable) as send() does, in one synchronous loop.
   *
   * @returns How many were sent or queued; the others were dropped or refused (counted).
   * @throws {Error} when the Netdev is closed.
   */
  writeBatch(frames: Iterable<Uint8Array>): number {
    if (this.#closed) throw new Error("Netdev is closed");
    this.#flushCoalesced(); // what send() batched goes first
    let sent = 0;
    // Frames as they go on the wire (strip mode needs a header in front: one at a time, as
    // send() does), in batches of one system call each while nothing waits in the queue.
    const direct = this.#ioUring && !(this.vnetHdrLen > 0 && this.vnetMode === "strip");
    const batch = this.#txBatch;
    const flush = () => {
      if (batch.length > 0) sent += this.#writeMany(batch);
    };
    const one = (f: Uint8Array) => {
      if (!direct || this.#txQueue.length > 0) {
        flush();
        if (this.send(f)) sent++;
        return;
      }
      batch.push(f as Uint8Array<ArrayBuffer>);
      if (batch.length === RING_BATCH) flush();
    };
    try {
      if (frames instanceof Batch) {
        for (let i = 0; i < frames.length; i++) one(frames.frame(i));
      } else {
        for (const f of frames) one(f);
      }
      flush();
    } finally {
      batch.length = 0;
    }
    return sent;
  }

  /**
   * Writes `batch` (emptied) in one system call where it can (sys/libc.ts writeMany); a frame
   * the kernel had no room for goes through send() (queued, or dropped when the queue is full).
   * Returns how many were sent or queued.
   */
  #writeMany(batch: Uint8Array<ArrayBuffer>[]): number {
    const k = batch.length;
    const res = this.#txRes ??= new Int32Array(RING_BATCH);
    writeMany(this.#fd.value, batch, k, res, this.#ioUring);
    const tx = this.counters.tx;
    const hdr = this.vnetHdrLen;
    let sent = 0;
    for (let i = 0; i < k; i++) {
      const n = res[i]!;
      if (n >= 0) {
        tx.frames++;
        tx.bytes += n > hdr ? n - hdr : 0;
        sent++;
      } else if (n === -E.EAGAIN || n === -E.ENOBUFS) {
        this.#burstOpen = false; // to the queue, behind nothing batched
        if (this.send(batch[i]!)) sent++;
      } else {
        this.#txRefused(-n);
      }
    }
    batch.length = 0;
    return sent;
  }

  /**
   * Sends one frame as send() does (a chain of `await write()` is a burst, batched), waiting
   * (without dropping) while the transmit queue is full.
   *
   * @returns true when sent, batched or queued, false when the kernel refused it (counted in
   * `counters.tx.errors`); never rejects but for a closed Netdev.
   */
  write(frame: Uint8Array): Promise<boolean> {
    if (this.#closed) return Promise.reject(new Error("Netdev is closed"));
    if (!this.#txQueue.full) return this.send(frame) ? TRUE : FALSE;
    return this.#writeLater(frame);
  }

  async #writeLater(frame: Uint8Array): Promise<boolean> {
    while (!this.#closed && this.#txQueue.full) {
      await new Promise<void>((r) => this.#txWaiters.push(r));
    }
    return this.send(frame);
  }

  /**
   * One write(2) of a frame as given (raw mode, or no header) or behind a zeroed header (strip
   * mode). 1: sent and counted; 0: the kernel is full (EAGAIN, ENOBUFS); -1: refused, counted.
   */
  #writeNow(frame: Uint8Array): number {
    const hdr = this.vnetHdrLen;
    if (hdr > 0 && this.vnetMode === "strip") {
      if (frame.length + hdr > MAX_READ) return this.#txRefused(E.EMSGSIZE);
      const buf = this.#txBuf ??= new Uint8Array(new ArrayBuffer(MAX_READ));
      buf.set(frame, hdr);
      return this.#writeOut(buf, frame.length + hdr);
    }
    return this.#writeOut(frame as Uint8Array<ArrayBuffer>, frame.length);
  }

  #writeOut(out: Uint8Array<ArrayBuffer>, len: number): number {
    const n = writeRaw(this.#fd.value, out, bigLength(len));
    if (n < 0) {
      if (n === -E.EAGAIN || n === -E.ENOBUFS) return 0;
      return this.#txRefused(-n);
    }
    this.counters.tx.frames++;
    // Without the header, in either mode (DirectionCounters.bytes).
    this.counters.tx.bytes += len > this.vnetHdrLen ? len - this.vnetHdrLen : 0;
    return 1;
  }

  #txRefused(errno: number): number {
    this.counters.tx.errors++;
    this.counters.tx.lastError = new OsError(`write(${this.name})`, errno);
    return -1;
  }

  /** The frame as it goes on the wire, in a buffer of its own (for the queue). */
  #wireCopy(frame: Uint8Array): Uint8Array<ArrayBuffer> {
    const hdr = this.vnetHdr && this.vnetMode === "strip" ? this.vnetHdrLen : 0;
    const out = new Uint8Array(new ArrayBuffer(hdr + frame.length));
    out.set(frame, hdr);
    return out;
  }

  async #flush(): Promise<void> {
    const q = this.#txQueue;
    try {
      while (q.length > 0 && !this.#closed) {
        for (let out = q.peek(); out !== undefined; out = q.peek()) {
          // Sent, or refused and counted: either way it leaves the queue. Full: wait.
          if (this.#writeOut(out, out.length) === 0) break;
          q.shift();
        }
        for (const w of this.#txWaiters.splice(0)) w();
        if (q.length > 0) await this.#wait(POLL.OUT);
      }
    } finally {
      this.#txFlush = undefined;
      for (const w of this.#txWaiters.splice(0)) w();
    }
  }

  /**
   * Carrier up or down (TUNSETCARRIER), as plugging or pulling the cable: the bridge sees the
   * port go down and stops forwarding to it. Linux 5.0 or later.
   *
   * @throws {OsError} when the kernel refuses (EINVAL before 5.0, EPERM without CAP_NET_ADMIN).
   */
  setCarrier(up: boolean): void {
    setTapCarrier(this.#fd.value, up);
  }

  /** The tap's MAC address, `"fe:12:34:56:78:9a"`, read through the tap fd now. */
  get mac(): string {
    return formatMac(tapMac(this.#fd.value));
  }

  /**
   * Sets the tap's MAC address (through the tap fd, so it works across network namespaces).
   *
   * @throws {SyntaxError} for a malformed address. @throws {OsError} when the kernel refuses.
   */
  setMac(mac: string): void {
    setTapMac(this.#fd.value, parseMac(mac));
  }

  /** The tap's send buffer in bytes (TUNGETSNDBUF); the kernel's default is unlimited (2^31-1). */
  get sndbuf(): number {
    return tapSndbuf(this.#fd.value);
  }

  /** Sets the send buffer (TUNSETSNDBUF): bytes in flight before writes see EAGAIN. */
  setSndbuf(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < 1 || bytes > 0x7fffffff) {
      throw new RangeError(`Invalid send buffer size: ${bytes}`);
    }
    setTapSndbuf(this.#fd.value, bytes);
  }

  /**
   * The kernel's own counters of the tap (from /proc/self/net/dev), beside {@linkcode
   * Netdev.counters}: in particular `txDropped`, the frames lost because nobody read them in
   * time. Undefined when the tap lives in another network namespace than this process.
   */
  kernelCounters(): KernelCounters | undefined {
    if (this.#closed || !sameNamespace(this.#fd.value, this.name)) return undefined;
    try {
      return parseProcNetDev(readSmallFile("/proc/self/net/dev"), this.name);
    } catch {
      return undefined;
    }
  }

  /**
   * Stops the reader, writes what send() batched in its current burst, drops what is still
   * queued waiting for room in the kernel, and closes the tap fd (which removes a non-persistent
   * tap). Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      // What send() batched was accepted: it goes out before the fd closes.
      this.#flushCoalesced();
      this.#burstOpen = false;
      this.#closed = true;
      // Wake a poll that is waiting on another thread before closing the fds it watches.
      this.#wake();
      await Promise.allSettled([...this.#pending]);
      this.counters.tx.drops += this.#txQueue.length;
      this.#txQueue.clear();
      for (const w of this.#txWaiters.splice(0)) w();
      // Out of the epoll set before the fd number can be reused.
      await this.#watch.remove();
      this.#fd.close();
    })();
    return this.#closing;
  }

  /** Same as close(). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Checks and applies the asked offloads with one TUNSETOFFLOAD; returns them. When the kernel
 * refuses the set (EINVAL), finds which it refuses, one by one on top of `csum`, and says so.
 */
function setOffloads(
  fd: number,
  asked: readonly Offload[],
  vnetHdr: boolean,
  mode: VnetMode,
): Offload[] {
  if (asked.length === 0) return [];
  let bits = 0;
  for (const o of asked) {
    const bit = OFFLOAD_BITS.get(o);
    if (bit === undefined) {
      throw new RangeError(
        `Unknown offload: \`${o}' (known: ${[...OFFLOAD_BITS.keys()].join(", ")})`,
      );
    }
    bits |= bit;
  }
  if (!vnetHdr) {
    throw new TypeError("Offloads need the virtio-net header: open the tap with vnetHdr: true");
  }
  if (mode !== "raw") {
    throw new TypeError(
      'Offloads need vnetMode "raw": strip mode would drop the header with the GSO metadata',
    );
  }
  try {
    tapSetOffload(fd, bits);
  } catch (e) {
    if (!(e instanceof OsError) || e.errno !== E.EINVAL) throw e;
    const refused = asked.filter((o) => {
      try {
        tapSetOffload(fd, (OFFLOAD_BITS.get(o) ?? 0) | (bits & 0x01));
        return false;
      } catch {
        return true;
      } finally {
        try {
          tapSetOffload(fd, 0);
        } catch { /* back to none, as before */ }
      }
    });
    const which = refused.length > 0 ? refused : asked;
    throw new RangeError(
      `The kernel refused offload${which.length > 1 ? "s" : ""} ${
        which.map((o) => `\`${o}'`).join(", ")
      } (TUNSETOFFLOAD: ${e.strerror}${bits & 0x01 ? "" : "; TSO and USO need csum"})`,
    );
  }
  return [...new Set(asked)];
}

/** "aa:bb:cc:dd:ee:ff" as 6 bytes. */
function parseMac(mac: string): Uint8Array {
  const m = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i
    .exec(mac);
  if (!m) throw new SyntaxError(`Invalid MAC address: \`${mac}'`);
  const bytes = Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
  if (bytes[0]! & 1) throw new RangeError(`A multicast MAC address cannot be a NIC's: \`${mac}'`);
  return bytes;
}

function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * One interface's line of /proc/net/dev as {@linkcode KernelCounters}; throws when `name` has
 * no line. Pure: exported for the tests.
 */
export function parseProcNetDev(text: string, name: string): KernelCounters {
  for (const line of text.split("\n").slice(2)) {
    const colon = line.indexOf(":");
    if (colon < 0 || line.slice(0, colon).trim() !== name) continue;
    const f = line.slice(colon + 1).trim().split(/\s+/).map(Number);
    if (f.length < 16 || f.some((x) => !Number.isSafeInteger(x))) break;
    return {
      rxBytes: f[0]!,
      rxPackets: f[1]!,
      rxDropped: f[3]!,
      txBytes: f[8]!,
      txPackets: f[9]!,
      txDropped: f[11]!,
    };
  }
  throw new SyntaxError(`No counters for \`${name}' in /proc/net/dev`);
}

/** Parses a 10- or 12-byte little-endian virtio-net header. */
export function parseVnetHeader(bytes: Uint8Array): VnetHeader {
  if (bytes.length !== 10 && bytes.length !== 12) {
    throw new RangeError(`A virtio-net header is 10 or 12 bytes, got ${bytes.length}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h: VnetHeader = {
    flags: v.getUint8(0),
    gsoType: v.getUint8(1),
    hdrLen: v.getUint16(2, true),
    gsoSize: v.getUint16(4, true),
    csumStart: v.getUint16(6, true),
    csumOffset: v.getUint16(8, true),
  };
  if (bytes.length === 12) h.numBuffers = v.getUint16(10, true);
  return h;
}

/**
 * True when the tap's name means the same device in this process's network namespace: the MAC
 * read through the tap fd matches the one read by name.
 */
function sameNamespace(fd: number, name: string): boolean {
  try {
    using ctl = new NetControl();
    const byName = ctl.mac(name);
    const byFd = tapMac(fd);
    return byFd.every((b, i) => b === byName[i]);
  } catch {
    return false;
  }
}

/** The tap's MTU if it lives in this process's network namespace, else undefined. */
function ownMtu(fd: number, name: string): number | undefined {
  if (!sameNamespace(fd, name)) return undefined;
  try {
    using ctl = new NetControl();
    return ctl.mtu(name);
  } catch {
    return undefined;
  }
}
