// Hardened file primitives for code that writes or deletes as root where others might reach
// (the installer, and any later installer mode): every directory is opened one component at a
// time from `/`, without following a symlink, and checked to be root's and writable by root only;
// files are created with O_EXCL|O_NOFOLLOW, get their owner and mode through the open fd, and are
// renamed into place inside the same verified directory; deletions re-check first.
//
// The rule (stricter than "owned by root"): every directory from `/` down must be owned by uid 0
// and have neither the group nor the other write bit. No exception for sticky directories such
// as /tmp (OpenSSH's StrictModes makes none either): a DESTDIR or prefix below /tmp is refused.
// Symbolic links are refused on the path, not followed: pass the real path instead.

import { Fd } from "../sys/fd.ts";
import {
  AT,
  E,
  fchmod,
  fchown,
  type FileStat,
  fstat,
  fstatat,
  fsync,
  mkdirat,
  O,
  open,
  openat,
  OsError,
  readAll,
  renameat2,
  S,
  S_IFLNK,
  unlinkat,
  write,
} from "../sys/libc.ts";

/** A path that must not be trusted (wrong owner, writable by others, a symlink, not a directory). */
export class UnsafePathError extends Error {
  /** `message` is one line naming the path. */
  constructor(message: string) {
    super(message);
    this.name = "UnsafePathError";
  }
}

/** What the rule looks at: the file type and permission bits, and the owner. */
export interface OwnerMode {
  /** st_mode, file type bits included. */
  mode: number;
  /** Owner uid. */
  uid: number;
}

const quote = (path: string) => `\`${path}'`;
const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");

/**
 * Why a directory must not be written into or deleted from as root, or undefined when it may:
 * it must be a directory (not a symlink), owned by root, without group or other write permission.
 *
 * @param path The directory's path, for the message.
 * @param st Its type, mode and owner (from lstat: a symlink is judged as a symlink).
 * @returns A one-line reason, or undefined.
 */
export function judgeDirectory(path: string, st: OwnerMode): string | undefined {
  const type = st.mode & S.IFMT;
  if (type === S_IFLNK) return `${quote(path)} is a symbolic link: give the real path instead`;
  if (type !== S.IFDIR) return `${quote(path)} is not a directory`;
  if (st.uid !== 0) return `${quote(path)} is owned by uid ${st.uid}, not root`;
  if ((st.mode & 0o022) !== 0) {
    return `${quote(path)} is writable by group or others (mode ${octal(st.mode)})`;
  }
  return undefined;
}

/**
 * Why a file must not be trusted as root's own record (for example an install manifest), or
 * undefined: a regular file, owned by root, without group or other write permission.
 */
export function judgeOwnFile(path: string, st: OwnerMode): string | undefined {
  const type = st.mode & S.IFMT;
  if (type === S_IFLNK) return `${quote(path)} is a symbolic link`;
  if (type !== S.IFREG) return `${quote(path)} is not a regular file`;
  if (st.uid !== 0) return `${quote(path)} is owned by uid ${st.uid}, not root`;
  if ((st.mode & 0o022) !== 0) {
    return `${quote(path)} is writable by group or others (mode ${octal(st.mode)})`;
  }
  return undefined;
}

/** Splits an absolute path into components; `.`, `..` and empty names are refused, not resolved. */
export function pathComponents(path: string): string[] {
  if (!path.startsWith("/")) throw new UnsafePathError(`${quote(path)} is not an absolute path`);
  const parts = path.split("/").filter((p) => p !== "");
  if (parts.some((p) => p === "." || p === "..")) {
    throw new UnsafePathError(`${quote(path)} contains . or ..`);
  }
  return parts;
}

function checkName(name: string): void {
  if (name === "" || name === "." || name === ".." || name.includes("/") || name.includes("\0")) {
    throw new UnsafePathError(`Not a single file name: ${JSON.stringify(name)}`);
  }
}

