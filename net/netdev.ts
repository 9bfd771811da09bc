// A tap as an emulator's Ethernet backend: frames in and out of a non-blocking tap fd with no
// thread and no promise per frame. Readiness is awaited once per burst (one poll on a worker
// thread); every frame waiting is then read in a synchronous loop of FFI calls until EAGAIN.

import { Fd } from "../sys/fd.ts";
import {
  E,
  ioctl,
  OsError,
  POLL,
  pollAsync,
  readRaw,
  setNonBlocking,
  SOCK,
  socketpair,
  write,
  writeRaw,
} from "../sys/libc.ts";
import { IOCTL } from "../sys/structs.ts";
import { NetControl } from "./bridge.ts";
import { tapInfo, vnetHdrSize } from "./tap.ts";

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
  /** Frames moved. */
  frames: number;
  /** Bytes moved (frame bytes, without any virtio-net header). */
  bytes: number;
  /** Frames dropped by us because a bounded queue was full. */
  drops: number;
}

/** Counters of a Netdev. */
export interface NetdevCounters {
  /** From the tap to the emulator. */
  rx: DirectionCounters;
  /** From the emulator to the tap. */
  tx: DirectionCounters;
}

/** How a Netdev treats the virtio-net header when the tap has one. */
export type VnetMode =
  /** Strip it from received frames, prepend a zeroed one to sent frames (the default). */
  | "strip"
  /** Frames carry the header both ways, untouched (for an emulated virtio-net device). */
  | "raw";

/** Options for a Netdev. */
export interface NetdevOptions {
  /** What to do with the virtio-net header; only matters when the tap has one. */
  vnetMode?: VnetMode;
  /** Bound of the receive queue behind the async iterator and the stream (frames). */
  rxQueue?: number;
  /** Bound of the transmit queue used while the kernel is full (frames). */
  txQueue?: number;
  /** Frames read per burst before the event loop gets a turn. */
  burst?: number;
}

/** Called for each received frame, synchronously, in the read loop. */
export type FrameHandler = (frame: Uint8Array) => void;

const MAX_FRAME = 65536;

/**
 * Frame lengths up to here get a view and a BigInt length made once and reused, so the hot
 * loops allocate nothing per frame (covers MTU 1500 with any virtio-net header). Longer frames
 * (jumbo, GSO) get a fresh one: their copy dwarfs the allocation.
 */
const SMALL_FRAME = 2048 + 64;

/** write(2)'s size_t argument as a BigInt (the FFI fast path), made once per small length. */
const bigLengths: (bigint | undefined)[] = new Array(SMALL_FRAME).fill(undefined);
function bigLength(n: number): bigint {
  return n < SMALL_FRAME ? (bigLengths[n] ??= BigInt(n)) : BigInt(n);
}

/**
 * A tap device as a source and sink of Ethernet frames.
 *
 * Fastest path: {@linkcode Netdev.listen} with a handler that is called synchronously per
 * frame. Convenience paths: `for await (const frame of netdev)`, {@linkcode Netdev.readable},
 * {@linkcode Netdev.send} and {@linkcode Netdev.writable}.
 */
export class Netdev implements AsyncDisposable {
  /** The tap's interface name, for example `"tap0"`. */
  readonly name: string;
  /**
   * The tap's MTU, or undefined when the tap lives in another network namespace than this
   * process (the helper may have made it there).
   */
  readonly mtu: number | undefined;
  /** True when the tap itself puts a virtio-net header before every frame. */
  readonly vnetHdr: boolean;
  /** Length of that header in bytes (0 without one). */
  readonly vnetHdrLen: number;
  /** What is done with the header: frames you see carry it only in `"raw"` mode. */
  readonly vnetMode: VnetMode;
  /** Live counters. */
  readonly counters: NetdevCounters = {
    rx: { frames: 0, bytes: 0, drops: 0 },
    tx: { frames: 0, bytes: 0, drops: 0 },
  };

