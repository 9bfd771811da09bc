// Reads /etc/qemu/bridge.conf and its includes into a list of rules. Parsing is in parse.ts;
// this file does the I/O and the safety checks on each file and every directory above it (pure
// functions over stat results, separate from the walk that opens them), and fails closed.

import { escapeForMessage } from "../net/ifname.ts";
import { Fd } from "../sys/fd.ts";
import {
  E,
  type FileStat,
  fstat,
  O,
  open,
  openat,
  OsError,
  readAll,
  readlinkat,
  S,
} from "../sys/libc.ts";
import type { AclRule } from "./parse.ts";
import { parseAcl } from "./parse.ts";

/** The ACL path: a build-time constant, never taken from the environment or argv. */
export const ACL_FILE = "/etc/qemu/bridge.conf";

/** How deep `include` may nest (the main file is depth 0). */
export const MAX_INCLUDE_DEPTH = 8;

/** The largest ACL file read, in bytes. */
export const MAX_FILE_BYTES = 1 << 20;

/** How many symlinks one path may pass through (the kernel's MAXSYMLINKS). */
export const MAX_SYMLINKS = 40;

/** Any reason the ACL as a whole cannot be trusted; the helper then denies. */
export class AclError extends Error {
  /** The file the problem is in. */
  readonly file: string;

  /** `message` is one line and names the file (and line, for syntax errors). */
  constructor(file: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AclError";
    this.file = file;
  }
}

/** Options for loadAcl(); the defaults are the only values the helper uses. */
export interface LoadOptions {
  /**
   * The uid that must own every ACL file (root); directories on the way may be owned by root or
   * by it. Tests that run unprivileged pass their own.
   */
  trustedUid?: number;
  /**
   * Called for an include that is missing (ENOENT, ENOTDIR) or that the caller may not read
   * (EACCES), and is therefore skipped, with strerror's text and the errno.
   */
  onSkip?: (path: string, reason: string, errno: number) => void;
  /**
   * Whether the caller may search (`want` 1) a directory on the way or read (`want` 4) the file;
   * false fails that step with EACCES, as the kernel would for that caller. Default: the kernel
   * alone decides for this process. The bridge service passes its client's view
   * (service/policy.ts), so it reads the ACL as the helper run by that client would.
   */
  access?: (st: FileStat, want: 4 | 1) => boolean;
}

/**
 * Loads the ACL at `path` with every include.
 *
 * Differences from the C helper, all fail-closed: a relative include is resolved against the
 * including file's directory (not the caller-controlled cwd); cycles and nesting deeper than
 * MAX_INCLUDE_DEPTH are errors; a syntax error anywhere rejects the whole ACL; a file that is
 * not a regular file, not owned by root, or writable by group or others is refused, and so is
 * every file below a directory, from `/` down, that is not owned by root or is writable by group
 * or others (see openChecked()). A missing or unreadable include is skipped, as in QEMU:
 * per-group include files readable only by that group are the documented way to give different
 * users different bridges; its rules, `deny` ones included, then do not apply to this caller.
 *
 * @throws {AclError} when the main file cannot be read or anything in the ACL is wrong.
 */
export function loadAcl(path: string, options: LoadOptions = {}): AclRule[] {
  const rules: AclRule[] = [];
  const trustedUid = options.trustedUid ?? 0;
  const stack: { path: string; key: string }[] = [];

  const visit = (file: string, depth: number, optional: boolean): void => {
    let fd: Fd;
    try {
      fd = openChecked(file, trustedUid, options.access);
    } catch (e) {
      // Only an include that is not there, or that this caller may not reach, is skipped; a
      // directory that fails the check (an AclError) rejects the whole ACL.
      if (
        optional && e instanceof OsError &&
        (e.errno === E.ENOENT || e.errno === E.EACCES || e.errno === E.ENOTDIR)
      ) {
        options.onSkip?.(file, e.strerror, e.errno);
        return;
      }
      if (e instanceof AclError) throw e;
      throw new AclError(file, `cannot open \`${shown(file)}': ${why(e)}`, { cause: e });
    }
    using _fd = fd;
    let st: FileStat;
    try {
      st = fstat(fd.value);
    } catch (e) {
      throw new AclError(file, `cannot stat \`${shown(file)}': ${why(e)}`, { cause: e });
    }
    const problem = fileProblem(st, trustedUid);
    if (problem !== undefined) throw new AclError(file, `\`${shown(file)}' ${problem}`);
    const key = `${st.dev}:${st.ino}`;
    const cycle = stack.findIndex((f) => f.key === key);
    if (cycle >= 0) {
      const chain = [...stack.slice(cycle).map((f) => f.path), file].map(shown).join(" -> ");
      throw new AclError(file, `include cycle: ${chain}`);
    }
    if (depth > MAX_INCLUDE_DEPTH) {
      throw new AclError(
        file,
        `includes nested deeper than ${MAX_INCLUDE_DEPTH}: \`${shown(file)}'`,
      );
    }
    const text = readText(fd, file);
    let entries;
    try {
      entries = parseAcl(text, file);
    } catch (e) {
      throw new AclError(file, e instanceof Error ? e.message : String(e), { cause: e });
    }
    stack.push({ path: file, key });
    for (const entry of entries) {
      if (entry.kind === "include") {
        visit(resolveInclude(file, entry.path), depth + 1, true);
      } else {
        rules.push(entry);
      }
    }
    stack.pop();
  };

  visit(path, 0, false);
  return rules;
}

