// Runs a bridge helper the way QEMU does (a Unix socketpair, the child's end as fd 3,
// `--use-vnet` only when asked, never a shell) and receives the tap fd it sends back.

import { Fd } from "../sys/fd.ts";
import {
  close,
  OsError,
  POLL,
  pollAsync,
  read,
  recvFds,
  setNonBlocking,
  SOCK,
  socketpair,
} from "../sys/libc.ts";
import { kill, pidfdOpen, spawn, tryWait } from "../sys/io.ts";
import type { ExitStatus } from "../sys/io.ts";
import { escapeForMessage } from "./ifname.ts";
import { tapPortProblem } from "./tap_port.ts";
import { tapInfo } from "./tap.ts";

/** The fd number the helper gets its socket on, as QEMU's `--fd=` for a fresh child. */
export const HELPER_FD = 3;

/** Output kept from a failing helper's stderr. */
const MAX_STDERR = 64 * 1024;

/**
 * How long a helper may run before it is killed, unless `timeoutMs` says otherwise. Ours takes
 * well under a second; the margin is for a loaded machine, not for a helper that hangs.
 */
export const DEFAULT_HELPER_TIMEOUT_MS = 30_000;

/**
 * Data a helper may write to its socket. The protocol is one byte with one fd; a helper that
 * keeps writing is killed once it passed this, rather than read (and stored) forever.
 */
const MAX_SOCKET_BYTES = 4096;

/** Bytes read from stderr per wake-up, so that a flood cannot keep the event loop busy. */
const STDERR_READ_PER_ROUND = 256 * 1024;

/** Why a helper run failed, with what it printed. */
export class BridgeHelperError extends Error {
  /** Everything the helper wrote to stdout and stderr (at most 64 KiB). */
  readonly stderr: string;
  /** How the helper ended, when it ended. */
  readonly status: ExitStatus | undefined;

  /** `message` is one line; `stderr` is appended to it after a colon when not empty. */
  constructor(message: string, stderr: string, status?: ExitStatus, options?: ErrorOptions) {
    const detail = stderr.trim();
    super(detail ? `${message}: ${detail.split("\n").join(" | ")}` : message, options);
    this.name = "BridgeHelperError";
    this.stderr = stderr;
    this.status = status;
  }
}

/** What to run and how. */
export interface RunHelperOptions {
  /** The helper: a path (run with execv semantics, as QEMU: no PATH search) or an argv array. */
  helper: string | readonly string[];
  /** The bridge name, passed as `--br=NAME`. */
  bridge: string;
  /** Pass `--use-vnet`. */
  vnetHdr: boolean;
  /** Aborting kills the helper and rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * Kill the helper and reject with a BridgeHelperError if it has not finished after this many
   * milliseconds. Default {@linkcode DEFAULT_HELPER_TIMEOUT_MS}.
   */
  timeoutMs?: number;
}

/**
 * A pidfd for a child we just started. If there is none to be had, the child is killed and
 * reaped before the error is rethrown: without a pidfd it cannot be waited for asynchronously,
 * and it must never be left behind.
 */
export async function childPidfd(pid: number): Promise<Fd> {
  try {
    return new Fd(pidfdOpen(pid));
  } catch (e) {
    kill(pid, 9);
    while (tryWait(pid) === undefined) await new Promise((r) => setTimeout(r, 10));
    throw e;
  }
}

function describe(status: ExitStatus): string {
  return status.exited ? `exit status ${status.code}` : `signal ${status.signal}`;
}

/**
 * Runs the helper and returns the tap fd it sent, owned by the caller.
 *
 * Unlike QEMU: the control message is checked (level, type, length, truncation, exactly one
 * fd), the fd must be a tun/tap fd, a helper that exits non-zero or sends nothing is an error
 * carrying its stderr, and every fd received on a failure path is closed.
 */