  #fd: Fd;
  #wakeRead: Fd;
  #wakeWrite: Fd;
  #closed = false;
  #closing: Promise<void> | undefined;
  #rxBuf = new Uint8Array(new ArrayBuffer(MAX_FRAME + 16));
  #rxLen = BigInt(MAX_FRAME + 16);
  /** Views of #rxBuf by frame length, made on first use (see SMALL_FRAME). */
  #rxViews: (Uint8Array | undefined)[] | undefined;
  #burst: number;
  #rxQueueMax: number;
  #txQueueMax: number;
  #txQueue: Uint8Array<ArrayBuffer>[] = [];
  #txFlush: Promise<void> | undefined;
  #txWaiters: (() => void)[] = [];
  #listening = false;
  #pending = new Set<Promise<unknown>>();

  /**
   * Adopts an open tap fd (it becomes non-blocking and is closed by close()).
   *
   * @throws {OsError} when the fd is not a tap.
   */
  constructor(fd: Fd, options: NetdevOptions = {}) {
    const info = tapInfo(fd.value);
    if (!info.tap) throw new TypeError(`File descriptor ${fd.value} is a tun, not a tap`);
    this.#fd = fd;
    this.name = info.name;
    this.vnetHdr = info.vnetHdr;
    this.vnetHdrLen = info.vnetHdr ? vnetHdrSize(fd.value) : 0;
    this.vnetMode = options.vnetMode ?? "strip";
    this.mtu = ownMtu(fd.value, info.name);
    this.#burst = options.burst ?? 512;
    this.#rxQueueMax = options.rxQueue ?? 1024;
    this.#txQueueMax = options.txQueue ?? 1024;
    setNonBlocking(fd.value, true);
    const [a, b] = socketpair(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK);
    this.#wakeRead = new Fd(a);
    this.#wakeWrite = new Fd(b);
  }

