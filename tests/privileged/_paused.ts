// Observing a running helper without a hook in it: fd 3 is a Unix stream socket whose send
// buffer was filled beforehand, so the helper's final sendmsg waits for room after all its other
// work; /proc/PID/syscall shows it there (in poll: the wait is bounded, 5 s). The test then stops
// the helper with SIGSTOP, so that its time limit cannot run out while /proc is inspected, drains
// exactly the filler with read(), lets it continue (the restarted poll sees the room before it
// looks at the clock) and takes the helper's message with recvmsg.

import assert from "node:assert/strict";
import { Fd } from "../../sys/fd.ts";
import { read, recvFds, setNonBlocking, SOCK, socketpair, write } from "../../sys/libc.ts";
import { type ExitStatus, kill, spawn, tryWait } from "../../sys/io.ts";
import type { NetNs } from "../_support/ns.ts";

/** sendmsg, and the poll of the helper's bounded wait for room (glibc: ppoll on aarch64). */
const WAITING_SYSCALLS: ReadonlySet<number> = new Set(
  Deno.build.arch === "aarch64" ? [211, 73] : [46, 7],
);
const SIGSTOP = 19, SIGCONT = 18;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fields of a /proc status file. */
export function fields(status: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of status.split("\n")) {
    const i = line.indexOf(":");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1).trim().replace(/\s+/g, " "));
  }
  return m;
}

/** The pid of the helper: in `ns`, running helper.ts, and waiting to send. */
async function findBlockedHelper(
  ns: NetNs,
  deadline: number,
  started: number,
): Promise<number | ExitStatus> {
  const netns = `net:[${(await Deno.stat(`/run/netns/${ns.name}`)).ino}]`;
  while (Date.now() < deadline) {
    const gone = tryWait(started);
    if (gone !== undefined) return gone;
    for await (const e of Deno.readDir("/proc")) {
      if (!/^[0-9]+$/.test(e.name)) continue;
      try {
        if ((await Deno.readLink(`/proc/${e.name}/ns/net`)) !== netns) continue;
        const cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
        // bin/qemu-bridge-helper passes `<repo>/bin/../helper.ts`.
        if (!/\/helper\.ts\0/.test(cmdline)) continue;
        const syscall = await Deno.readTextFile(`/proc/${e.name}/syscall`);
        if (!WAITING_SYSCALLS.has(Number(syscall.split(" ")[0]))) continue;
        // Its tap is open: this is the final wait, not a poll of the runtime's start-up.
        for await (const f of Deno.readDir(`/proc/${e.name}/fd`)) {
          const to = await Deno.readLink(`/proc/${e.name}/fd/${f.name}`).catch(() => "");
          if (to === "/dev/net/tun") return Number(e.name);
        }
      } catch { /* gone, or not ours */ }
    }
    await sleep(50);
  }
  throw new Error("the helper never blocked in sendmsg");
}

/** What a paused run showed and gave. */
export interface PausedRun {
  /** How the process started by `argv` ended. */
  status: ExitStatus;
  /** Its stdout and stderr together. */
  stderr: string;
  /** The fd the helper sent; the caller closes it. */
  fd: Fd;
  /** Every thread's /proc status fields, by thread id, taken while the helper waited. */
  threads: Map<string, Map<string, string>>;
  /** The helper's pid (its main thread's id). */
  pid: number;
  /**
   * The owner of /proc/PID/status while it waited: root for a non-dumpable process whatever its
   * uid (the kernel's task_dump_owner; not the /proc/PID directory itself), its euid otherwise.
   */
  procOwner: number;
}

/**
 * Runs `argv` (ending in the helper and its arguments, `--fd=3`) with fd 3 a socket whose send
 * buffer is full, inspects every thread's /proc status while the helper waits in sendmsg, then
 * drains the socket, receives the tap fd and waits for the exit. `whilePaused` runs while the
 * helper waits, with its pid.
 */