/** What the checks look at in a stat result. */
export type Ownership = Pick<FileStat, "mode" | "uid">;

/**
 * Why an ACL file cannot be trusted, or undefined when it can: it must be a regular file owned by
 * `trustedUid` (root) and writable by nobody else.
 *
 * @param st The file's stat.
 * @param trustedUid The owner it must have: root, or the uid of an unprivileged test.
 * @returns The reason, worded to follow the file's quoted name, or undefined.
 */
export function fileProblem(st: Ownership, trustedUid = 0): string | undefined {
  const kind = st.mode & S.IFMT;
  if (kind !== S.IFREG) return `is not a regular file (${fileKind(kind)})`;
  if (st.uid !== trustedUid) return `is owned by uid ${st.uid}, not root: refusing it`;
  if (st.mode & 0o022) return `is ${writableBy(st.mode)}: refusing it`;
  return undefined;
}

/**
 * Why a directory on the way to an ACL file cannot be trusted, or undefined when it can: as in
 * OpenSSH's StrictModes, it must be owned by root (or `trustedUid`) and writable by nobody else,
 * since whoever can write it can remove, rename or replace what is below it. World-writable with
 * the sticky bit (/tmp) is refused too: anyone may still create a name that does not exist yet,
 * such as an include that is missing today.
 *
 * @param st The directory's stat.
 * @param trustedUid An owner accepted besides root (the uid of an unprivileged test).
 * @returns The reason, worded to follow the directory's quoted name, or undefined.
 */
export function directoryProblem(st: Ownership, trustedUid = 0): string | undefined {
  const kind = st.mode & S.IFMT;
  if (kind !== S.IFDIR) return `is not a directory (${fileKind(kind)})`;
  if (st.uid !== 0 && st.uid !== trustedUid) return `is owned by uid ${st.uid}, not root`;
  if (st.mode & 0o022) return `is ${writableBy(st.mode)}`;
  return undefined;
}

function writableBy(mode: number): string {
  const octal = (mode & 0o7777).toString(8).padStart(4, "0");
  return `writable by ${mode & 0o002 ? "others" : "its group"} (mode ${octal})`;
}

// O_NONBLOCK: opening a FIFO must not hang the helper; O_NOCTTY: never a controlling tty;
// O_NOFOLLOW: a symlink fails with ELOOP, and openChecked() follows it itself.
const FILE_FLAGS = O.RDONLY | O.NONBLOCK | O.NOCTTY | O.NOFOLLOW;
// O_PATH: a directory is only looked at and searched, so it needs no read permission (as for
// open(2), search permission is enough); O_NOFOLLOW: a symlink is opened as itself.
const DIR_FLAGS = O.PATH | O.NOFOLLOW;

/**
 * The components of an absolute path, without empty ones and `.`; a path that ends in `/` or
 * `/.` ends in `.` (it names a directory, which the file check then refuses).
 */
function components(path: string): string[] {
  const parts = path.split("/");
  const out = parts.filter((p) => p !== "" && p !== ".");
  const last = parts.at(-1);
  if (last === "" || last === ".") out.push(".");
  return out;
}

/**
 * Opens the ACL file `file` for reading after checking every directory on the way with
 * directoryProblem(). The path is walked one component at a time from `/`: each directory is
 * opened with `O_PATH|O_NOFOLLOW`, checked through its fd, and only then used to look up the
 * next component, so what was checked is what is used (no check-then-open race on names). A
 * symlink is read with readlinkat() from its checked directory and its target walked the same
 * way (from `/` when absolute), so every directory the kernel would pass through is checked, the
 * ones the link leads to included; at most MAX_SYMLINKS of them.
 *
 * @throws {AclError} for a relative path, a directory that fails the check, or a symlink target
 *   that is not UTF-8.
 * @throws {OsError} as open(2) would fail: ENOENT, EACCES (no search permission), ENOTDIR,
 *   ELOOP.
 */