  /** True once close() was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Reads frames until close() and calls `handler` for each, synchronously. The frame is a view
   * into a reused buffer, valid only during the call: copy it (`frame.slice()`) to keep it. The
   * view object itself is reused for later frames of the same length, so keep the copy, never
   * the view. This is the fast path; only one reader (listen, the iterator or the stream) may
   * run.
   *
   * @returns A promise that settles when the Netdev is closed (or rejects on an I/O error).
   */
  listen(handler: FrameHandler, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#listening) throw new Error("Netdev already has a reader");
    if (this.#closed) return Promise.resolve();
    this.#listening = true;
    const signal = options.signal;
    const wake = () => this.#wake();
    signal?.addEventListener("abort", wake, { once: true });
    const job = this.#readLoop(handler, signal).finally(() => {
      this.#listening = false;
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
    return this.listen((frame) => {
      // In strip mode the frame handed to listen() has no header; it was cut off in place, so
      // the header is still right before it in the same buffer.
      const base = raw
        ? frame
        : new Uint8Array(frame.buffer, frame.byteOffset - len, frame.length + len);
      handler({ frame: base.subarray(len), header: parseVnetHeader(base.subarray(0, len)) });
    }, options);
  }

  async #readLoop(handler: FrameHandler, signal: AbortSignal | undefined): Promise<void> {
    const fd = this.#fd.value;
    const buf = this.#rxBuf;
    const len = this.#rxLen;
    const strip = this.vnetHdr && this.vnetMode === "strip" ? this.vnetHdrLen : 0;
    // Counted bytes never include the header, in either mode (DirectionCounters.bytes).
    const hdr = this.vnetHdrLen;
    const rx = this.counters.rx;
    const burst = this.#burst;
    // The handler gets the same view object for every frame of a given length: a frame is only
    // valid during the call anyway, and a fresh subarray per frame was the loop's only
    // allocation (a young-generation collection every few thousand frames).
    const views = this.#rxViews ??= new Array(SMALL_FRAME).fill(undefined);
    let big: Uint8Array | undefined;
    while (!this.#closed && !signal?.aborted) {
      let n = 0;
      let i = 0;
      for (; i < burst; i++) {
        n = readRaw(fd, buf, len);
        if (n < 0) break;
        const size = n > strip ? n - strip : 0;
        let frame = size < SMALL_FRAME ? views[size] : big?.length === size ? big : undefined;
        if (frame === undefined) {
          frame = buf.subarray(strip, strip + size);
          if (size < SMALL_FRAME) views[size] = frame;
          else big = frame;
        }
        rx.frames++;
        rx.bytes += n > hdr ? n - hdr : 0;
        handler(frame);
        if (this.#closed) return;
      }
      if (n < 0 && n !== -E.EAGAIN && n !== -E.EINTR) {
        if (this.#closed) return;
        throw new OsError("read(tap)", -n);
      }
      if (i === burst) {
        // A full burst: more frames are probably waiting, so nothing to poll for. Give the
        // event loop a turn (setImmediate is a macrotask: timers and I/O run; 2-6 µs) and read
        // on. A poll here was a round trip to a worker thread (15-30 µs) per burst.
        await new Promise<void>((resolve) => setImmediate(resolve));
      } else {
        // Empty (EAGAIN) or interrupted: wait for readiness once.
        await this.#wait(POLL.IN);
      }
    }
  }

  async #wait(events: number): Promise<void> {
    if (this.#closed) return;
    const [, woke] = await pollAsync([this.#fd.value, this.#wakeRead.value], [events, POLL.IN], -1);
    if (woke && !this.#closed) {
      // Consume the wake-up so the next poll sleeps again.
      while (readRaw(this.#wakeRead.value, this.#wakeBuf, 64n) > 0) { /* drain */ }
    }
  }

  #wakeBuf = new Uint8Array(new ArrayBuffer(64));

  #wake(): void {
    try {
      write(this.#wakeWrite.value, new Uint8Array(new ArrayBuffer(1)));
    } catch { /* the wake socket is full: a wake-up is already pending */ }
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    p.then(() => this.#pending.delete(p), () => this.#pending.delete(p));
    return p;
  }

  /**
   * Frames as an async iterable; each is a copy the caller owns. Aborting `signal` ends the
   * iteration even while it waits for a frame (return() alone would queue behind that wait).
   */
  async *frames(
    options: { signal?: AbortSignal } = {},
  ): AsyncGenerator<Uint8Array, void, undefined> {
    const queue: Uint8Array[] = [];
    let notify: (() => void) | undefined;
    let failure: unknown;
    let done = false;
    const max = this.#rxQueueMax;
    const rx = this.counters.rx;
    const stop = new AbortController();
    const outer = options.signal;
    const onAbort = () => stop.abort();
    if (outer?.aborted) return;
    outer?.addEventListener("abort", onAbort, { once: true });
    const job = this.listen((frame) => {
      if (queue.length >= max) {
        rx.drops++;
        return;
      }
      queue.push(frame.slice());
      notify?.();
    }, { signal: stop.signal }).then(
      () => (done = true),
      (e) => {
        failure = e;
        done = true;
      },
    ).finally(() => notify?.());
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (done) break;
        await new Promise<void>((r) => (notify = r));
        notify = undefined;
      }
      if (failure) throw failure;
    } finally {
      // The consumer may stop early: end the reader; the Netdev stays open and usable.
      outer?.removeEventListener("abort", onAbort);
      stop.abort();
      await job;
    }
  }

  /** Same as frames(). */
  [Symbol.asyncIterator](): AsyncGenerator<Uint8Array, void, undefined> {
    return this.frames();
  }

  /** Received frames as a ReadableStream (copies the caller owns). */
  get readable(): ReadableStream<Uint8Array> {
    // cancel() aborts first: a pull is usually waiting inside the generator, and it.return()
    // alone would only run after the next frame arrived.
    const stop = new AbortController();
    const it = this.frames({ signal: stop.signal });
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const r = await it.next();
        if (stop.signal.aborted) return; // cancelled meanwhile: the stream is already closed
        if (r.done) controller.close();
        else controller.enqueue(r.value);
      },
      async cancel() {
        stop.abort();
        await it.return(undefined);
      },
    });
  }

  /** A WritableStream of frames; writes wait while the kernel queue is full. */
  get writable(): WritableStream<Uint8Array> {
    return new WritableStream<Uint8Array>({ write: (frame) => this.write(frame) });
  }

  /**
   * Sends one frame now if the kernel takes it, else queues it (bounded). Never blocks.
   *
   * @returns false when the frame was dropped because the queue was full (counted in
   * `counters.tx.drops`).
   */
  send(frame: Uint8Array): boolean {
    if (this.#closed) throw new Error("Netdev is closed");
    const out = this.#frameOut(frame);
    if (this.#txQueue.length === 0 && this.#writeOut(this.#fd.value, out)) return true;
    if (this.#txQueue.length >= this.#txQueueMax) {
      this.counters.tx.drops++;
      return false;
    }
    this.#txQueue.push(out === frame ? frame.slice() as Uint8Array<ArrayBuffer> : out);
    this.#txFlush ??= this.#track(this.#flush());
    return true;
  }

  /** Sends one frame, waiting (without dropping) while the transmit queue is full. */
  async write(frame: Uint8Array): Promise<void> {
    while (!this.#closed && this.#txQueue.length >= this.#txQueueMax) {
      await new Promise<void>((r) => this.#txWaiters.push(r));
    }
    this.send(frame);
  }

  /**
   * One write(2) of a frame as it goes on the wire, counted when it went out. Returns false
   * when the kernel is full (EAGAIN, ENOBUFS); throws on any other error.
   */
  #writeOut(fd: number, out: Uint8Array<ArrayBuffer>): boolean {
    const n = writeRaw(fd, out, bigLength(out.byteLength));
    if (n < 0) {
      if (n === -E.EAGAIN || n === -E.ENOBUFS) return false;
      throw new OsError("write(tap)", -n);
    }
    this.counters.tx.frames++;
    // Without the header, in either mode (DirectionCounters.bytes).
    this.counters.tx.bytes += Math.max(out.byteLength - this.vnetHdrLen, 0);
    return true;
  }

  #frameOut(frame: Uint8Array): Uint8Array<ArrayBuffer> {
    if (this.vnetHdr && this.vnetMode === "strip") {
      const out = new Uint8Array(new ArrayBuffer(this.vnetHdrLen + frame.length));
      out.set(frame, this.vnetHdrLen);
      return out;
    }
    return frame as Uint8Array<ArrayBuffer>;
  }

  async #flush(): Promise<void> {
    try {
      while (this.#txQueue.length > 0 && !this.#closed) {
        const fd = this.#fd.value;
        while (this.#txQueue.length > 0 && this.#writeOut(fd, this.#txQueue[0]!)) {
          this.#txQueue.shift();
        }
        for (const w of this.#txWaiters.splice(0)) w();
        if (this.#txQueue.length > 0) await this.#wait(POLL.OUT);
      }
    } finally {
      this.#txFlush = undefined;
      for (const w of this.#txWaiters.splice(0)) w();
    }
  }

  /**
   * Stops the reader, drops what is still queued for sending, and closes the tap fd (which
   * removes a non-persistent tap). Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      // Wake a poll that is waiting on another thread before closing the fds it watches.
      this.#wake();
      await Promise.allSettled([...this.#pending]);
      this.counters.tx.drops += this.#txQueue.length;
      this.#txQueue.length = 0;
      for (const w of this.#txWaiters.splice(0)) w();
      this.#fd.close();
      this.#wakeRead.close();
      this.#wakeWrite.close();
    })();
    return this.#closing;
  }

  /** Same as close(). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
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
 * The tap's MTU if its name means the same device in this process's network namespace (the
 * MAC read through the tap fd must match the one read by name), else undefined.
 */
function ownMtu(fd: number, name: string): number | undefined {
  try {
    const byFd = new Uint8Array(new ArrayBuffer(40));
    ioctl(fd, IOCTL.SIOCGIFHWADDR, byFd, "SIOCGIFHWADDR");
    using ctl = new NetControl();
    const byName = ctl.hwaddr(name);
    for (let i = 16; i < 24; i++) if (byFd[i] !== byName[i]) return undefined;
    return ctl.mtu(name);
  } catch {
    return undefined;
  }
}
