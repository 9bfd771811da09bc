// One Deno contender of `deno task bench:netdev`, run by bench/netdev.ts inside the bench's
// network namespace: "ours" (Netdev.listen / Netdev.send), "base" (the same from another
// version of net/netdev.ts, for before/after comparisons) or "naive" (one awaited worker-thread
// read or write per frame). It attaches to the persistent tap by name, as bench/tap_loop.c
// does, prints "ready", waits for a line on stdin, runs, and prints one JSON line with the
// same fields and the same measuring window as tap_loop.c.
//
//   _netdev_worker.ts '<WorkerConfig as JSON>'

import process from "node:process";
import type { Netdev } from "../net/netdev.ts";
import { PATHS } from "./_netdev_paths.ts";
import type { NetdevPath } from "./_netdev_paths.ts";
import { attachTap, openTun } from "../net/tap.ts";
import type { Fd } from "../sys/fd.ts";
import { benchOnlyReadAsync, benchOnlyWriteAsync } from "../sys/io.ts";
import { POLL, pollAsync, setNonBlocking } from "../sys/libc.ts";
import { IFF } from "../sys/structs.ts";

/** What bench/netdev.ts asks for. */
export interface WorkerConfig {
  /** The contender. */
  role: "ours" | "base" | "naive";
  /** For "ours": which API path (default listen() or send()). */
  path?: NetdevPath;
  /** Receive from or send to the tap. */
  dir: "rx" | "tx";
  /** The persistent tap to attach to. */
  ifname: string;
  /** Frame length in bytes (TX). */
  size: number;
  /** Stop after this many frames. */
  frames: number;
  /** Stop after this long, whatever happened. */
  timeoutMs: number;
  /** The measuring window starts after this many frames (JIT warm-up); a multiple of 64. */
  warm: number;
  /** RX: stop when no frame came for this long (after the first). */
  idleMs: number;
  /** TX: destination MAC. */
  dst: string;
  /** TX: source MAC. */
  src: string;
  /** Where Netdev comes from (role "base": another version of net/netdev.ts). */
  netdevModule?: string;
  /** Sample VmRSS this many times during the run (evenly by frame count). */
  rssSamples?: number;
}

/** What a contender reports; bench/tap_loop.c prints the same but rssKb. */
export interface WorkerResult {
  /** Frames moved in all. */
  frames: number;
  /** Bytes moved in all. */
  bytes: number;
  /** Frames in the measuring window (after the warm-up, when the run got past it). */
  windowFrames: number;
  /** Length of the window. */
  seconds: number;
  /** CPU time (user + system, every thread) in the window. */
  cpuSeconds: number;
  /** CPU time from "go" to the end: every frame, warm-up included. */
  allCpuSeconds: number;
  /** Frames the contender itself dropped or had to retry. */
  retries: number;
  /** VmRSS in KiB before the first frame, at each sample, and after the last frame. */
  rssKb?: { frames: number; kb: number }[];
}

const cfg = JSON.parse(Deno.args[0] ?? "{}") as WorkerConfig;
if (
  !["ours", "base", "naive"].includes(cfg.role) || !["rx", "tx"].includes(cfg.dir) ||
  !Number.isInteger(cfg.size) || cfg.size < 60 || cfg.size > 65535 ||
  !Number.isInteger(cfg.frames) || cfg.frames <= 0 || !(cfg.timeoutMs > 0) ||
  !Number.isInteger(cfg.warm) || cfg.warm < 64 || cfg.warm % 64 !== 0 ||
  (cfg.path !== undefined && !(PATHS[cfg.dir] as readonly string[]).includes(cfg.path))
) {
  console.error(`_netdev_worker.ts: bad config: ${Deno.args[0]}`);
  Deno.exit(2);
}
const count = cfg.frames;

function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function rssKb(): number {
  const m = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) : -1;
}

/**
 * The measuring window, as in tap_loop.c: marks at frame 1 and at frame `warm`, the clock read
 * every 64 frames (`tick`), the window from the warm-up mark (or frame 1) to the last tick.
 */
class Meter {
  frames = 0;
  bytes = 0;
  #go = cpuNow();
  #one = { frames: 0, t: 0, cpu: 0 };
  #warmed = { frames: 0, t: 0, cpu: 0 };
  #last = 0;
  #timed = 0;
  #cpuEnd = -1;
  #rss: { frames: number; kb: number }[] = [{ frames: 0, kb: rssKb() }];
  #rssStep: number;
  #rssNext: number;

  constructor() {
    this.#rssStep = cfg.rssSamples ? Math.max(64, Math.floor(count / cfg.rssSamples)) : Infinity;
    this.#rssNext = this.#rssStep;
  }

