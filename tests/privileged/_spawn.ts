// Test harness: starts a helper (ours or QEMU's C one) with a Unix socket as fd 3, the way QEMU
// does, but keeps everything observable: exit status, stdout and stderr apart, the fd it sent.
// Unlike net/run_helper.ts it never judges the outcome, so a test can assert failures exactly.

import { childPidfd } from "../../net/run_helper.ts";
import { Fd } from "../../sys/fd.ts";
import {
  POLL,
  pollAsync,
  read,
  recvFds,
  setNonBlocking,
  SOCK,
  socket,
  socketpair,
  write,
} from "../../sys/libc.ts";
import { type ExitStatus, kill, spawn, tryWait } from "../../sys/io.ts";

/** What the socket at fd 3 is. */
export type SocketMode =
  /** A connected socketpair whose other end we keep and read (what QEMU does). */
  | "pair"
  /** A socketpair whose other end is closed before the helper starts: sendmsg gets EPIPE. */
  | "closed-peer"
  /** No fd 3 at all. */
  | "none"
  /** An AF_UNIX stream socket that was never connected: it has no peer. */
  | "unconnected"
  /**
   * A connected socketpair whose helper end has a full send buffer, and whose other end we keep
   * but never read: the helper's sendmsg can never complete (a caller that does not read).
   */
  | "full";

/** How a raw run ended. */
export interface RawRun {
  /** How the process ended. */
  status: ExitStatus;
  /** Everything written to fd 1. */
  stdout: string;
  /** Everything written to fd 2. */
  stderr: string;
  /** Every fd received on the socket (close-on-exec, owned by the caller). */
  fds: Fd[];
  /** Data bytes received on the socket. */
  bytes: number;
  /** The process outlived `timeoutMs` and was killed with SIGKILL. */
  timedOut: boolean;
}

/** Options for {@linkcode runRaw}. */
export interface RawOptions {
  /** fd 3; "pair" by default. */
  socket?: SocketMode;
  /**
   * Kill the process with SIGKILL after this many milliseconds and report `timedOut` (a hang is
   * an outcome to assert, not a stuck suite). Default 30 s.
   */
  timeoutMs?: number;
}

/** `argv` is run without PATH search only when argv[0] contains a slash, as posix_spawnp does. */
export async function runRaw(argv: readonly string[], options: RawOptions = {}): Promise<RawRun> {
  const mode = options.socket ?? "pair";
  const timeoutMs = options.timeoutMs ?? 30_000;
  const pair = (): [Fd, Fd] =>
    socketpair(SOCK.AF_UNIX, SOCK.STREAM).map((n) => new Fd(n)) as [Fd, Fd];
  const [outRead, outWrite] = pair();
  const [errRead, errWrite] = pair();
  const [mine, theirs] = mode === "none"
    ? [undefined, undefined]
    : mode === "unconnected"
    ? [undefined, new Fd(socket(SOCK.AF_UNIX, SOCK.STREAM))]
    : pair();
  // Every fd is closed on every path (close() is idempotent, so early closes below are fine).
  using _or = outRead, _ow = outWrite, _er = errRead, _ew = errWrite, _m = mine, _t = theirs;
  // The peer is gone before the helper even starts, so its sendmsg must see EPIPE.
  if (mode === "closed-peer") mine?.close();
  if (mode === "full" && theirs) fillSendBuffer(theirs.value);
  const fdMap = new Map([[1, outWrite.value], [2, errWrite.value]]);
  if (theirs) fdMap.set(3, theirs.value);
  const pid = spawn({ argv, searchPath: !argv[0]!.includes("/"), fds: fdMap, devNull: [0] });
  theirs?.close();
  outWrite.close();
  errWrite.close();
  using pidfd = await childPidfd(pid);
  // In "full" mode our end is never read: reading it would make room for the helper.
  const sock = mine?.open && mode !== "full" ? mine : undefined;
  for (const fd of [outRead, errRead, ...(sock ? [sock] : [])]) setNonBlocking(fd.value, true);

  const chunk = new Uint8Array(new ArrayBuffer(4096));
  const text = { out: "", err: "" };
  const open = { out: true, err: true, sock: sock !== undefined };
  const fds: Fd[] = [];
  let bytes = 0;
  const dec = { out: new TextDecoder(), err: new TextDecoder() };
  const drain = (which: "out" | "err", fd: Fd) => {
    while (open[which]) {
      const n = read(fd.value, chunk);
      if (n < 0) return;
      if (n === 0) {
        open[which] = false;
        return;
      }
      text[which] += dec[which].decode(chunk.subarray(0, n), { stream: true });
    }
  };
  const drainSock = () => {
    while (open.sock && sock) {
      const r = recvFds(sock.value);
      if (r === undefined) return;
      fds.push(...r.fds.map((n) => new Fd(n)));
      bytes += r.bytes;
      if (r.bytes === 0 && r.fds.length === 0) open.sock = false;
    }
  };

  const deadline = Date.now() + timeoutMs;
  let status: ExitStatus | undefined;
  let timedOut = false;
  try {
    while (status === undefined || open.out || open.err) {
      if (Date.now() > deadline) {
        if (status !== undefined) {
          // Exited, but something it started still holds stdout or stderr open.
          throw new Error(`Output still open ${timeoutMs} ms after exit: ${argv.join(" ")}`);
        }
        kill(pid, 9);
        timedOut = true;
        while ((status = tryWait(pid)) === undefined) {
          await pollAsync([pidfd.value], [POLL.IN], 100);
        }
        drainSock();
        drain("out", outRead);
        drain("err", errRead);
        break;
      }
      const watch = [pidfd.value, outRead.value, errRead.value, ...(sock ? [sock.value] : [])];
      const events = [
        status === undefined ? POLL.IN : 0,
        open.out ? POLL.IN : 0,
        open.err ? POLL.IN : 0,
        open.sock ? POLL.IN : 0,
      ];
      await pollAsync(watch, events, 50);
      drainSock();
      drain("out", outRead);
      drain("err", errRead);
      status ??= tryWait(pid);
    }
    drainSock();
  } catch (e) {
    for (const fd of fds) fd.close();
    if (status === undefined) {
      kill(pid, 9);
      while (tryWait(pid) === undefined) await pollAsync([pidfd.value], [POLL.IN], 100);
    }
    throw e;
  }
  return {
    status,
    stdout: text.out + dec.out.decode(),
    stderr: text.err + dec.err.decode(),
    fds,
    bytes,
    timedOut,
  };
}

/** Closes every fd of a run (idempotent). */
export function closeAll(run: RawRun): void {
  for (const fd of run.fds) fd.close();
}

/** "exit N" or "signal N", for messages. */
export function describeStatus(status: ExitStatus): string {
  return status.exited ? `exit ${status.code}` : `signal ${status.signal}`;
}

/** True for exit status 0. */
export function succeeded(status: ExitStatus): boolean {
  return status.exited && status.code === 0;
}

/**
 * Writes to a socket until the kernel refuses more (its send buffer, and the peer's receive
 * queue, are full), then makes it blocking again; returns the bytes queued.
 */
export function fillSendBuffer(fd: number): number {
  setNonBlocking(fd, true);
  const filler = new Uint8Array(new ArrayBuffer(4096)).fill(0xaa);
  let queued = 0;
  for (let n; (n = write(fd, filler)) > 0;) queued += n;
  setNonBlocking(fd, false);
  return queued;
}
