// sys/libc.ts's system calls through syscall(2): the helper's start-up binds two symbols, called
// through their addresses so that no machine code is made for them, the syscall numbers are the
// kernel's own, and every wrapper on the helper's path still returns what glibc's function
// returned and reports errno as before.

import assert from "node:assert/strict";
import {
  boundSymbols,
  buffersInFlight,
  capget,
  close,
  E,
  fstat,
  getpid,
  getresgid,
  getresuid,
  getsockoptInt,
  ifNameToIndex,
  ioctl,
  open,
  openat,
  OsError,
  PR,
  prctl,
  read,
  readSmallFile,
  recvFds,
  S,
  sendFd,
  SOCK,
  socket,
  socketpair,
  stat,
  SYSCALL_NUMBERS,
  SYSCALL_TABLES,
  write,
} from "../../sys/libc.ts";
import { madeCode } from "../_support/exec_maps.ts";

/**
 * Runs `script` with `deno eval` in a fresh process at the repository's root (so nothing another
 * test bound counts), with `flags` before it; returns what it printed, parsed as JSON.
 */
async function evalJson(script: string, flags: string[] = []): Promise<unknown> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-config", "--no-lock", "--quiet", ...flags, script],
    cwd: new URL("../../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("the helper's libc calls bind only syscall and errno's symbol, and strerror for an error", async () => {
  // A fresh process, so nothing bound by another test counts: every wrapper the helper and its
  // guard call on the way to the fd (helper.ts, guard.ts, caps/, acl/, net/bridge.ts, net/tap.ts,
  // net/link.ts, sendFd), each once, then the list of bound symbols.
  const script = `
    import * as l from "./sys/libc.ts";
    l.prctl(l.PR.GET_DUMPABLE, 0, "PR_GET_DUMPABLE");
    l.getresuid(); l.getresgid(); l.capget(); l.getpid();
    const fd = l.open("/proc/self/status", l.O.RDONLY);
    l.fstat(fd); l.read(fd, new Uint8Array(new ArrayBuffer(64))); l.close(fd);
    const dir = l.open("/proc/self", l.O.RDONLY | l.O.DIRECTORY);
    l.close(l.openat(dir, "status", l.O.RDONLY)); l.close(dir);
    l.stat("/proc/self/status");
    const [a, b] = l.socketpair(l.SOCK.AF_UNIX, l.SOCK.STREAM);
    l.getsockoptInt(a, l.SOCK.SOL_SOCKET, l.SOCK.SO_DOMAIN); l.peerCred(a);
    l.sendFd(a, b, 1000);
    l.write(b, new Uint8Array(new ArrayBuffer(1)));
    l.close(l.socket(l.SOCK.AF_NETLINK, l.SOCK.RAW, 0));
    l.close(a); l.close(b);
    l.ifNameToIndex("lo");
    try { l.open("/nonexistent/x", l.O.RDONLY); } catch (e) { if (!(e instanceof l.OsError)) throw e; }
    console.log(JSON.stringify(l.boundSymbols()));
  `;
  const bound = await evalJson(script) as string[];
  // strerror is bound only for an error's text (the ENOENT above), never on the way to the fd.
  // (errno's symbol is matched by its prefix: its full name may appear in sys/libc.ts only.)
  assert.equal(bound.length, 3, JSON.stringify(bound));
  assert.equal(bound.filter((n) => /^__errno_/.test(n)).length, 1, JSON.stringify(bound));
  assert.deepEqual(bound.filter((n) => !/^__errno_/.test(n)).sort(), ["strerror", "syscall"]);
});