  /** The clock at frame `n` (call at frame 1, every 64th, the warm-up and the last). */
  tick(n: number): void {
    const t = performance.now() / 1000;
    this.#last = t;
    this.#timed = n;
    // Each mark is taken once: a receiver also ticks when its queue runs empty.
    if (n === 1 && this.#one.t === 0) this.#one = { frames: 1, t, cpu: cpuNow() };
    if (n === cfg.warm && this.#warmed.t === 0) this.#warmed = { frames: n, t, cpu: cpuNow() };
    if (n === count) this.#cpuEnd = cpuNow();
    if (n >= this.#rssNext) {
      this.#rss.push({ frames: n, kb: rssKb() });
      while (this.#rssNext <= n) this.#rssNext += this.#rssStep;
    }
  }

  /** For senders: the window starts before the first frame. */
  startAtZero(): void {
    this.#one = { frames: 0, t: performance.now() / 1000, cpu: cpuNow() };
  }

  result(retries: number): WorkerResult {
    if (this.#cpuEnd < 0) this.#cpuEnd = cpuNow();
    this.#rss.push({ frames: this.frames, kb: rssKb() });
    const w = this.#warmed;
    const from = w.frames > 0 && this.#timed > w.frames ? w : this.#one;
    const windowFrames = this.frames - from.frames;
    const span = this.#timed - from.frames;
    return {
      frames: this.frames,
      bytes: this.bytes,
      windowFrames,
      seconds: span > 0 ? ((this.#last - from.t) * windowFrames) / span : 0,
      cpuSeconds: this.#cpuEnd - from.cpu,
      allCpuSeconds: this.#cpuEnd - this.#go,
      retries,
      rssKb: this.#rss,
    };
  }
}

function frameOf(len: number): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(new ArrayBuffer(len));
  const mac = (s: string) => s.split(":").map((h) => parseInt(h, 16));
  f.set(mac(cfg.dst), 0);
  f.set(mac(cfg.src), 6);
  f[12] = 0x88; // ethertype 0x88b5: local experimental, never IP, so bridge netfilter ignores it
  f[13] = 0xb5;
  return f;
}

async function ready(): Promise<void> {
  console.log("ready");
  // The parent always answers with a line, or kills us.
  await Deno.stdin.read(new Uint8Array(64));
}

function tap(): Fd {
  const tun = openTun();
  try {
    attachTap(tun, IFF.TAP | IFF.NO_PI, cfg.ifname);
  } catch (e) {
    tun.close();
    throw e;
  }
  return tun;
}

/** Our Netdev (or the baseline version), adopting the attached tap as tapNetdev() does. */
async function netdev(): Promise<Netdev> {
  const mod = cfg.role === "base" && cfg.netdevModule
    ? await import(cfg.netdevModule) as typeof import("../net/netdev.ts")
    : await import("../net/netdev.ts");
  const fd = tap();
  // Older versions (role "base") took the Fd object, newer ones the number: ask the source.
  const takesFd = cfg.role === "base" && cfg.netdevModule !== undefined &&
    /constructor\(fd: Fd\b/.test(Deno.readTextFileSync(new URL(cfg.netdevModule, "file:///")));
  return takesFd ? new mod.Netdev(fd as never) : new mod.Netdev(fd.release());
}

/** Receiving with one of the Netdev paths, written as a user would write the loop. */
async function oursRx(): Promise<WorkerResult> {
  const nic = await netdev();
  await ready();
  const m = new Meter();
  const stop = new AbortController();
  const signal = stop.signal;
  // Per frame: what every contender does (count, and read the clock every 64 frames).
  const take = (frame: Uint8Array): boolean => {
    m.bytes += frame.length;
    const n = ++m.frames;
    if ((n & 63) === 0 || n === 1 || n === count) {
      m.tick(n);
      if (n === count) {
        stop.abort();
        return false;
      }
    }
    return true;
  };
  const idle = untilIdle(() => m.frames, stop);
  const path = cfg.path ?? "listen()";
  switch (path) {
    case "listen()":
      await nic.listen(take, { signal });
      break;
    case "for await":
      // Ended by the abort (through close() below when idle) or the frame count.
      signal.addEventListener("abort", () => void nic.close(), { once: true });
      for await (const frame of nic) if (!take(frame)) break;
      break;
    case "frames({reuse})":
      for await (const frame of nic.frames({ signal, reuse: true })) if (!take(frame)) break;
      break;
    case "readable": {
      const reader = nic.readable.getReader();
      signal.addEventListener("abort", () => void reader.cancel(), { once: true });
      for (;;) {
        const r = await reader.read();
        if (r.done || !take(r.value)) break;
      }
      break;
    }
    case "batches()":
      outer: for await (const batch of nic.batches({ signal })) {
        for (const frame of batch) if (!take(frame)) break outer;
      }
      break;
    default:
      throw new Error(`unknown rx path ${path}`);
  }
  stop.abort();
  await idle;
  const result = m.result(nic.counters.rx.drops);
  await nic.close();
  return result;
}

/** Sending with one of the Netdev paths, written as a user would write the loop. */
async function oursTx(): Promise<WorkerResult> {
  const nic = await netdev();
  const frame = frameOf(cfg.size);
  await ready();
  const m = new Meter();
  m.startAtZero();
  const start = performance.now();
  let dropped = 0;
  const path = cfg.path ?? "send()";
  const mark = (n: number): boolean => {
    if ((n & 63) === 0 || n === count) {
      m.frames = n;
      m.tick(n);
      if (performance.now() - start > cfg.timeoutMs) return false;
    }
    return true;
  };
  if (path === "send()") {
    for (let n = 1; n <= count; n++) {
      if (!nic.send(frame)) dropped++;
      if (!mark(n)) break;
    }
  } else if (path === "write()") {
    for (let n = 1; n <= count; n++) {
      if (!await nic.write(frame)) dropped++;
      if (!mark(n)) break;
    }
  } else if (path === "writable") {
    const writer = nic.writable.getWriter();
    for (let n = 1; n <= count; n++) {
      await writer.write(frame);
      if (!mark(n)) break;
    }
    await writer.close();
  } else if (path === "writeBatch()") {
    // A forwarder's shape: a batch of frames handed over at once (64 here).
    const batch = Array.from({ length: 64 }, () => frame);
    for (let n = 64; n <= count; n += 64) {
      dropped += 64 - nic.writeBatch(batch);
      if (!mark(n)) break;
    }
  } else {
    throw new Error(`unknown tx path ${path}`);
  }
  // A tap never pushes back in practice; if it did, let the queue flush (bounded).
  for (let i = 0; i < 100 && nic.counters.tx.frames + dropped < m.frames; i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  m.frames = nic.counters.tx.frames;
  m.bytes = nic.counters.tx.bytes;
  const result = m.result(dropped + nic.counters.tx.errors);
  await nic.close();
  return result;
}

/** Receiving naively: one awaited worker-thread read(2) per frame. */
async function naiveRx(): Promise<WorkerResult> {
  using tun = tap();
  setNonBlocking(tun.value, true);
  const fd = tun.value;
  const buf = new Uint8Array(new ArrayBuffer(65536 + 16));
  const len = BigInt(buf.byteLength);
  await ready();
  const m = new Meter();
  const start = performance.now();
  while (m.frames < count && performance.now() - start < cfg.timeoutMs) {
    const got = await benchOnlyReadAsync(fd, buf, len);
    if (got > 0) {
      const frame = buf.subarray(0, got);
      m.bytes += frame.length;
      const n = ++m.frames;
      if ((n & 63) === 0 || n === 1 || n === count) m.tick(n);
      continue;
    }
    // Empty (errno is lost on the worker thread; EAGAIN is the only expected error).
    if (m.frames > 0) m.tick(m.frames);
    const [revents] = await pollAsync([fd], [POLL.IN], m.frames > 0 ? cfg.idleMs : 1000);
    if (!revents && m.frames > 0) break;
  }
  return m.result(0);
}

/** Sending naively: one awaited worker-thread write(2) per frame. */
async function naiveTx(): Promise<WorkerResult> {
  using tun = tap();
  const fd = tun.value;
  const frame = frameOf(cfg.size);
  const len = BigInt(frame.byteLength);
  await ready();
  const m = new Meter();
  m.startAtZero();
  const start = performance.now();
  let retries = 0;
  while (m.frames < count && performance.now() - start < cfg.timeoutMs) {
    const got = await benchOnlyWriteAsync(fd, frame, len);
    if (got < 0) {
      retries++;
      await pollAsync([fd], [POLL.OUT], 100);
      continue;
    }
    m.bytes += got;
    const n = ++m.frames;
    if ((n & 63) === 0 || n === count) m.tick(n);
  }
  m.tick(m.frames);
  return m.result(retries);
}

/** Resolves once no frame came for idleMs (after the first), or timeoutMs passed. */
function untilIdle(progress: () => number, stop: AbortController): Promise<void> {
  const start = performance.now();
  let seen = -1;
  let since = start;
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      const n = progress();
      if (n !== seen) {
        seen = n;
        since = now;
      }
      const idle = n > 0 && now - since > cfg.idleMs;
      if (stop.signal.aborted || idle || now - start > cfg.timeoutMs) {
        clearInterval(timer);
        stop.abort();
        resolve();
      }
    }, 10);
  });
}

const result = cfg.role === "naive"
  ? (cfg.dir === "rx" ? await naiveRx() : await naiveTx())
  : (cfg.dir === "rx" ? await oursRx() : await oursTx());
console.log(JSON.stringify(result));
// A worker-thread read may still be parked on the fd; exit without waiting for it.
Deno.exit(0);
