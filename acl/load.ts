// Reads /etc/qemu/bridge.conf and its includes into a list of rules. Parsing is in parse.ts;
// this file does the I/O and the safety checks on each file, and fails closed.

import { escapeForMessage } from "../net/ifname.ts";
import { Fd } from "../sys/fd.ts";
import { E, type FileStat, fstat, O, open, OsError, readAll, S } from "../sys/libc.ts";
import type { AclRule } from "./parse.ts";
import { parseAcl } from "./parse.ts";

/** The ACL path: a build-time constant, never taken from the environment or argv. */
export const ACL_FILE = "/etc/qemu/bridge.conf";

/** How deep `include` may nest (the main file is depth 0). */
export const MAX_INCLUDE_DEPTH = 8;

/** The largest ACL file read, in bytes. */
export const MAX_FILE_BYTES = 1 << 20;

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
  /** The uid that must own every ACL file (root). Tests that run unprivileged pass their own. */
  trustedUid?: number;
  /** Called for an include that is missing or unreadable and therefore skipped. */
  onSkip?: (path: string, reason: string) => void;
  /**
   * Asked before each file is opened: an errno (EACCES, ENOENT, ...) makes the open fail as if
   * with that errno. The bridge service passes its client's view (service/policy.ts), so a file
   * the client could not open is treated as the helper run by that client would treat it.
   */
  refuse?: (path: string) => number | undefined;
}

/**
 * Loads the ACL at `path` with every include.
 *
 * Differences from the C helper, all fail-closed: a relative include is resolved against the
 * including file's directory (not the caller-controlled cwd); cycles and nesting deeper than
 * MAX_INCLUDE_DEPTH are errors; a syntax error anywhere rejects the whole ACL; a file that is
 * not a regular file, not owned by root, or writable by group or others is refused. A missing
 * or unreadable include is skipped, as in QEMU: per-group include files readable only by that
 * group are the documented way to give different users different bridges.
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
      // O_NONBLOCK: opening a FIFO must not hang the helper; O_NOCTTY: never a controlling tty.
      const refused = options.refuse?.(file);
      if (refused !== undefined) throw new OsError(`open(${file})`, refused);
      fd = new Fd(open(file, O.RDONLY | O.NONBLOCK | O.NOCTTY));
    } catch (e) {
      if (
        optional && e instanceof OsError &&
        (e.errno === E.ENOENT || e.errno === E.EACCES || e.errno === 20 /* ENOTDIR */)
      ) {
        options.onSkip?.(file, e.strerror);
        return;
      }
      throw new AclError(file, `cannot open \`${shown(file)}': ${why(e)}`, { cause: e });
    }
    using _fd = fd;
    let st: FileStat;
    try {
      st = fstat(fd.value);
    } catch (e) {
      throw new AclError(file, `cannot stat \`${shown(file)}': ${why(e)}`, { cause: e });
    }
    const kind = st.mode & S.IFMT;
    if (kind !== S.IFREG) {
      throw new AclError(file, `\`${shown(file)}' is not a regular file (${fileKind(kind)})`);
    }
    if (st.uid !== trustedUid) {
      throw new AclError(
        file,
        `\`${shown(file)}' is owned by uid ${st.uid}, not root: refusing it`,
      );
    }
    if (st.mode & 0o022) {
      throw new AclError(
        file,
        `\`${shown(file)}' is writable by ${st.mode & 0o002 ? "others" : "its group"} (mode ${
          (st.mode & 0o7777).toString(8).padStart(4, "0")
        }): refusing it`,
      );
    }
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