export async function runPaused(
  ns: NetNs,
  argv: readonly string[],
  whilePaused?: (pid: number) => Promise<void>,
): Promise<PausedRun> {
  const [mine, theirs] = socketpair(SOCK.AF_UNIX, SOCK.STREAM).map((n) => new Fd(n)) as [Fd, Fd];
  const [errRead, errWrite] = socketpair(SOCK.AF_UNIX, SOCK.STREAM).map((n) => new Fd(n)) as [
    Fd,
    Fd,
  ];
  using _m = mine;
  using _e = errRead;
  // Fill the helper's end until the kernel refuses more; count it to drain exactly that much.
  setNonBlocking(theirs.value, true);
  const filler = new Uint8Array(new ArrayBuffer(4096)).fill(0xaa);
  let queued = 0;
  for (let n; (n = write(theirs.value, filler)) > 0;) queued += n;
  setNonBlocking(theirs.value, false);

  let pid: number;
  try {
    pid = spawn({
      argv,
      searchPath: true,
      fds: new Map([[1, errWrite.value], [2, errWrite.value], [3, theirs.value]]),
      devNull: [0],
    });
  } finally {
    theirs.close();
    errWrite.close();
  }
  const deadline = Date.now() + 60_000;
  let status: ExitStatus | undefined;
  let stopped: number | undefined;
  try {
    const found = await findBlockedHelper(ns, deadline, pid);
    if (typeof found !== "number") {
      status = found;
      setNonBlocking(errRead.value, true);
      const n = read(errRead.value, filler);
      const text = n > 0 ? new TextDecoder().decode(filler.subarray(0, n)) : "";
      throw new Error(`the helper ended (${JSON.stringify(found)}) before it sent: ${text}`);
    }
    const helper = found;
    // Frozen, its 5 s limit cannot run out while we look; SIGCONT comes after the drain below.
    kill(helper, SIGSTOP);
    stopped = helper;
    const procOwner = (await Deno.stat(`/proc/${helper}/status`)).uid ?? -1;
    await whilePaused?.(helper);
    const threads = new Map<string, Map<string, string>>();
    for await (const t of Deno.readDir(`/proc/${helper}/task`)) {
      threads.set(t.name, fields(await Deno.readTextFile(`/proc/${helper}/task/${t.name}/status`)));
    }

    // Drain exactly the filler with read(), which must not swallow the helper's message (a
    // read() would take its byte and drop the fd), then take that message with recvmsg.
    setNonBlocking(mine.value, true);
    const buf = new Uint8Array(new ArrayBuffer(65536));
    while (queued > 0) {
      const n = read(mine.value, buf.subarray(0, Math.min(queued, buf.length)));
      if (n < 0) {
        await sleep(5);
        continue;
      }
      assert.ok(n > 0 && buf.subarray(0, n).every((b) => b === 0xaa), "filler corrupted");
      queued -= n;
    }
    kill(helper, SIGCONT);
    stopped = undefined;
    let fds: number[] = [];
    while (fds.length === 0 && Date.now() < deadline) {
      const r = recvFds(mine.value);
      if (r === undefined) {
        await sleep(5);
        continue;
      }
      assert.deepEqual(r.problems, []);
      assert.equal(r.bytes, 1);
      fds = r.fds;
    }
    assert.equal(fds.length, 1, "no fd received");
    const fd = new Fd(fds[0]!);
    while ((status = tryWait(pid)) === undefined && Date.now() < deadline) await sleep(20);
    assert.ok(status, "the helper did not exit");
    setNonBlocking(errRead.value, true);
    let stderr = "";
    for (let n; (n = read(errRead.value, buf)) > 0;) {
      stderr += new TextDecoder().decode(buf.subarray(0, n));
    }
    return { status, stderr, fd, threads, pid: helper, procOwner };
  } finally {
    if (stopped !== undefined) kill(stopped, SIGCONT);
    if (status === undefined) {
      new Deno.Command("kill", { args: ["-9", String(pid)] }).outputSync();
      while (tryWait(pid) === undefined) await sleep(20);
    }
  }
}