function join(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

const DIR_FLAGS = O.RDONLY | O.DIRECTORY | O.NOFOLLOW;

/** Opens `name` in `dirfd` as a directory without following a symlink; null when absent. */
function openDirAt(dirfd: number, name: string, path: string): Fd | null {
  try {
    return new Fd(openat(dirfd, name, DIR_FLAGS));
  } catch (e) {
    if (e instanceof OsError && e.errno === E.ENOENT) return null;
    // O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR (or ELOOP): tell them apart.
    if (e instanceof OsError && (e.errno === E.ELOOP || e.errno === E.ENOTDIR)) {
      const why = judgeDirectory(path, fstatat(dirfd, name));
      throw new UnsafePathError(why ?? `${quote(path)} is not a directory`);
    }
    throw e;
  }
}

function randomSuffix(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(8)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** How {@linkcode SafeDir.writeFile} leaves the new file. */
export interface WriteOptions {
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Permission bits (never set-user-ID: the caller decides, this sets exactly what it gets). */
  mode: number;
  /** Replace an existing file atomically (true), or fail with EEXIST when one exists (false). */
  replace: boolean;
}

/**
 * A directory verified from `/` down, held open: every operation is relative to its fd, so a
 * path component swapped after the check cannot redirect it. Close it with `using`.
 */
export class SafeDir implements Disposable {
  /** The path it was opened by (for messages). */
  readonly path: string;
  #fd: Fd;

  private constructor(path: string, fd: Fd) {
    this.path = path;
    this.#fd = fd;
  }

  /**
   * Opens `path` walking from `/` one component at a time (O_NOFOLLOW), checking each with
   * {@linkcode judgeDirectory}. With `create`, missing components are made (root:root 0755).
   *
   * @throws {UnsafePathError} A component that is not root's alone, a symlink, not a directory,
   * or missing (without `create`).
   */
  static open(path: string, options: { create?: boolean } = {}): SafeDir {
    const parts = pathComponents(path);
    let dir = new SafeDir("/", new Fd(open("/", DIR_FLAGS)));
    try {
      dir.reverify();
      for (const part of parts) {
        const next = dir.openDir(part, options);
        if (next === null) {
          throw new UnsafePathError(`${quote(join(dir.path, part))} does not exist`);
        }
        dir.close();
        dir = next;
      }
      return dir;
    } catch (e) {
      dir.close();
      throw e;
    }
  }

  /**
   * Walks `path` from `/` as {@linkcode SafeDir.open} does, but creates nothing and stops at the
   * first missing component.
   *
   * @returns The first missing path (its parents all exist and passed), or null when all exist.
   * @throws {UnsafePathError} For an existing component that does not pass.
   */
  static inspect(path: string): string | null {
    const parts = pathComponents(path);
    let dir = new SafeDir("/", new Fd(open("/", DIR_FLAGS)));
    try {
      dir.reverify();
      for (const part of parts) {
        const next = dir.openDir(part);
        if (next === null) return join(dir.path, part);
        dir.close();
        dir = next;
      }
      return null;
    } finally {
      dir.close();
    }
  }

  /** The fd, for a caller in this module's family; throws once closed. */
  get fd(): number {
    return this.#fd.value;
  }

  /** Checks the open directory again (owner and mode may have changed since it was opened). */
  reverify(): void {
    const why = judgeDirectory(this.path, fstat(this.fd));
    if (why !== undefined) throw new UnsafePathError(why);
  }

  /**
   * Opens a subdirectory, verified; null when it does not exist and `create` is not set. A
   * created directory is made 0700, then given root:root and 0755 through its fd.
   */
  openDir(name: string, options: { create?: boolean } = {}): SafeDir | null {
    checkName(name);
    const path = join(this.path, name);
    let fd = openDirAt(this.fd, name, path);
    if (fd === null && options.create) {
      this.reverify();
      let made = false;
      try {
        mkdirat(this.fd, name, 0o700);
        made = true;
      } catch (e) {
        if (!(e instanceof OsError && e.errno === E.EEXIST)) throw e;
      }
      fd = openDirAt(this.fd, name, path);
      if (fd !== null && made) {
        // Only this directory's owner (root) could have replaced it since: the parent passed.
        fchown(fd.value, 0, 0);
        fchmod(fd.value, 0o755);
      }
    }
    if (fd === null) return null;
    const dir = new SafeDir(path, fd);
    try {
      dir.reverify();
    } catch (e) {
      dir.close();
      throw e;
    }
    return dir;
  }

  /** lstat of `name` in this directory; null when absent. */
  stat(name: string): FileStat | null {
    checkName(name);
    try {
      return fstatat(this.fd, name);
    } catch (e) {
      if (e instanceof OsError && e.errno === E.ENOENT) return null;
      throw e;
    }
  }

  /**
   * Reads a regular file of this directory without following a symlink; null when absent.
   *
   * @throws {UnsafePathError} A symlink or not a regular file.
   * @throws {RangeError} Larger than `limit`.
   */
  readFile(name: string, limit: number): { stat: FileStat; bytes: Uint8Array<ArrayBuffer> } | null {
    checkName(name);
    const path = join(this.path, name);
    let fd: Fd;
    try {
      fd = new Fd(openat(this.fd, name, O.RDONLY | O.NOFOLLOW | O.NONBLOCK | O.NOCTTY));
    } catch (e) {
      if (e instanceof OsError && e.errno === E.ENOENT) return null;
      if (e instanceof OsError && e.errno === E.ELOOP) {
        throw new UnsafePathError(`${quote(path)} is a symbolic link`);
      }
      throw e;
    }
    using _fd = fd;
    const stat = fstat(fd.value);
    if ((stat.mode & S.IFMT) !== S.IFREG) {
      throw new UnsafePathError(`${quote(path)} is not a regular file`);
    }
    return { stat, bytes: readAll(fd.value, limit, path) };
  }

  /**
   * Writes `bytes` as `name`: a new file with a random name is created with
   * O_CREAT|O_EXCL|O_NOFOLLOW (mode 0600), filled, given its owner and mode through the fd,
   * fsynced, and renamed into place in this same directory (RENAME_NOREPLACE unless `replace`).
   * On any failure the temporary file is removed and `name` is untouched.
   */
  writeFile(name: string, bytes: Uint8Array<ArrayBuffer>, options: WriteOptions): void {
    checkName(name);
    this.reverify();
    const tmp = `.${name}.vmb-${randomSuffix()}`;
    const fd = new Fd(
      openat(this.fd, tmp, O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW | O.NOCTTY, 0o600),
    );
    let placed = false;
    try {
      for (let off = 0; off < bytes.length;) {
        const n = write(fd.value, bytes.subarray(off) as Uint8Array<ArrayBuffer>, `write(${tmp})`);
        if (n <= 0) throw new OsError(`write(${tmp})`, E.EAGAIN);
        off += n;
      }
      // chown first: it clears set-user-ID and set-group-ID bits, chmod then sets exactly `mode`.
      fchown(fd.value, options.uid, options.gid);
      fchmod(fd.value, options.mode);
      fsync(fd.value);
      fd.close();
      this.reverify();
      renameat2(this.fd, tmp, this.fd, name, options.replace ? 0 : AT.RENAME_NOREPLACE);
      placed = true;
      fsync(this.fd);
    } finally {
      fd.close();
      if (!placed) {
        try {
          unlinkat(this.fd, tmp, 0);
        } catch { /* it was never created or is already gone */ }
      }
    }
  }

  /**
   * Removes the regular file `name` after `check` accepted its current contents, re-verifying
   * this directory right before the unlink. Returns false when it does not exist.
   *
   * @param check Returns why the file must be kept (then an Error with that message is thrown),
   * or undefined to remove it.
   */
  removeFile(
    name: string,
    limit: number,
    check: (bytes: Uint8Array<ArrayBuffer>, stat: FileStat) => string | undefined,
  ): boolean {
    const found = this.readFile(name, limit);
    if (found === null) return false;
    const why = check(found.bytes, found.stat);
    if (why !== undefined) throw new Error(why);
    this.reverify();
    unlinkat(this.fd, name, 0);
    return true;
  }

  /** Removes an empty subdirectory: "removed", "absent", or "not empty" (then it is kept). */
  removeDir(name: string): "removed" | "absent" | "not empty" {
    checkName(name);
    const st = this.stat(name);
    if (st === null) return "absent";
    const why = judgeDirectory(join(this.path, name), st);
    if (why !== undefined) throw new UnsafePathError(why);
    this.reverify();
    try {
      unlinkat(this.fd, name, AT.REMOVEDIR);
      return "removed";
    } catch (e) {
      if (e instanceof OsError && (e.errno === E.ENOTEMPTY || e.errno === E.EEXIST)) {
        return "not empty";
      }
      if (e instanceof OsError && e.errno === E.ENOENT) return "absent";
      throw e;
    }
  }

  /** Closes the directory fd; idempotent. */
  close(): void {
    this.#fd.close();
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Splits an absolute path into its directory and last component. */
export function splitPath(path: string): { dir: string; name: string } {
  const parts = pathComponents(path);
  const name = parts.pop();
  if (name === undefined) throw new UnsafePathError(`${quote(path)} has no file name`);
  return { dir: "/" + parts.join("/"), name };
}