Deno.test("under --jitless, calls through every libc group leave no executable memory but the binaries'", async () => {
  // --jitless keeps V8 from mapping any (its code space is read-write-execute otherwise), and
  // sys/libc.ts calls through addresses, for which Deno compiles no trampoline: a function
  // symbol would leave an anonymous r-x page per compiled trampoline. One call in each group.
  const script = `
    import * as l from "./sys/libc.ts";
    l.getpid(); l.strerror(2); l.poll([], l.POLL.IN, 0); l.getgroups();
    const [a, b] = l.socketpair(l.SOCK.AF_UNIX, l.SOCK.STREAM);
    l.setNonBlocking(a, true); l.recvFds(a);
    l.sendSome(b, new Uint8Array(new ArrayBuffer(1)));
    await l.pollAsync([a], [l.POLL.IN], 0);
    const s = l.socket(l.SOCK.AF_UNIX, l.SOCK.STREAM);
    const f = l.open("/proc/self/status", l.O.RDONLY);
    // Called for their binding: an unbound socket cannot listen, /proc cannot sync.
    for (const call of [() => l.listen(s, 1), () => l.fsync(f)]) {
      try { call(); } catch (e) { if (!(e instanceof l.OsError)) throw e; }
    }
    l.close(f); l.close(s); l.close(a); l.close(b);
    const maps = Deno.readTextFileSync("/proc/self/maps").trim().split("\\n");
    console.log(JSON.stringify({ bound: l.boundSymbols(), maps }));
  `;
  const { bound, maps } = await evalJson(script, ["--v8-flags=--single-threaded,--jitless"]) as {
    bound: string[];
    maps: string[];
  };
  for (
    const name of ["syscall", "strerror", "poll", "getgroups", "recvmsg", "listen", "fsync", "send"]
  ) {
    assert.ok(bound.includes(name), `${name} was not bound: ${JSON.stringify(bound)}`);
  }
  assert.deepEqual(madeCode(maps), []);
  assert.ok(maps.some((line) => / r-xp .*\/libc\.so\.6$/.test(line)), "libc's text is not mapped?");
});

for (
  const [arch, header] of [
    ["x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"],
    ["aarch64", "/usr/include/asm-generic/unistd.h"],
  ] as const
) {
  Deno.test({
    name: `SYSCALL_TABLES.${arch} holds the numbers of ${header}`,
    permissions: { read: true },
    fn() {
      // The headers come with linux-libc-dev (Debian installs both on x86_64); a missing one is a
      // failure, not a skip: the table would go unchecked.
      const text = Deno.readTextFileSync(header);
      const entries = Object.entries(SYSCALL_TABLES[arch]);
      assert.ok(entries.length >= 15, "the table is not empty");
      for (const [name, nr] of entries) {
        const m = new RegExp(`^#define __NR(?:3264)?_${name}\\s+(\\d+)\\s*$`, "m").exec(text);
        assert.ok(m, `${name} is not in ${header}`);
        assert.equal(nr, BigInt(m[1]!), `__NR_${name}`);
      }
    },
  });
}

Deno.test({
  name: "SYSCALL_NUMBERS is this architecture's table",
  permissions: "none",
  fn() {
    const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
    assert.equal(SYSCALL_NUMBERS, SYSCALL_TABLES[arch]);
    // A few numbers that differ between the two, so a swapped table is caught on either.
    assert.equal(SYSCALL_NUMBERS.openat, arch === "aarch64" ? 56n : 257n);
    assert.equal(SYSCALL_NUMBERS.ioctl, arch === "aarch64" ? 29n : 16n);
  },
});

