// Tests for net/poller.ts, the readiness waits behind every Netdev, on Unix socket pairs (no tap,
// no privilege): a wait ends when its fd is ready and not before, two fds waiting at once share
// one wait on a worker thread, what is ready already is taken without one, wake() and remove()
// end waits, no wake-up is lost, an idle wait costs no CPU, and the last remove() closes the
// poller's own fds. The Netdevs' use of it (a forwarder's two readers) is in
// tests/privileged/netdev_test.ts.

import assert from "node:assert/strict";
import process from "node:process";
import { pollerCounts, Watch } from "../../net/poller.ts";
import { Fd } from "../../sys/fd.ts";
import { EPOLL, readRaw } from "../../sys/io.ts";
import { SOCK, socketpair, write } from "../../sys/libc.ts";

/** A connected, non-blocking pair: write to `peer`, watch `fd`. */
function pair(): { fd: Fd; peer: Fd; [Symbol.dispose](): void } {
  const [a, b] = socketpair(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK);
  const fd = new Fd(a);
  const peer = new Fd(b);
  return {
    fd,
    peer,
    [Symbol.dispose]() {
      fd.close();
      peer.close();
    },
  };
}

const buf = new Uint8Array(new ArrayBuffer(4096));
const drain = (fd: Fd) => {
  while (readRaw(fd.value, buf, 4096n) > 0) { /* empty it */ }
};
const poke = (fd: Fd) => write(fd.value, Uint8Array.of(1));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resolves to true when `p` settles within `ms`, false otherwise. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

async function openFds(): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir("/proc/self/fd")) n++;
  return n;
}

Deno.test("Watch.wait() ends when the fd is readable, and not before", async () => {
  using p = pair();
  const w = new Watch(p.fd.value);
  const waiting = w.wait(EPOLL.IN);
  assert.equal(await settlesWithin(waiting, 100), false, "woke with nothing to read");
  poke(p.peer);
  assert.equal(await settlesWithin(waiting, 2000), true, "never woke for a readable fd");
  await w.remove();
});

Deno.test("Watch.wait(EPOLL.OUT) ends when the fd is writable", async () => {
  using p = pair();
  const w = new Watch(p.fd.value);
  assert.equal(await settlesWithin(w.wait(EPOLL.OUT), 2000), true);
  await w.remove();
});

Deno.test("two fds waiting at once share one wait on a worker thread", async () => {
  using a = pair();
  using b = pair();
  const wa = new Watch(a.fd.value);
  const wb = new Watch(b.fd.value);
  const before = pollerCounts();
  const waitA = wa.wait(EPOLL.IN);
  const waitB = wb.wait(EPOLL.IN);
  await sleep(50);
  assert.equal(pollerCounts().parks - before.parks, 1, "one epoll_wait on a worker thread");
  poke(b.peer);
  assert.equal(await settlesWithin(waitB, 2000), true);
  assert.equal(await settlesWithin(waitA, 50), false, "a's wait ended with b's frame");
  poke(a.peer);
  assert.equal(await settlesWithin(waitA, 2000), true);
  await wa.remove();
  await wb.remove();
});

Deno.test("a wait for an fd that is ready already needs no worker thread", async () => {
  using p = pair();
  const w = new Watch(p.fd.value);
  poke(p.peer);
  const before = pollerCounts();
  assert.equal(await settlesWithin(w.wait(EPOLL.IN), 2000), true);
  const after = pollerCounts();
  assert.equal(after.parks - before.parks, 0);
  assert.equal(after.readyNow - before.readyNow, 1);
  await w.remove();
});

Deno.test("wake() ends a wait now; with no wait, the next wait returns at once", async () => {
  using p = pair();
  const w = new Watch(p.fd.value);
  const waiting = w.wait(EPOLL.IN);
  await sleep(20);
  w.wake();
  assert.equal(await settlesWithin(waiting, 2000), true, "wake() did not end the wait");
  w.wake();
  assert.equal(await settlesWithin(w.wait(EPOLL.IN), 50), true, "the early wake() was lost");
  assert.equal(await settlesWithin(w.wait(EPOLL.IN), 100), false, "one wake() ended two waits");
  await w.remove();
});

Deno.test("remove() ends the waits; the last one closes the poller's own fds", async () => {
  using a = pair();
  using b = pair();
  const fds = await openFds();
  const wa = new Watch(a.fd.value);
  const wb = new Watch(b.fd.value);
  const waitA = wa.wait(EPOLL.IN);
  const waitB = wb.wait(EPOLL.IN);
  await sleep(20);
  assert.equal(await openFds(), fds + 3, "an epoll fd and a wake socket pair while waiting");
  await wa.remove();
  assert.equal(await settlesWithin(waitA, 2000), true, "remove() did not end the wait");
  assert.equal(await settlesWithin(waitB, 50), false, "b's wait ended with a's remove()");
  await wb.remove();
  assert.equal(await settlesWithin(waitB, 2000), true);
  assert.equal(await openFds(), fds, "the poller's fds stayed open");
  assert.equal(await settlesWithin(wa.wait(EPOLL.IN), 50), true, "a removed watch waited");
});

Deno.test("no wake-up is lost: 3000 ping-pongs between two watched fds", async () => {
  using x = pair();
  using y = pair();
  const wx = new Watch(x.fd.value);
  const wy = new Watch(y.fd.value);
  const ROUNDS = 3000;
  // x pokes y and waits for the answer; y waits, then answers: every wait races the other
  // side's write.
  const side = async (me: Fd, w: Watch, other: Fd, starts: boolean) => {
    for (let i = 0; i < ROUNDS; i++) {
      if (starts) poke(other);
      await w.wait(EPOLL.IN);
      while (readRaw(me.value, buf, 4096n) <= 0) await w.wait(EPOLL.IN);
      if (!starts) poke(other);
    }
  };
  const done = Promise.all([side(x.fd, wx, y.peer, true), side(y.fd, wy, x.peer, false)]);
  assert.equal(await settlesWithin(done, 20_000), true, "a wake-up was lost: the pair stalled");
  drain(x.fd);
  drain(y.fd);
  await wx.remove();
  await wy.remove();
});

Deno.test("an idle wait costs no CPU", async () => {
  using p = pair();
  const w = new Watch(p.fd.value);
  const waiting = w.wait(EPOLL.IN);
  await sleep(50);
  const cpu0 = process.cpuUsage();
  await sleep(500);
  const cpu = process.cpuUsage(cpu0);
  const ms = (cpu.user + cpu.system) / 1000;
  assert.ok(ms < 50, `${ms.toFixed(1)} ms of CPU in 500 ms of waiting`);
  poke(p.peer);
  assert.equal(await settlesWithin(waiting, 2000), true);
  await w.remove();
});
