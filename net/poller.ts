// Readiness waits for the Netdevs: one epoll set for the whole process, at most one wait on a
// worker thread at a time, and a look on the calling thread before parking there.
//
// Why: a poll(2) on a worker thread is a round trip (thread hand-off, futexes, a promise: 15-30
// µs) that a C loop does not pay. A forwarder's two readers each paid it for every idle moment,
// and TCP through a forwarder is idle often: most wakes carried one or two frames. Here the two
// share one epoll_wait, and before a new one parks, an epoll_wait(timeout 0) on the calling
// thread (one system call) takes what became ready meanwhile.

import { Fd } from "../sys/fd.ts";
import { SOCK, socketpair, write } from "../sys/libc.ts";
import {
  EPOLL,
  epollCreate,
  epollCtl,
  EpollEvents,
  epollWaitAsync,
  epollWaitNow,
  readRaw,
} from "../sys/io.ts";

/** The token of the poller's own wake socket; watched fds get 1, 2, ... */
const WAKE = 0;
/** Events taken per epoll_wait. */
const MAX_EVENTS = 64;
const RESOLVED: Promise<void> = Promise.resolve();
/** The byte written to the wake socket (its own ArrayBuffer, as every buffer sys/libc.ts takes). */
const ONE_BYTE = new Uint8Array(new ArrayBuffer(1));

/** The process's poller, made on the first wait and closed when nothing is watched. */
let shared: Poller | undefined;

const counts = { parks: 0, readyNow: 0 };

/**
 * How the process's waits went so far (for the tests and benches): `parks` counts epoll_waits
 * on a worker thread, `readyNow` the looks on the calling thread that found something ready
 * (and so saved one).
 */
export function pollerCounts(): { parks: number; readyNow: number } {
  return { ...counts };
}

/**
 * One fd's waits: `wait()` for readability or writability, `wake()` to end them early.
 * Registered with the process's poller on the first wait, removed by `remove()`.
 */
export class Watch {
  /** The fd watched. */
  readonly fd: number;
  /** Resolves the reader's wait (EPOLL.IN). */
  in: (() => void) | undefined;
  /** Resolves the writer's wait (EPOLL.OUT). */
  out: (() => void) | undefined;
  /** The events the kernel's registration is armed for now (EPOLLONESHOT: 0 once it fired). */
  armed = 0;
  /** True once the fd is in the poller's epoll set (EPOLL_CTL_ADD done). */
  added = false;
  /** Its token in the poller's set; 0 while not registered. */
  token = 0;
  /** The poller it is registered with. */
  poller: Poller | undefined;
  /** A wake() that found nobody waiting: the next wait() returns at once. */
  #woken = false;
  #removed = false;

