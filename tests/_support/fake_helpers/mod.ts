// argv builders for the fake bridge helpers, and the /proc probes the tests use to prove that a
// helper run leaked no fd and left no process behind.

/** The Deno fake helper (see fake_helper.ts for the modes). */
export const FAKE_HELPER: string = new URL("./fake_helper.ts", import.meta.url).pathname;

/**
 * argv of the Deno fake helper in `mode` (with mode arguments); runHelper appends
 * `[--use-vnet] --fd=3 --br=BR`. Runs without the project's config so it never touches the
 * lockfile.
 */
export function fakeHelper(mode: string, ...args: string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-prompt",
    "--no-config",
    "--no-lock",
    "--allow-all",
    FAKE_HELPER,
    mode,
    ...args,
  ];
}

/**
 * A helper that reports, on stderr, its argv after `$0` (one `arg:` line each) and every open
 * fd with its target (`ls -l /proc/PID/fd`), then exits 1. It is `sh -c`, not a Deno program,
 * because a Deno runtime opens fds of its own; and `ls` runs as a child with no pipe in
 * between, so the listing shows exactly the fds the helper was started with.
 */
export const LIST_FDS: readonly string[] = [
  "sh",
  "-c",
  'exec >&2; for a in "$@"; do printf "arg:%s\\n" "$a"; done; ls -l /proc/$$/fd; exit 1',
  "fake-list-fds",
];

/**
 * A helper that starts a grandchild (`sleep 30`) sharing its fds, including the socket, writes
 * the grandchild's pid to `pidFile`, and then exits with `then` when it is a number, or execs
 * `then` (an argv; runHelper's arguments are appended to it).
 */
export function forkingHelper(pidFile: string, then: number | readonly string[]): string[] {
  const tail = typeof then === "number" ? `exit ${then}` : 'shift; exec "$@"';
  return [
    "sh",
    "-c",
    `sleep 30 & echo $! > "$1"; echo "fake-forking: started grandchild $!" >&2; ${tail}`,
    "fake-forking",
    pidFile,
    ...(typeof then === "number" ? [] : then),
  ];
}

/**
 * A helper that writes its pid to `pidFile` and then never finishes (`exec sleep`, so the pid
 * stays the same). Plain sh: it must be hanging well before a 300 ms abort.
 */
export function hangingHelper(pidFile: string): string[] {
  return ["sh", "-c", 'echo $$ > "$1"; exec sleep 1000', "fake-hang", pidFile];
}

/** fd number → what it points at, for this process. */
export async function openFds(): Promise<Map<number, string>> {
  const fds = new Map<number, string>();
  for await (const e of Deno.readDir("/proc/self/fd")) {
    try {
      fds.set(Number(e.name), await Deno.readLink(`/proc/self/fd/${e.name}`));
    } catch { /* the directory's own fd, gone by now */ }
  }
  return fds;
}

/** The fds in `after` that were not open (with the same target) in `before`. */
export function newFds(before: Map<number, string>, after: Map<number, string>): string[] {
  return [...after].filter(([fd, to]) => before.get(fd) !== to).map(([fd, to]) => `${fd} -> ${to}`);
}

/** A process as /proc/PID/stat shows it. */
export interface ProcInfo {
  /** Process id. */
  pid: number;
  /** State letter: R, S, D, Z, ... */
  state: string;
  /** Parent pid. */
  ppid: number;
  /** The command name (comm). */
  comm: string;
}

/** Reads /proc/PID/stat; undefined when the process does not exist (reaped). */
export async function procInfo(pid: number): Promise<ProcInfo | undefined> {
  let stat: string;
  try {
    stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so cut at the last ")".
  const close = stat.lastIndexOf(")");
  const [state, ppid] = stat.slice(close + 2).split(" ");
  return { pid, state: state!, ppid: Number(ppid), comm: stat.slice(stat.indexOf("(") + 1, close) };
}

/** Every live or zombie child of this process. */
export async function children(): Promise<ProcInfo[]> {
  const out: ProcInfo[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const p = await procInfo(Number(e.name));
    if (p?.ppid === Deno.pid) out.push(p);
  }
  return out;
}