function openChecked(
  file: string,
  trustedUid: number,
  access?: (st: FileStat, want: 4 | 1) => boolean,
): Fd {
  if (!file.startsWith("/")) {
    throw new AclError(file, `\`${shown(file)}' is not an absolute path: refusing it`);
  }
  const todo = components(file);
  let where: string[] = [];
  let dir = new Fd(open("/", O.PATH | O.DIRECTORY));
  /** Makes `next` (the directory `where`) the current one once it passes the check. */
  const enter = (next: Fd, at: string[]): void => {
    if (next !== dir) dir.close();
    dir = next;
    where = at;
    const problem = directoryProblem(fstat(dir.value), trustedUid);
    if (problem !== undefined) {
      throw new AclError(
        file,
        `\`${shown("/" + where.join("/"))}' ${problem}, so \`${shown(file)}' cannot be ` +
          "trusted: refusing it",
      );
    }
  };
  let links = 0;
  const follow = (target: Uint8Array): void => {
    if (++links > MAX_SYMLINKS) throw new OsError(`openat(${file})`, E.ELOOP);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(target);
    } catch {
      throw new AclError(
        file,
        `a symbolic link on the way to \`${shown(file)}' does not point to valid UTF-8`,
      );
    }
    if (text.startsWith("/")) enter(new Fd(open("/", O.PATH | O.DIRECTORY)), []);
    todo.unshift(...components(text));
  };
  try {
    enter(dir, []);
    for (;;) {
      const name = todo.shift() ?? "."; // a path ending in `..` names a directory
      // Another caller's view (the service's client): each lookup needs search permission.
      if (access && !access(fstat(dir.value), 1)) throw new OsError(`openat(${name})`, E.EACCES);
      if (name === "..") {
        enter(new Fd(openat(dir.value, "..", O.PATH | O.DIRECTORY)), where.slice(0, -1));
      } else if (todo.length === 0) {
        try {
          const fd = new Fd(openat(dir.value, name, FILE_FLAGS));
          if (access && !access(fstat(fd.value), 4)) {
            fd.close();
            throw new OsError(`openat(${name})`, E.EACCES);
          }
          return fd;
        } catch (e) {
          if (!(e instanceof OsError && e.errno === E.ELOOP)) throw e;
        }
        follow(readlinkat(dir.value, name));
      } else {
        const next = new Fd(openat(dir.value, name, DIR_FLAGS));
        let kind: number;
        try {
          kind = fstat(next.value).mode & S.IFMT;
          if (kind === S.IFLNK) follow(readlinkat(next.value, ""));
        } catch (e) {
          next.close();
          throw e;
        }
        if (kind === S.IFLNK) next.close();
        else if (kind === S.IFDIR) enter(next, [...where, name]);
        else {
          next.close();
          throw new OsError(`openat(${name})`, E.ENOTDIR);
        }
      }
    }
  } finally {
    dir.close();
  }
}

/**
 * A path as it appears in a message: include paths come from file text and may hold control
 * characters, which must not reach the caller's terminal raw (parse.ts escapes the same way).
 */
function shown(path: string): string {
  return escapeForMessage(path);
}

function why(e: unknown): string {
  return e instanceof OsError ? e.strerror : String(e);
}

/** Resolves an include path against the directory of the file that names it. */
export function resolveInclude(from: string, target: string): string {
  if (target.startsWith("/")) return target;
  const slash = from.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : from.slice(0, slash);
  return dir.endsWith("/") ? dir + target : `${dir}/${target}`;
}

function fileKind(kind: number): string {
  switch (kind) {
    case S.IFREG:
      return "a regular file";
    case S.IFLNK:
      return "a symbolic link";
    case S.IFDIR:
      return "a directory";
    case S.IFIFO:
      return "a FIFO";
    case S.IFCHR:
      return "a character device";
    case S.IFSOCK:
      return "a socket";
    default:
      return `file type 0o${kind.toString(8)}`;
  }
}

function readText(fd: Fd, file: string): string {
  let all: Uint8Array;
  try {
    all = readAll(fd.value, MAX_FILE_BYTES, file);
  } catch (e) {
    if (e instanceof RangeError) {
      throw new AclError(file, `\`${shown(file)}' is larger than ${MAX_FILE_BYTES} bytes`);
    }
    // EAGAIN: a regular file never gives it; stopping early would drop rules, so fail.
    const reason = e instanceof OsError && e.errno === E.EAGAIN ? "it would block" : why(e);
    throw new AclError(file, `cannot read \`${shown(file)}': ${reason}`, { cause: e });
  }
  try {
    // Fail closed on bytes that are not UTF-8: a name we cannot represent exactly must not
    // turn into a different name by replacement.
    return new TextDecoder("utf-8", { fatal: true }).decode(all);
  } catch {
    throw new AclError(file, `\`${shown(file)}' is not valid UTF-8`);
  }
}