export async function runHelper(options: RunHelperOptions): Promise<Fd> {
  options.signal?.throwIfAborted();
  const timeoutMs = options.timeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS;
  if (!(timeoutMs > 0 && timeoutMs <= 2 ** 31 - 1)) {
    throw new RangeError(`Invalid helper timeout: ${timeoutMs} ms`);
  }
  const base = typeof options.helper === "string" ? [options.helper] : [...options.helper];
  if (base.length === 0 || base[0] === "") throw new TypeError("The helper command is empty");
  const argv = [
    ...base,
    ...(options.vnetHdr ? ["--use-vnet"] : []),
    `--fd=${HELPER_FD}`,
    `--br=${options.bridge}`,
  ];

  // Every fd is owned by a `using` as soon as it exists, so a throw anywhere below closes it
  // (closing twice is a no-op: the child's ends are closed right after the spawn).
  const pair = () => socketpair(SOCK.AF_UNIX, SOCK.STREAM).map((n) => new Fd(n)) as [Fd, Fd];
  const [mine, theirs] = pair();
  using _m = mine;
  using _t = theirs;
  const [errRead, errWrite] = pair();
  using _er = errRead;
  using _ew = errWrite;
  // Only our ends: each end of a socketpair is its own open file, so the child's stay blocking.
  // Done before the spawn, so that nothing between the spawn and the try below can throw.
  setNonBlocking(mine.value, true);
  setNonBlocking(errRead.value, true);
  let pid: number;
  try {
    pid = spawn({
      argv,
      // A string is a path, as QEMU's execv; an argv array may name a program on PATH.
      searchPath: typeof options.helper !== "string" && !base[0]!.includes("/"),
      fds: new Map([[1, errWrite.value], [2, errWrite.value], [HELPER_FD, theirs.value]]),
      devNull: [0],
    });
  } catch (e) {
    theirs.close();
    errWrite.close();
    // The reason (ENOENT, EACCES, ...) belongs in the message: there is no stderr to show.
    const why = e instanceof OsError ? e.strerror : String(e);
    throw new BridgeHelperError(
      `Failed to start the bridge helper ${JSON.stringify(base[0])}: ${why}`,
      "",
      undefined,
      { cause: e },
    );
  }
  theirs.close();
  errWrite.close();
  using pidfd = await childPidfd(pid);
  const deadline = performance.now() + timeoutMs;
  /** Kills the helper and reaps it; afterwards its pid is free and must not be used again. */
  const killAndReap = async (): Promise<ExitStatus> => {
    kill(pid, 9);
    for (;;) {
      const s = tryWait(pid);
      if (s !== undefined) return s;
      await pollAsync([pidfd.value], [POLL.IN], 100);
    }
  };

  const received: number[] = [];
  const problems: string[] = [];
  let gotMessage = false;
  let socketBytes = 0;
  let stderr = "";
  const decoder = new TextDecoder();
  const chunk = new Uint8Array(new ArrayBuffer(4096));
  let status: ExitStatus | undefined;
  let sockOpen = true;
  let errOpen = true;

  const drainStderr = () => {
    for (let taken = 0; errOpen && taken < STDERR_READ_PER_ROUND; taken += chunk.length) {
      const n = read(errRead.value, chunk, "read(helper stderr)");
      if (n < 0) return; // EAGAIN
      if (n === 0) {
        errOpen = false;
        return;
      }
      if (stderr.length < MAX_STDERR) {
        stderr += decoder.decode(chunk.subarray(0, n), { stream: true });
      }
    }
  };
  /** False once the helper wrote more than MAX_SOCKET_BYTES: then it is no longer read. */
  const drainSocket = (): boolean => {
    while (sockOpen) {
      const r = recvFds(mine.value);
      if (r === undefined) return true;
      received.push(...r.fds);
      socketBytes += r.bytes;
      if (socketBytes > MAX_SOCKET_BYTES) return false;
      if (r.bytes === 0 && r.fds.length === 0) {
        sockOpen = false;
        return true;
      }
      if (gotMessage && !problems.includes("more than one message")) {
        problems.push("more than one message");
      }
      gotMessage = true;
      problems.push(...r.problems);
    }
    return true;
  };
  const flooded = () =>
    new BridgeHelperError(
      `Bridge helper kept writing to its socket: more than ${MAX_SOCKET_BYTES} bytes`,
      stderr,
      status,
    );
  const closeReceived = () => {
    for (const fd of received.splice(0)) {
      try {
        close(fd);
      } catch { /* already gone */ }
    }
  };

  try {
    while (status === undefined) {
      if (options.signal?.aborted) {
        // Record the status: the catch below must not kill or wait for a pid already reaped
        // (waitpid would fail with ECHILD and hide the abort reason, and kill could hit an
        // unrelated process that reused the pid).
        status = await killAndReap();
        throw options.signal.reason;
      }
      if (performance.now() >= deadline) {
        status = await killAndReap();
        drainStderr();
        stderr += decoder.decode();
        throw new BridgeHelperError(
          `Bridge helper did not finish within ${timeoutMs / 1000} s`,
          stderr,
          status,
        );
      }
      const fds = [pidfd.value, mine.value, errRead.value];
      const events = [POLL.IN, sockOpen ? POLL.IN : 0, errOpen ? POLL.IN : 0];
      await pollAsync(fds, events, 50);
      if (!drainSocket()) {
        status = await killAndReap();
        throw flooded();
      }
      drainStderr();
      status = tryWait(pid);
    }
    // The child is gone: take whatever it left in the socket and the pipe.
    if (!drainSocket()) throw flooded();
    drainStderr();
    stderr += decoder.decode();
    if (!status.exited || status.code !== 0) {
      throw new BridgeHelperError(`Bridge helper failed (${describe(status)})`, stderr, status);
    }
    if (!gotMessage) {
      throw new BridgeHelperError(
        "Bridge helper exited 0 without sending a file descriptor",
        stderr,
        status,
      );
    }
    if (problems.length > 0 || received.length !== 1) {
      throw new BridgeHelperError(
        `Bridge helper sent a bad control message: ${problems.join("; ") || "no fd"}`,
        stderr,
        status,
      );
    }
    const fd = new Fd(received.pop()!);
    try {
      if (!tapInfo(fd.value).tap) throw new Error("it is a tun, not a tap");
    } catch (e) {
      fd.close();
      throw new BridgeHelperError(
        `Bridge helper sent a file descriptor that is not a tap: ${
          e instanceof Error ? e.message : e
        }`,
        stderr,
        status,
        { cause: e },
      );
    }
    // A tap, but on which bridge? QEMU's C helper, given an alternative name, attaches to the
    // bridge it names; any helper may be wrong. The tap must be a port of the bridge whose own
    // name was asked for; if it cannot be checked, it is not used either.
    let misplaced: string | undefined;
    try {
      misplaced = tapPortProblem(fd.value, options.bridge);
    } catch (e) {
      misplaced = `it could not be checked: ${e instanceof Error ? e.message : String(e)}`;
    }
    if (misplaced !== undefined) {
      fd.close();
      throw new BridgeHelperError(
        `Bridge helper sent a tap that is not a port of bridge \`${
          escapeForMessage(options.bridge)
        }': ${misplaced}`,
        stderr,
        status,
      );
    }
    return fd;
  } catch (e) {
    closeReceived();
    // Never leave a child behind, whatever went wrong.
    if (status === undefined) status = await killAndReap();
    throw e;
  }
}