  /** Watches `fd` (nothing is registered until the first wait). */
  constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Resolves when `fd` is ready for `events` (EPOLL.IN or EPOLL.OUT; also on an error or
   * hang-up), or when wake() or remove() is called. It may resolve without the fd being ready:
   * the caller tries its read or write again and waits again on EAGAIN.
   *
   * @throws {OsError} (as a rejection) when the kernel refuses the fd (epoll_ctl).
   */
  wait(events: number): Promise<void> {
    if (this.#removed) return RESOLVED;
    if (this.#woken) {
      this.#woken = false;
      return RESOLVED;
    }
    if (this.poller === undefined || this.poller.closed) {
      this.poller = shared && !shared.closed ? shared : (shared = new Poller());
      this.token = 0;
      this.armed = 0;
      this.added = false;
    }
    try {
      return this.poller.wait(this, events);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Ends the current waits now; when nobody waits, the next wait returns at once. */
  wake(): void {
    if (!this.poller?.wake(this)) this.#woken = true;
  }

  /**
   * Ends the waits and takes the fd out of the poller's set, before the fd is closed. Resolves
   * once no wait of the poller is left on a worker thread when this was the last fd watched.
   */
  remove(): Promise<void> {
    this.#removed = true;
    const p = this.poller;
    this.poller = undefined;
    return p ? p.remove(this) : RESOLVED;
  }
}

/** The epoll set and its one outstanding wait. Internal: use {@linkcode Watch}. */
export class Poller {
  #ep: Fd;
  #wakeRead: Fd;
  #wakeWrite: Fd;
  #watches = new Map<number, Watch>();
  #nextToken = 1;
  /** For the look on the calling thread. */
  #now = new EpollEvents(MAX_EVENTS);
  /** For the wait on a worker thread: written by that thread until it returns. */
  #parked = new EpollEvents(MAX_EVENTS);
  #inFlight: Promise<void> | undefined;
  /** Waits ended by wake() while the worker's wait was being interrupted: resolved after it. */
  #afterFlight: (() => void)[] = [];
  #interrupted = false;
  #kickQueued = false;
  /** Waits not yet resolved. */
  #waiting = 0;
  #closed = false;
  #drain = new Uint8Array(new ArrayBuffer(64));

  constructor() {
    const ep = new Fd(epollCreate());
    let pair: [number, number];
    try {
      pair = socketpair(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK);
    } catch (e) {
      ep.close();
      throw e;
    }
    this.#ep = ep;
    this.#wakeRead = new Fd(pair[0]);
    this.#wakeWrite = new Fd(pair[1]);
    try {
      epollCtl(ep.value, EPOLL.CTL_ADD, pair[0], EPOLL.IN, WAKE);
    } catch (e) {
      this.#close();
      throw e;
    }
  }

  /** True once its fds are closed (nothing was watched any more). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Watch.wait(): arms the fd for `events` and resolves when it fires. */
  wait(w: Watch, events: number): Promise<void> {
    if (w.token === 0) {
      let t = this.#nextToken;
      while (t === WAKE || this.#watches.has(t)) t = (t + 1) >>> 0;
      this.#nextToken = (t + 1) >>> 0;
      w.token = t;
      this.#watches.set(t, w);
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    const out = events === EPOLL.OUT;
    // A second wait of the same kind ends the first (the caller re-checks either way).
    const old = out ? w.out : w.in;
    if (old) {
      this.#waiting--;
      old();
    }
    if (out) w.out = resolve;
    else w.in = resolve;
    this.#waiting++;
    try {
      this.#arm(w);
    } catch (e) {
      if (out) w.out = undefined;
      else w.in = undefined;
      this.#waiting--;
      throw e;
    }
    this.#schedule();
    return promise;
  }

  /** Watch.wake(): resolves its waits; false when it had none. */
  wake(w: Watch): boolean {
    const ended = this.#take(w);
    if (ended.length === 0) return false;
    if (this.#waiting === 0 && this.#inFlight) {
      // Nobody else waits: stop the worker's wait, and resolve these once it has returned, so
      // that a reader that ends leaves no system call running behind it.
      this.#afterFlight.push(...ended);
      this.#interrupt();
    } else {
      for (const r of ended) r();
    }
    return true;
  }

  /** Watch.remove(): ends its waits and unregisters the fd (EPOLL_CTL_DEL). */
  remove(w: Watch): Promise<void> {
    this.wake(w);
    if (w.token !== 0 && this.#watches.get(w.token) === w) {
      this.#watches.delete(w.token);
      if (w.added) {
        try {
          epollCtl(this.#ep.value, EPOLL.CTL_DEL, w.fd, 0, 0);
        } catch { /* closed under us: the kernel dropped it from the set already */ }
      }
    }
    w.token = 0;
    w.armed = 0;
    w.added = false;
    if (this.#watches.size > 0) return RESOLVED;
    if (!this.#inFlight) {
      this.#close();
      return RESOLVED;
    }
    this.#interrupt();
    return this.#inFlight;
  }

  #take(w: Watch): (() => void)[] {
    const ended: (() => void)[] = [];
    if (w.in) ended.push(w.in);
    if (w.out) ended.push(w.out);
    w.in = w.out = undefined;
    this.#waiting -= ended.length;
    return ended;
  }

  /** Arms the fd's one-shot registration for what its waiters want, if it is not already. */
  #arm(w: Watch): void {
    const want = (w.in ? EPOLL.IN : 0) | (w.out ? EPOLL.OUT : 0);
    if ((want & ~w.armed) === 0) return;
    // EPOLLONESHOT: it reports once, then stays quiet until armed again, so an fd nobody
    // waits on (its reader is busy) never wakes the worker's wait, and an error condition
    // cannot make it return in a loop.
    const op = w.added ? EPOLL.CTL_MOD : EPOLL.CTL_ADD;
    epollCtl(this.#ep.value, op, w.fd, want | EPOLL.ONESHOT, w.token);
    w.added = true;
    w.armed = want;
  }

  /** Runs #kick once, after the callbacks already queued (the readers just woken re-arm). */
  #schedule(): void {
    if (this.#kickQueued) return;
    this.#kickQueued = true;
    setImmediate(this.#kick);
  }

  #kick = (): void => {
    this.#kickQueued = false;
    if (this.#closed || this.#inFlight || this.#waiting === 0) return;
    // What is ready already costs one system call here, against a round trip to a worker.
    const n = epollWaitNow(this.#ep.value, this.#now);
    if (n > 0) {
      counts.readyNow++;
      this.#dispatch(this.#now, n);
      if (this.#waiting > 0) this.#schedule();
      return;
    }
    this.#park();
  };

  /** Sleeps on a worker thread until a watched fd fires (or #interrupt). */
  #park(): void {
    this.#interrupted = false;
    counts.parks++;
    const done = (n: number) => {
      this.#inFlight = undefined;
      if (n > 0) this.#dispatch(this.#parked, n);
      for (const r of this.#afterFlight.splice(0)) r();
      if (this.#watches.size === 0) this.#close();
      else if (this.#waiting > 0) this.#schedule();
    };
    this.#inFlight = epollWaitAsync(this.#ep.value, this.#parked).then(done, () => done(-1));
  }

  #dispatch(events: EpollEvents, n: number): void {
    for (let i = 0; i < n; i++) {
      const token = events.token(i);
      if (token === WAKE) {
        while (readRaw(this.#wakeRead.value, this.#drain, 64n) > 0) { /* drain */ }
        continue;
      }
      const w = this.#watches.get(token);
      if (w === undefined) continue; // removed since: its token is never reused while set
      w.armed = 0; // one-shot: it fired
      const mask = events.mask(i);
      const bad = mask & (EPOLL.ERR | EPOLL.HUP);
      if (w.in && (mask & EPOLL.IN || bad)) {
        const r = w.in;
        w.in = undefined;
        this.#waiting--;
        r();
      }
      if (w.out && (mask & EPOLL.OUT || bad)) {
        const r = w.out;
        w.out = undefined;
        this.#waiting--;
        r();
      }
      if (w.in || w.out) {
        // Still waited on for the other direction: arm it again.
        try {
          this.#arm(w);
        } catch {
          for (const r of this.#take(w)) r(); // the caller's own read or write will fail
        }
      }
    }
  }

  /** Makes the worker's epoll_wait return (the wake socket is in the set). */
  #interrupt(): void {
    if (this.#interrupted || !this.#inFlight) return;
    this.#interrupted = true;
    try {
      write(this.#wakeWrite.value, ONE_BYTE);
    } catch { /* the socket is full: a wake-up is already pending */ }
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ep.close();
    this.#wakeRead.close();
    this.#wakeWrite.close();
    if (shared === this) shared = undefined;
  }
}