Deno.test({
  name: "the syscall-based wrappers return what the kernel says and read errno",
  permissions: { read: true, ffi: true, sys: ["uid", "gid"] },
  fn() {
    assert.equal(getpid(), Deno.pid);
    const u = getresuid();
    assert.deepEqual([u.real, u.effective], [Deno.uid(), Deno.uid()]);
    const g = getresgid();
    assert.deepEqual([g.real, g.effective], [Deno.gid(), Deno.gid()]);
    assert.equal(typeof capget().effective, "bigint");
    assert.ok([0, 1].includes(prctl(PR.GET_DUMPABLE, 0, "PR_GET_DUMPABLE")));

    // errno is read straight after the failing call: ENOENT, EBADF, ENOTTY, EINVAL.
    assert.throws(() => open("/nonexistent/h9s", 0), (e) => {
      assert.ok(e instanceof OsError);
      assert.equal(e.errno, E.ENOENT);
      assert.equal(e.message, "open(/nonexistent/h9s): No such file or directory");
      return true;
    });
    assert.throws(() => close(-1), (e) => e instanceof OsError && e.errno === 9);
    const fd = open("/proc/self/status", 0);
    try {
      assert.equal(fstat(fd).mode & S.IFMT, S.IFREG);
      assert.throws(
        () => ioctl(fd, 0x8933, new Uint8Array(new ArrayBuffer(40)), "SIOCGIFINDEX"),
        (e) => e instanceof OsError && e.errno === 25 && e.syscall === "ioctl(SIOCGIFINDEX)",
      );
      const buf = new Uint8Array(new ArrayBuffer(4096));
      const n = read(fd, buf);
      assert.match(new TextDecoder().decode(buf.subarray(0, n)), /^Name:/);
      assert.throws(() => write(fd, buf), (e) => e instanceof OsError && e.errno === 9);
    } finally {
      close(fd);
    }
    // A view's pointer is its own first byte, not its buffer's: read() into a subarray.
    const again = open("/proc/self/status", 0);
    try {
      const buf = new Uint8Array(new ArrayBuffer(32));
      assert.equal(read(again, buf.subarray(10, 15)), 5);
      assert.deepEqual([...buf.subarray(0, 10)], new Array(10).fill(0));
      assert.equal(new TextDecoder().decode(buf.subarray(10, 15)), "Name:");
      assert.deepEqual([...buf.subarray(15)], new Array(17).fill(0));
    } finally {
      close(again);
    }
    assert.equal(stat("/proc/self/status").mode & S.IFMT, S.IFREG);
    const dir = open("/proc/self", 0o200000);
    try {
      close(openat(dir, "status", 0));
      assert.throws(
        () => openat(dir, "nonexistent", 0),
        (e) => e instanceof OsError && e.errno === 2,
      );
    } finally {
      close(dir);
    }
    assert.match(readSmallFile("/proc/self/status"), new RegExp(`^Pid:\\s+${Deno.pid}$`, "m"));
    const s = socket(SOCK.AF_UNIX, SOCK.DGRAM);
    try {
      assert.equal(getsockoptInt(s, SOCK.SOL_SOCKET, SOCK.SO_DOMAIN), SOCK.AF_UNIX);
      assert.equal(getsockoptInt(s, SOCK.SOL_SOCKET, SOCK.SO_TYPE), SOCK.DGRAM);
    } finally {
      close(s);
    }
  },
});

Deno.test({
  name: "ifNameToIndex() finds lo and gives 0 for a missing, too long or empty name, as glibc",
  permissions: { read: true, ffi: true },
  fn() {
    const lo = Number(readSmallFile("/sys/class/net/lo/ifindex").trim());
    assert.equal(ifNameToIndex("lo"), lo);
    assert.equal(ifNameToIndex("h9s-none0"), 0);
    assert.equal(ifNameToIndex("x".repeat(16)), 0);
    assert.equal(ifNameToIndex(""), 0);
  },
});

Deno.test({
  name: "boundSymbols() lists what is bound, each name once",
  permissions: { ffi: true },
  fn() {
    getpid();
    const names = boundSymbols();
    assert.ok(names.includes("syscall") && names.some((n) => /^__errno_/.test(n)));
    assert.equal(new Set(names).size, names.length);
  },
});

Deno.test({
  name: "the buffers held for a call are released when it returns, on success and on failure",
  permissions: { read: true, ffi: true },
  fn() {
    assert.equal(buffersInFlight(), 0);
    stat("/proc/self/status");
    assert.equal(buffersInFlight(), 0, "after statx");
    assert.throws(() => open("/nonexistent/h9s", 0), OsError);
    assert.equal(buffersInFlight(), 0, "after a failed openat");
    const [a, b] = socketpair(SOCK.AF_UNIX, SOCK.STREAM);
    try {
      sendFd(a, b, 1000);
      assert.equal(buffersInFlight(), 0, "after sendmsg");
      const got = recvFds(b);
      assert.equal(buffersInFlight(), 0, "after recvmsg");
      for (const fd of got?.fds ?? []) close(fd);
      assert.equal(got?.fds.length, 1);
    } finally {
      close(a);
      close(b);
    }
  },
});

Deno.test("readSmallFile() leaves no 64 KiB garbage buffer per call", () => {
  // It used to read into a fresh 64 KiB buffer each call: garbage V8 collects late, so the
  // bridge service, which reads a few small files per request, held about 200 MiB of such
  // buffers after a few hundred requests (with net/link.ts's, tests/net/link_test.ts). 400 calls
  // would add 25 MiB of external memory that way; the copies of what was read add a few KiB.
  const before = Deno.memoryUsage().external;
  for (let i = 0; i < 400; i++) readSmallFile("/proc/self/comm", 64);
  const grown = Deno.memoryUsage().external - before;
  assert.ok(grown < 2 * 1024 * 1024, `external memory grew by ${(grown / 1048576).toFixed(1)} MiB`);
});
