// Privilege handling for the helper: detect how it was started, drop a set-user-ID-root start
// to the caller keeping only CAP_NET_ADMIN, verify the result, and lock the process down.
// Every call here is synchronous on the main thread: capabilities are per thread.

import {
  capget,
  capset,
  E,
  getresgid,
  getresuid,
  listDir,
  OsError,
  PR,
  prctl,
  readSmallFile,
  setresgid,
  setresuid,
  setresuidThisThread,
} from "../sys/libc.ts";

/** CAP_NET_ADMIN, the one capability the helper needs. */
export const CAP_NET_ADMIN = 12;
const NET_ADMIN_MASK = 1n << BigInt(CAP_NET_ADMIN);

/** How the helper was started. */
export type PrivilegeMode =
  /** Run by root: no drop, as in QEMU. */
  | "root"
  /** A set-user-ID-root binary run by a user: must drop before anything else. */
  | "setuid-root"
  /** Run as the caller, with file capabilities or none at all. */
  | "user";

/** Something about the process's privileges is not what it must be; the helper exits. */
export class PrivilegeError extends Error {
  /** `message` is one line. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PrivilegeError";
  }
}

/** Reads the real, effective and saved ids and decides the mode. */
export function detectMode(): PrivilegeMode {
  const uid = getresuid();
  const gid = getresgid();
  if (uid.real === 0) return "root";
  // Any root id held by a non-root caller (effective or saved), or a set-group-ID start, is
  // treated as set-user-ID: better to drop once too often than to keep a root id.
  if (
    uid.effective === 0 || uid.saved === 0 || gid.effective !== gid.real ||
    gid.saved !== gid.real
  ) {
    return "setuid-root";
  }
  return "user";
}

function lastCap(): number {
  const n = Number.parseInt(readSmallFile("/proc/sys/kernel/cap_last_cap").trim(), 10);
  if (!Number.isInteger(n) || n < CAP_NET_ADMIN || n > 63) {
    throw new PrivilegeError(`Unexpected /proc/sys/kernel/cap_last_cap: ${n}`);
  }
  return n;
}

/**
 * Drops a set-user-ID-root start to the caller's uid and gid with only CAP_NET_ADMIN.
 *
 * The order matters and is the one that was measured to work: the bounding set can only be
 * cleared while we still hold CAP_SETPCAP, i.e. before setresuid; KEEPCAPS keeps the permitted
 * set across setresuid; the caller's supplementary groups are kept (group-readable include
 * files depend on them), as libcap-ng does for QEMU's helper.
 */
export function dropSetuidRoot(): void {
  const uid = getresuid().real;
  const gid = getresgid().real;
  try {
    const last = lastCap();
    for (let cap = 0; cap <= last; cap++) {
      if (cap !== CAP_NET_ADMIN) prctl(PR.CAPBSET_DROP, cap, `PR_CAPBSET_DROP ${cap}`);
    }
    prctl(PR.SET_KEEPCAPS, 1, "PR_SET_KEEPCAPS");
    setresgid(gid, gid, gid);
    setresuid(uid, uid, uid);
    capset({ effective: NET_ADMIN_MASK, permitted: NET_ADMIN_MASK, inheritable: 0n });
    prctl(PR.SET_KEEPCAPS, 0, "PR_SET_KEEPCAPS");
    prctl(PR.CAP_AMBIENT, PR.CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL");
  } catch (e) {
    throw new PrivilegeError(
      `failed to drop privileges${e instanceof OsError ? `: ${e.message}` : ""}`,
      { cause: e },
    );
  }
  verifyDropped(uid, gid);
}

/**
 * Re-reads the process state after the drop and throws unless it is exactly what was asked:
 * every thread runs as the caller, root cannot be regained, only CAP_NET_ADMIN is held and the
 * bounding set holds nothing else.
 */
export function verifyDropped(uid: number, gid: number): void {
  const u = getresuid();
  const g = getresgid();
  if (u.real !== uid || u.effective !== uid || u.saved !== uid) {
    throw new PrivilegeError(
      `failed to drop privileges: uids are ${u.real}/${u.effective}/${u.saved}`,
    );
  }
  if (g.real !== gid || g.effective !== gid || g.saved !== gid) {
    throw new PrivilegeError(
      `failed to drop privileges: gids are ${g.real}/${g.effective}/${g.saved}`,
    );
  }
  // Root must be gone for good: setresuid(0, 0, 0) has to fail. The raw call on this thread
  // only: glibc's setresuid() would repeat it on every thread, and on a thread that kept
  // CAP_SETUID (e.g. under SECBIT_NO_SETUID_FIXUP) the probe itself would restore root there
  // (glibc then aborts the process on the mismatch). The other threads are checked below.
  let regained = false;
  try {
    setresuidThisThread(0, 0, 0);
    regained = true;
  } catch { /* expected: EPERM */ }
  if (regained) throw new PrivilegeError("failed to drop privileges: setresuid(0, 0, 0) succeeded");
  const caps = capget();
  if (
    caps.effective !== NET_ADMIN_MASK || caps.permitted !== NET_ADMIN_MASK ||
    caps.inheritable !== 0n
  ) {
    throw new PrivilegeError(
      `failed to drop privileges: capabilities are eff=${caps.effective.toString(16)} ` +
        `prm=${caps.permitted.toString(16)} inh=${caps.inheritable.toString(16)}`,
    );
  }
  const last = lastCap();
  for (let cap = 0; cap <= last; cap++) {
    const inSet = prctl(PR.CAPBSET_READ, cap, "PR_CAPBSET_READ") === 1;
    if (inSet !== (cap === CAP_NET_ADMIN)) {
      throw new PrivilegeError(`failed to drop privileges: bounding set still holds ${cap}`);
    }
  }
  // glibc broadcasts setresuid/setresgid to every thread; check that it reached them all (the
  // runtime's own threads included) and that no thread holds a capability but CAP_NET_ADMIN:
  // capabilities are per thread, and only this one was trimmed by capset.
  for (const [tid, status] of threadStatuses()) {
    const problem = threadStatusProblem(status, uid, gid);
    if (problem !== undefined) {
      throw new PrivilegeError(`failed to drop privileges: thread ${tid} ${problem}`);
    }
  }
}

/**
 * Every thread of this process with its `/proc/self/task/TID/status` text, read now. A thread
 * that exited since the listing holds nothing any more and is left out; any other failure
 * throws (fail closed: a status that cannot be read cannot be checked).
 */
export function* threadStatuses(): Generator<[tid: string, status: string]> {
  for (const tid of listDir("/proc/self/task")) {
    let status: string;
    try {
      status = readSmallFile(`/proc/self/task/${tid}/status`);
    } catch (e) {
      if (e instanceof OsError && (e.errno === E.ENOENT || e.errno === E.ESRCH)) continue;
      throw e;
    }
    yield [tid, status];
  }
}

/**
 * Checks one `/proc/PID/task/TID/status` text after a drop: all four uids and gids must be the
 * caller's, and the permitted, effective, inheritable and ambient sets may hold nothing but
 * CAP_NET_ADMIN. Returns what is wrong, or undefined. Pure.
 *
 * @param status The text of the status file.
 * @param uid The caller's uid.
 * @param gid The caller's gid.
 * @returns One line saying what is wrong, or undefined when the thread is as required.
 */
export function threadStatusProblem(status: string, uid: number, gid: number): string | undefined {
  const field = (key: string) => status.match(new RegExp(`^${key}:[ \t]*(.*)$`, "m"))?.[1]?.trim();
  const want = (n: number) => `${n}\t${n}\t${n}\t${n}`;
  const uids = field("Uid");
  const gids = field("Gid");
  if (uids !== want(uid) || gids !== want(gid)) {
    return `has Uid ${JSON.stringify(uids)} Gid ${JSON.stringify(gids)}`;
  }
  for (const set of ["CapInh", "CapPrm", "CapEff", "CapAmb"]) {
    const hex = field(set);
    if (hex === undefined || !/^[0-9a-f]{1,16}$/.test(hex)) {
      return `has no readable ${set} (${JSON.stringify(hex)})`;
    }
    if (BigInt(`0x${hex}`) & ~NET_ADMIN_MASK) return `still holds capabilities ${set}=${hex}`;
  }
  return undefined;
}

/**
 * Locks the process down in every mode: no new privileges for anything it might exec, and not
 * dumpable (a file-capability process is dumpable by default; a core would hold its memory).
 */
export function lockDown(): void {
  prctl(PR.SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS");
  prctl(PR.SET_DUMPABLE, 0, "PR_SET_DUMPABLE");
}
