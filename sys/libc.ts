// The unsafe boundary of the helper, the bridge service and the installer: with sys/io.ts (the
// library's I/O, which none of them loads) the only file that calls Deno.dlopen, reads errno or
// touches raw pointers. Everything else calls the typed wrappers below, which throw OsError on
// failure. What only the library uses belongs in sys/io.ts: every KB of this file is compiled at
// each start of the helper (about 50 µs a KB, with the V8 code cache off).

/**
 * The C library, by fixed absolute path. Never taken from the environment, argv or a file: the
 * helper may run with CAP_NET_ADMIN, and a library path chosen by the caller would be code
 * injection.
 */
export const LIBC_PATH: string = Deno.build.arch === "aarch64"
  ? "/lib/aarch64-linux-gnu/libc.so.6"
  : "/lib/x86_64-linux-gnu/libc.so.6";

/**
 * The symbols, in groups that are bound on first use, so that the helper's start-up binds as few
 * as it can. Each is called through its address (see lib()), never as a dlopen function symbol,
 * for which Deno would compile a call trampoline at dlopen time.
 */
const GROUPS = {
  // Everything the helper and its guard call on the way to the fd, in two symbols: errno, and
  // glibc's generic system call entry, through which the wrappers below make each call (the
  // table SYSCALL_NUMBERS). Binding the 16 functions it used to bind one by one cost about
  // 10 ms of the helper's start-up, each a trampoline of its own.
  sys: {
    // int *__errno_location(void);
    __errno_location: { parameters: [], result: "pointer" },
    // long syscall(long number, ...);
    //
    // Variadic in C, declared here with six fixed long arguments, which is safe on the two
    // architectures this file supports (LIBC_PATH): every argument is an integer or a pointer
    // passed as a 64-bit integer, and
    // - x86_64 (System V): variadic integer arguments go in the same registers and stack slot
    //   as fixed ones (rdi, rsi, rdx, rcx, r8, r9, then the stack); %al, the count of vector
    //   registers a variadic callee may read, is never read by glibc's syscall, which is
    //   assembly (sysdeps/unix/sysv/linux/x86_64/syscall.S) moving the six registers to the
    //   kernel's and executing `syscall`;
    // - aarch64 (AAPCS64 on Linux, not Apple's variant): variadic integer arguments go in x0-x7
    //   like fixed ones; glibc's syscall.S moves x0 to x8 and x1-x6 to x0-x5 and calls `svc 0`.
    // Unused trailing arguments are passed as 0 and ignored by the kernel. On failure glibc's
    // syscall returns -1 and sets errno from the kernel's -errno, as every wrapper it replaces
    // here did, so OsError reads errno the same way, straight after the call, on this thread.
    syscall: {
      parameters: ["i64", "i64", "i64", "i64", "i64", "i64", "i64"],
      result: "i64",
    },
  },
  // glibc's text for an errno value: only for an error's message, never on the way to the fd.
  text: {
    // char *strerror(int errnum);
    strerror: { parameters: ["i32"], result: "pointer" },
  },
  // Waits, fd flags, by-value ioctls: sendFd's bounded wait when the caller's socket is full,
  // the library's frame I/O, an ACL path that holds a symlink.
  more: {
    // int poll(struct pollfd *fds, nfds_t n, int timeout);  (sendFd's bounded wait on EAGAIN)
    poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
    // int ioctl(int fd, unsigned long req, unsigned long arg);  (the by-value form)
    ioctl_val: { name: "ioctl", parameters: ["i32", "u64", "u64"], result: "i32" },
    // int fcntl(int fd, int cmd, long arg);  (variadic)
    fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
    // ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t size);  (only when an
    // ACL path holds a symlink; the result fits in int, as for read)
    readlinkat: { parameters: ["i32", "buffer", "buffer", "usize"], result: "i32" },
  },
  // Identity and capabilities: the set-user-ID drop and its verification, the checks.
  ids: {
    // int setresuid(uid_t r, uid_t e, uid_t s); int setresgid(...);
    setresuid: { parameters: ["u32", "u32", "u32"], result: "i32" },
    setresgid: { parameters: ["u32", "u32", "u32"], result: "i32" },
    // int getgroups(int size, gid_t list[]);
    getgroups: { parameters: ["i32", "buffer"], result: "i32" },
    // uid_t getuid(void); and friends
    getuid: { parameters: [], result: "u32" },
    geteuid: { parameters: [], result: "u32" },
    getgid: { parameters: [], result: "u32" },
    getegid: { parameters: [], result: "u32" },
  },
  // Receiving fds, waits on a worker thread, a look into another network namespace: the
  // library's side of running a helper (recvFds, pollAsync, inNetNamespace), and waits of the
  // service's clients and the OVS database connection.
  proc: {
    // ssize_t recvmsg(int fd, struct msghdr *msg, int flags);
    recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
    // The same poll as in `more`, run on a worker thread so the event loop keeps going while it waits. Only
    // for waiting on frame and child readiness; never for privileged calls (capabilities and
    // errno are per thread).
    poll_async: {
      name: "poll",
      parameters: ["buffer", "u64", "i32"],
      result: "i32",
      nonblocking: true,
    },
    // int setns(int fd, int nstype);  (the library's look into a helper's network namespace)
    setns: { parameters: ["i32", "i32"], result: "i32" },
  },
  // The bridge service and its clients: a listening SOCK_SEQPACKET Unix socket.
  service: {
    // int bind(int fd, const struct sockaddr *addr, socklen_t len);
    bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    // int listen(int fd, int backlog);
    listen: { parameters: ["i32", "i32"], result: "i32" },
    // int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
    accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
    // int connect(int fd, const struct sockaddr *addr, socklen_t len);
    connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    // int unlink(const char *path);
    unlink: { parameters: ["buffer"], result: "i32" },
    // int chmod(const char *path, mode_t mode);
    chmod: { parameters: ["buffer", "u32"], result: "i32" },
    // int mkdir(const char *path, mode_t mode);
    mkdir: { parameters: ["buffer", "u32"], result: "i32" },
  },
  // Directory-relative file operations: the installer's hardened writes (scripts/_safe_fs.ts).
  fs: {
    // int mkdirat(int dirfd, const char *path, mode_t mode);
    mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    // int fchown(int fd, uid_t owner, gid_t group);
    fchown: { parameters: ["i32", "u32", "u32"], result: "i32" },
    // int fchmod(int fd, mode_t mode);
    fchmod: { parameters: ["i32", "u32"], result: "i32" },
    // int fsync(int fd);
    fsync: { parameters: ["i32"], result: "i32" },
    // int renameat2(int olddirfd, const char *old, int newdirfd, const char *new, unsigned flags);
    renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
    // int unlinkat(int dirfd, const char *path, int flags);
    unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  },
  // A client stream socket: the Open vSwitch database connection (ovs/ovsdb.ts).
  stream: {
    // int connect(int fd, const struct sockaddr *addr, socklen_t len);
    connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    // ssize_t send(int fd, const void *buf, size_t n, int flags);  (result read as int: the
    // messages sent are far below 2 GiB)
    send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  },
} as const;

type Groups = typeof GROUPS;
type Symbols<G extends keyof Groups> = Deno.DynamicLibrary<Groups[G]>["symbols"];
const bound: { [G in keyof Groups]?: Symbols<G> } = {};

/**
 * The symbols of one group, bound on first use, so importing this file costs nothing.
 *
 * Each function is called through Deno.UnsafeFnPointer at the address dlopen gives for the name
 * declared as a "pointer" static: the symbol's own address (ext/ffi static.rs, pinned by Deno's
 * tests/ffi `static_ptr`). A call goes through libffi, with the same argument conversions as a
 * function symbol's. A symbol declared as a function would instead get a trampoline compiled by
 * Cranelift at dlopen time (ext/ffi turbocall.rs), for a fast path V8 takes only from optimized
 * code: machine code made at run time in a privileged process that runs --jitless and never
 * optimizes, and 1.5-2 ms of the helper's start-up. A call through the address costs about 5 µs
 * more, as its definition is converted on every call; no caller of this file is hot.
 */
function lib<G extends keyof Groups>(group: G): Symbols<G> {
  const have = bound[group];
  if (have !== undefined) return have;
  // errno() reads through `sys`: bind it before any other group, so that a failing call in
  // that group is never followed by a dlopen (which may itself set errno) before errno is read.
  if (group !== "sys" && bound.sys === undefined) lib("sys");
  const defs: Readonly<Record<string, Deno.ForeignFunction & { name?: string }>> = GROUPS[group];
  const statics: Record<string, Deno.ForeignStatic> = {};
  for (const key of Object.keys(defs)) {
    statics[key] = { name: defs[key]!.name ?? key, type: "pointer" };
  }
  const addresses = Deno.dlopen(LIBC_PATH, statics).symbols as Record<
    string,
    Deno.PointerObject<Deno.ForeignFunction>
  >;
  const symbols: Record<string, unknown> = {};
  for (const key of Object.keys(defs)) {
    const fn = new Deno.UnsafeFnPointer<Deno.ForeignFunction>(addresses[key]!, defs[key]!);
    symbols[key] = fn.call.bind(fn);
  }
  (bound as Record<string, unknown>)[group] = symbols;
  return symbols as Symbols<G>;
}
const sys = () => lib("sys");
const text = () => lib("text");
const more = () => lib("more");
const ids = () => lib("ids");
const proc = () => lib("proc");
const fs = () => lib("fs");
const svc = () => lib("service");
const stream = () => lib("stream");

/** The names of every libc symbol bound so far, for the tests and bench:helper. */
export function boundSymbols(): string[] {
  return Object.entries(bound).flatMap(([group, symbols]) =>
    symbols === undefined ? [] : Object.keys(GROUPS[group as keyof Groups]).map((key) => {
      const def: { name?: string } = GROUPS[group as keyof Groups][key as never];
      return def.name ?? key;
    })
  );
}

/**
 * x86_64's system call numbers (asm/unistd_64.h) for the calls made through syscall(2), here and
 * in sys/io.ts (mmap, munmap, io_uring_*, pidfd_open), so that one table is checked.
 */
const NR_X86_64 = {
  read: 0n,
  write: 1n,
  close: 3n,
  ioctl: 16n,
  getpid: 39n,
  socket: 41n,
  socketpair: 53n,
  sendmsg: 46n,
  getsockopt: 55n,
  setresuid: 117n,
  getresuid: 118n,
  getresgid: 120n,
  capget: 125n,
  capset: 126n,
  prctl: 157n,
  gettid: 186n,
  getdents64: 217n,
  openat: 257n,
  statx: 332n,
  pidfd_open: 434n,
  mmap: 9n,
  munmap: 11n,
  io_uring_setup: 425n,
  io_uring_enter: 426n,
} as const;

/** The system call numbers of both supported architectures, for the tests' header check. */
export const SYSCALL_TABLES: Readonly<
  Record<"x86_64" | "aarch64", Readonly<Record<keyof typeof NR_X86_64, bigint>>>
> = {
  x86_64: NR_X86_64,
  // aarch64 uses the generic table (asm-generic/unistd.h), which has openat but no open.
  aarch64: {
    read: 63n,
    write: 64n,
    close: 57n,
    ioctl: 29n,
    getpid: 172n,
    socket: 198n,
    socketpair: 199n,
    sendmsg: 211n,
    getsockopt: 209n,
    setresuid: 147n,
    getresuid: 148n,
    getresgid: 150n,
    capget: 90n,
    capset: 91n,
    prctl: 167n,
    gettid: 178n,
    getdents64: 61n,
    openat: 56n,
    statx: 291n,
    pidfd_open: 434n,
    mmap: 222n,
    munmap: 215n,
    io_uring_setup: 425n,
    io_uring_enter: 426n,
  },
};

/**
 * This architecture's numbers for the system calls made through syscall(2) (LIBC_PATH is chosen
 * the same way). tests/sys/libc_test.ts checks both tables against the kernel headers.
 */
export const SYSCALL_NUMBERS: Readonly<Record<keyof typeof NR_X86_64, bigint>> =
  SYSCALL_TABLES[Deno.build.arch === "aarch64" ? "aarch64" : "x86_64"];
const NR = SYSCALL_NUMBERS;

/**
 * The buffers whose addresses the call in progress uses, directly or inside a struct it reads.
 * A local read only before the call may be dead to V8's optimizing compilers, and once its
 * ArrayBuffer is collected (any allocation, a BigInt argument say, may collect) its bytes are
 * freed while the kernel may still read or write them. Held in this module-level slot, which no
 * compiler may drop, they live until the call returned. (`void buf;` after the call does not do
 * this: an unused expression compiles to nothing.)
 */
let inFlight: readonly object[] = [];
/** No buffers: a call whose arguments are all integers. */
const NONE: readonly object[] = Object.freeze([]);

/** How many buffers are held for a call now: 0 between calls (the tests check the release). */
export function buffersInFlight(): number {
  return inFlight.length;
}

/**
 * One system call through glibc's syscall(2); arguments are integers, or pointers from ptr()
 * into the buffers listed in `keep` (every buffer whose address the kernel will use, struct
 * members included), which are held for the call. Returns the result as a number: -1 on
 * failure with errno set (read it next, with errno()).
 */
function sc(
  keep: readonly object[],
  nr: bigint,
  a = 0n,
  b = 0n,
  c = 0n,
  d = 0n,
  e = 0n,
  f = 0n,
): number {
  inFlight = keep;
  try {
    return Number(sys().syscall(nr, a, b, c, d, e, f));
  } finally {
    inFlight = NONE;
  }
}

/** An int argument (fd, flags, option) as syscall(2)'s long: sign-extended, as C does. */
const L = (n: number): bigint => BigInt(n);

/** Reads errno. Call it straight after the failing call, before anything else touches libc. */
function errno(): number {
  const p = sys().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
}

/** Returns glibc's text for an errno value ("No such device"), as the C helper prints it. */
export function strerror(code: number): string {
  const p = text().strerror(code);
  return p === null ? `errno ${code}` : Deno.UnsafePointerView.getCString(p);
}

const ERRNO_NAMES: ReadonlyMap<number, string> = new Map([
  [1, "EPERM"],
  [2, "ENOENT"],
  [3, "ESRCH"],
  [4, "EINTR"],
  [5, "EIO"],
  [9, "EBADF"],
  [10, "ECHILD"],
  [11, "EAGAIN"],
  [12, "ENOMEM"],
  [13, "EACCES"],
  [14, "EFAULT"],
  [16, "EBUSY"],
  [17, "EEXIST"],
  [19, "ENODEV"],
  [20, "ENOTDIR"],
  [21, "EISDIR"],
  [22, "EINVAL"],
  [24, "EMFILE"],
  [25, "ENOTTY"],
  [32, "EPIPE"],
  [36, "ENAMETOOLONG"],
  [39, "ENOTEMPTY"],
  [40, "ELOOP"],
  [77, "EBADFD"],
  [88, "ENOTSOCK"],
  [90, "EMSGSIZE"],
  [95, "EOPNOTSUPP"],
  [97, "EAFNOSUPPORT"],
  [105, "ENOBUFS"],
  [107, "ENOTCONN"],
  [110, "ETIMEDOUT"],
  [111, "ECONNREFUSED"],
]);

/** A failed system call: names the call and carries errno and glibc's text for it. */
export class OsError extends Error {
  /** The libc function that failed, for example `"ioctl(SIOCBRADDIF)"`. */
  readonly syscall: string;
  /** The errno value read straight after the call. */
  readonly errno: number;
  /** The symbolic name of errno, for example `"ENODEV"`, or `"E<n>"` when not known. */
  readonly code: string;
  /** glibc's strerror() text, for example `"No such device"`. */
  readonly strerror: string;

  /** Builds the error; `message` defaults to `"<syscall>: <strerror>"`. */
  constructor(syscall: string, errnoValue: number) {
    const text = strerror(errnoValue);
    super(`${syscall}: ${text}`);
    this.name = "OsError";
    this.syscall = syscall;
    this.errno = errnoValue;
    this.code = ERRNO_NAMES.get(errnoValue) ?? `E${errnoValue}`;
    this.strerror = text;
  }
}

/** errno values callers compare against. */
export const E = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  ECHILD: 10,
  EAGAIN: 11,
  EACCES: 13,
  ENODEV: 19,
  EINVAL: 22,
  EPIPE: 32,
  EEXIST: 17,
  ENOTDIR: 20,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
  EBUSY: 16,
  ECONNREFUSED: 111,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
} as const;

/** Throws OsError when `result` is negative, reading errno at once. Returns `result`. */
function check(name: string, result: number): number {
  if (result < 0) throw new OsError(name, errno());
  return result;
}

/** A NUL-terminated copy of a string, for char* arguments. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  if (bytes.includes(0)) throw new TypeError(`String contains a NUL byte: ${JSON.stringify(s)}`);
  const out = new Uint8Array(new ArrayBuffer(bytes.length + 1));
  out.set(bytes);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Constants (Linux, x86_64 and aarch64 share all of these)

/** open(2) flags. */
export const O = {
  RDONLY: 0,
  RDWR: 2,
  NOCTTY: 0o400,
  NONBLOCK: 0o4000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  WRONLY: 1,
  CREAT: 0o100,
  EXCL: 0o200,
  PATH: 0o10000000,
} as const;

/** Socket constants. */
export const SOCK = {
  AF_UNIX: 1,
  AF_INET: 2,
  AF_NETLINK: 16,
  STREAM: 1,
  DGRAM: 2,
  RAW: 3,
  SEQPACKET: 5,
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_TYPE: 3,
  SO_DOMAIN: 39,
  SO_PEERCRED: 17,
  SO_ACCEPTCONN: 30,
  SO_PEERGROUPS: 59,
  SCM_RIGHTS: 1,
  MSG_TRUNC: 0x20,
  MSG_CTRUNC: 0x8,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
} as const;

/** poll(2) event bits. */
export const POLL = { IN: 0x1, OUT: 0x4, ERR: 0x8, HUP: 0x10, NVAL: 0x20 } as const;

/** fcntl(2) commands and flags. */
export const F = {
  GETFD: 1,
  SETFD: 2,
  GETFL: 3,
  SETFL: 4,
  DUPFD_CLOEXEC: 1030,
  FD_CLOEXEC: 1,
} as const;

// ---------------------------------------------------------------------------------------------
// File descriptors

/** open(2); `O_CLOEXEC` is always added so no fd leaks into a child by accident. */
export function open(path: string, flags: number, mode = 0): number {
  const p = cstr(path);
  const r = sc([p], NR.openat, AT_FDCWD, ptr(p), L(flags | O.CLOEXEC), L(mode));
  return check(`open(${path})`, r);
}

/**
 * openat(2): `path` relative to the directory `dirfd`; `O_CLOEXEC` is always added. With
 * `O_NOFOLLOW` (and `O_PATH` for a directory) a path can be walked one component at a time.
 */
export function openat(dirfd: number, path: string, flags: number, mode = 0): number {
  const p = cstr(path);
  const r = sc([p], NR.openat, L(dirfd), ptr(p), L(flags | O.CLOEXEC), L(mode));
  return check(`openat(${path})`, r);
}

/**
 * readlinkat(2): the target of the symlink `path` in `dirfd` (`""`: `dirfd` is an `O_PATH` fd
 * of the link itself), as bytes. A target of PATH_MAX bytes or more fails with ENAMETOOLONG.
 */
export function readlinkat(dirfd: number, path: string): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(new ArrayBuffer(4096));
  const n = check(`readlinkat(${path})`, more().readlinkat(dirfd, cstr(path), buf, 4096n));
  if (n >= buf.length) throw new OsError(`readlinkat(${path})`, 36 /* ENAMETOOLONG */);
  return buf.slice(0, n);
}

/** close(2). */
export function close(fd: number): void {
  check("close", sc(NONE, NR.close, L(fd)));
}

/** read(2) into `buf`; returns the byte count, or -1 with EAGAIN on an empty non-blocking fd. */
export function read(fd: number, buf: Uint8Array<ArrayBuffer>, name = "read"): number {
  const n = sc([buf], NR.read, L(fd), ptr(buf), BigInt(buf.byteLength));
  if (n < 0) {
    const e = errno();
    if (e === E.EAGAIN) return -1;
    throw new OsError(name, e);
  }
  return n;
}

/** write(2) of `buf`; returns the byte count, or -1 with EAGAIN when a non-blocking fd is full. */
export function write(fd: number, buf: Uint8Array<ArrayBuffer>, name = "write"): number {
  const n = sc([buf], NR.write, L(fd), ptr(buf), BigInt(buf.byteLength));
  if (n < 0) {
    const e = errno();
    if (e === E.EAGAIN) return -1;
    throw new OsError(name, e);
  }
  return n;
}

/** ioctl(2) with a pointer argument; `name` is used in the error ("ioctl(TUNSETIFF)"). */
export function ioctl(
  fd: number,
  request: number,
  arg: Uint8Array<ArrayBuffer>,
  name: string,
): number {
  const r = sc([arg], NR.ioctl, L(fd), BigInt(request), ptr(arg));
  return check(`ioctl(${name})`, r);
}

/** ioctl(2) with an integer argument passed by value. */
export function ioctlValue(fd: number, request: number, arg: number, name: string): number {
  return check(`ioctl(${name})`, more().ioctl_val(fd, BigInt(request), BigInt(arg)));
}

/** fcntl(2). */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return check("fcntl", more().fcntl(fd, cmd, BigInt(arg)));
}

/** Puts an fd into non-blocking mode (or back). */
export function setNonBlocking(fd: number, on: boolean): void {
  const fl = fcntl(fd, F.GETFL);
  fcntl(fd, F.SETFL, on ? fl | O.NONBLOCK : fl & ~O.NONBLOCK);
}

/** True when `fd` is open in this process. */
export function isOpen(fd: number): boolean {
  if (more().fcntl(fd, F.GETFD, 0n) >= 0) return true;
  return false;
}

/** What statx(2) tells us about a file. */
export interface FileStat {
  /** The file type and permission bits (st_mode). */
  mode: number;
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** Size in bytes. */
  size: number;
  /** Inode number. */
  ino: bigint;
  /** Device, as "major:minor". */
  dev: string;
}

/** File type bits of st_mode. */
export const S = {
  IFMT: 0o170000,
  IFSOCK: 0o140000,
  IFLNK: 0o120000,
  IFREG: 0o100000,
  IFDIR: 0o040000,
  IFCHR: 0o020000,
  IFIFO: 0o010000,
} as const;

function parseStatx(buf: Uint8Array<ArrayBuffer>): FileStat {
  // struct statx has one layout on every architecture (unlike struct stat).
  const v = new DataView(buf.buffer);
  return {
    uid: v.getUint32(20, true),
    gid: v.getUint32(24, true),
    mode: v.getUint16(28, true),
    ino: v.getBigUint64(32, true),
    size: Number(v.getBigUint64(40, true)),
    dev: `${v.getUint32(136, true)}:${v.getUint32(140, true)}`,
  };
}

const AT_EMPTY_PATH = 0x1000;
/** AT_FDCWD: a path relative to the working directory (openat, statx). */
const AT_FDCWD = -100n;
const STATX_BASIC_STATS = 0x7ff;

/** fstat(2) of an open fd (through statx, whose layout does not depend on the architecture). */
export function fstat(fd: number): FileStat {
  const buf = new Uint8Array(new ArrayBuffer(256));
  const empty = cstr("");
  const r = sc(
    [empty, buf],
    NR.statx,
    L(fd),
    ptr(empty),
    L(AT_EMPTY_PATH),
    L(STATX_BASIC_STATS),
    ptr(buf),
  );
  check("statx", r);
  return parseStatx(buf);
}

/** `*at()` flags and renameat2(2) flags. */
export const AT = {
  SYMLINK_NOFOLLOW: 0x100,
  REMOVEDIR: 0x200,
  RENAME_NOREPLACE: 1,
} as const;

/** File type of a symbolic link in st_mode (S_IFLNK). */
export const S_IFLNK = 0o120000;

/** fstatat(2) of `name` in `dirfd`, never following a symlink (statx, AT_SYMLINK_NOFOLLOW). */
export function fstatat(dirfd: number, name: string): FileStat {
  const buf = new Uint8Array(new ArrayBuffer(256));
  const p = cstr(name);
  const r = sc(
    [p, buf],
    NR.statx,
    L(dirfd),
    ptr(p),
    L(AT.SYMLINK_NOFOLLOW),
    L(STATX_BASIC_STATS),
    ptr(buf),
  );
  check(`statx(${name})`, r);
  return parseStatx(buf);
}

/** mkdirat(2). */
export function mkdirat(dirfd: number, name: string, mode: number): void {
  check(`mkdirat(${name})`, fs().mkdirat(dirfd, cstr(name), mode));
}

/** fchown(2). */
export function fchown(fd: number, uid: number, gid: number): void {
  check("fchown", fs().fchown(fd, uid, gid));
}

/** fchmod(2). */
export function fchmod(fd: number, mode: number): void {
  check("fchmod", fs().fchmod(fd, mode));
}

/** fsync(2). */
export function fsync(fd: number): void {
  check("fsync", fs().fsync(fd));
}

/** renameat2(2) within or across directory fds; `flags` 0 or `AT.RENAME_NOREPLACE`. */
export function renameat2(
  olddirfd: number,
  oldName: string,
  newdirfd: number,
  newName: string,
  flags: number,
): void {
  check(
    `renameat2(${oldName}, ${newName})`,
    fs().renameat2(olddirfd, cstr(oldName), newdirfd, cstr(newName), flags),
  );
}

/** unlinkat(2); `flags` 0 for a file, `AT.REMOVEDIR` for an empty directory. */
export function unlinkat(dirfd: number, name: string, flags: number): void {
  check(`unlinkat(${name})`, fs().unlinkat(dirfd, cstr(name), flags));
}

// ---------------------------------------------------------------------------------------------
// Sockets and fd passing

/** socket(2). */
export function socket(domain: number, type: number, protocol = 0): number {
  return check("socket", sc(NONE, NR.socket, L(domain), L(type | SOCK.CLOEXEC), L(protocol)));
}

/** socketpair(2); both ends are close-on-exec. */
export function socketpair(domain: number, type: number): [number, number] {
  const sv = new Int32Array(new ArrayBuffer(8));
  const r = sc([sv], NR.socketpair, L(domain), L(type | SOCK.CLOEXEC), 0n, ptr(sv));
  check("socketpair", r);
  return [sv[0]!, sv[1]!];
}

/** getsockopt(2) for an int option. */
export function getsockoptInt(fd: number, level: number, name: number): number {
  const val = new Int32Array(new ArrayBuffer(4));
  const len = new Uint32Array(new ArrayBuffer(4));
  len[0] = 4;
  const r = sc([val, len], NR.getsockopt, L(fd), L(level), L(name), ptr(val), ptr(len));
  check("getsockopt", r);
  return val[0]!;
}

/** The address of a buffer's bytes, for syscall(2) and C structs; keep `buf` referenced. */
function ptr(buf: ArrayBufferView<ArrayBuffer>): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

const CMSG_HDR = 16; // sizeof(struct cmsghdr) on LP64: len u64, level i32, type i32
const CMSG_LEN_1FD = CMSG_HDR + 4; // 20
const CMSG_SPACE_1FD = CMSG_HDR + 8; // 24

/** A struct msghdr and every buffer whose address it holds (for sc()'s keep, or inFlight). */
interface MsgHdr {
  /** The 56-byte struct msghdr (LP64), for sendmsg(2) or recvmsg(2). */
  msg: Uint8Array<ArrayBuffer>;
  /** A view of it: msg_controllen at 40 and msg_flags at 48 are read after recvmsg. */
  view: DataView;
  /** msg, its iovec, the data and the control buffer. */
  keep: readonly object[];
}

/**
 * A struct msghdr with one iovec over all of `data` and, when given, `control` as its ancillary
 * data with msg_controllen `controllen` (the whole buffer unless said otherwise).
 */
function msghdr(
  data: Uint8Array<ArrayBuffer>,
  control?: Uint8Array<ArrayBuffer>,
  controllen = control?.byteLength ?? 0,
): MsgHdr {
  const iov = new Uint8Array(new ArrayBuffer(16));
  const msg = new Uint8Array(new ArrayBuffer(56));
  const iv = new DataView(iov.buffer);
  iv.setBigUint64(0, ptr(data), true);
  iv.setBigUint64(8, BigInt(data.byteLength), true);
  const view = new DataView(msg.buffer);
  view.setBigUint64(16, ptr(iov), true); // msg_iov
  view.setBigUint64(24, 1n, true); // msg_iovlen
  if (control !== undefined) {
    view.setBigUint64(32, ptr(control), true); // msg_control
    view.setBigUint64(40, BigInt(controllen), true); // msg_controllen
  }
  return { msg, view, keep: control ? [data, iov, control, msg] : [data, iov, msg] };
}

/** One SCM_RIGHTS control message carrying `fd` (CMSG_SPACE of one int). */
function rightsMessage(fd: number): Uint8Array<ArrayBuffer> {
  const control = new Uint8Array(new ArrayBuffer(CMSG_SPACE_1FD));
  const cv = new DataView(control.buffer);
  cv.setBigUint64(0, BigInt(CMSG_LEN_1FD), true);
  cv.setInt32(8, SOCK.SOL_SOCKET, true);
  cv.setInt32(12, SOCK.SCM_RIGHTS, true);
  cv.setInt32(16, fd, true);
  return control;
}

/**
 * Sends one data byte 0x00 and one fd with SCM_RIGHTS in a single sendmsg(2), exactly as
 * qemu-bridge-helper does. MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE death.
 *
 * With `timeoutMs`, the wait for room in the socket is bounded: sendmsg is tried with
 * MSG_DONTWAIT, and on EAGAIN poll(2) waits for POLLOUT until the time is up; then OsError
 * ETIMEDOUT. Without it, sendmsg blocks as in C (a peer that never reads blocks it forever).
 */
export function sendFd(sock: number, fd: number, timeoutMs?: number): void {
  // One data byte, value 0, and msg_controllen CMSG_LEN (not CMSG_SPACE), as the C helper sends.
  const h = msghdr(new Uint8Array(new ArrayBuffer(1)), rightsMessage(fd), CMSG_LEN_1FD);
  const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
  const flags = SOCK.MSG_NOSIGNAL | (deadline === undefined ? 0 : SOCK.MSG_DONTWAIT);
  for (;;) {
    const n = sc(h.keep, NR.sendmsg, L(sock), ptr(h.msg), L(flags));
    const e = n < 0 ? errno() : 0;
    if (n === 1) return;
    if (n >= 0) throw new OsError("sendmsg", E.EPIPE);
    if (deadline === undefined || (e !== E.EAGAIN && e !== E.EINTR)) {
      throw new OsError("sendmsg", e);
    }
    const left = Math.ceil(deadline - performance.now());
    if (left <= 0) throw new OsError("sendmsg", E.ETIMEDOUT);
    // POLLERR/POLLHUP wake it too: the next sendmsg then reports EPIPE or the socket's error.
    const pfd = pollBuffer([sock], POLL.OUT);
    if (more().poll(pfd, 1n, left) < 0) {
      const pe = errno();
      if (pe !== E.EINTR) throw new OsError("poll", pe);
    }
  }
}

/** The credentials of a Unix socket's peer (SO_PEERCRED); pid 0 when it has none. */
export interface PeerCred {
  /** The peer's pid when it connected or created the pair; 0 for no peer. */
  pid: number;
  /** The peer's uid. */
  uid: number;
  /** The peer's gid. */
  gid: number;
}

/** getsockopt(SO_PEERCRED): who is at the other end of a Unix socket. */
export function peerCred(fd: number): PeerCred {
  const val = new Int32Array(new ArrayBuffer(12));
  const len = new Uint32Array(new ArrayBuffer(4));
  len[0] = 12;
  const r = sc(
    [val, len],
    NR.getsockopt,
    L(fd),
    L(SOCK.SOL_SOCKET),
    L(SOCK.SO_PEERCRED),
    ptr(val),
    ptr(len),
  );
  check("getsockopt(SO_PEERCRED)", r);
  return { pid: val[0]!, uid: val[1]! >>> 0, gid: val[2]! >>> 0 };
}

/**
 * Runs `fn` with the calling thread moved into the network namespace `nsfd`, and moves it
 * back before returning, whatever `fn` did. Only for creating a socket there (a socket stays in
 * the namespace it was made in); `fn` must be synchronous so no other code runs in between.
 * setns(2) needs CAP_SYS_ADMIN: without it this throws OsError (EPERM) and nothing moved.
 *
 * @throws {Error} if the thread cannot be moved back (it would be left in the other namespace).
 */
export function inNetNamespace<T>(nsfd: number, fn: () => T): T {
  const CLONE_NEWNET = 0x40000000;
  const home = open("/proc/thread-self/ns/net", O.RDONLY);
  try {
    check("setns", proc().setns(nsfd, CLONE_NEWNET));
    let outcome: { value: T } | { error: unknown };
    try {
      outcome = { value: fn() };
    } catch (error) {
      outcome = { error };
    }
    if (proc().setns(home, CLONE_NEWNET) < 0) {
      // Nothing sane can continue on this thread: its sockets would be made elsewhere.
      throw new Error(`setns back to the original network namespace failed: errno ${errno()}`);
    }
    if ("error" in outcome) throw outcome.error;
    return outcome.value;
  } finally {
    close(home);
  }
}

/** What one recvmsg(2) brought: data bytes and any fds, plus what was wrong with them. */
export interface Received {
  /** Data bytes received (0 means the peer closed without sending). */
  bytes: number;
  /** Every fd that arrived with SCM_RIGHTS, already close-on-exec. */
  fds: number[];
  /** Problems with the control message, empty when it was exactly one well-formed fd. */
  problems: string[];
}

/**
 * Receives one message that should carry exactly one fd. Unlike QEMU's recv_fd, the control
 * message is checked: level, type, length and truncation. Every fd that arrives is returned so
 * the caller can close it on a failure path. Returns undefined on EAGAIN (non-blocking socket).
 */
export function recvFds(sock: number): Received | undefined {
  const data = new Uint8Array(new ArrayBuffer(16));
  const control = new Uint8Array(new ArrayBuffer(256));
  const h = msghdr(data, control);
  const mv = h.view;
  inFlight = h.keep;
  const n = proc().recvmsg(sock, h.msg, SOCK.MSG_CMSG_CLOEXEC | SOCK.MSG_DONTWAIT);
  inFlight = NONE;
  if (n < 0n) {
    const e = errno();
    if (e === E.EAGAIN) return undefined;
    throw new OsError("recvmsg", e);
  }
  const controllen = Number(mv.getBigUint64(40, true));
  const flags = mv.getInt32(48, true);
  const cv = new DataView(control.buffer);
  const fds: number[] = [];
  const problems: string[] = [];
  if (flags & SOCK.MSG_CTRUNC) problems.push("control message truncated (MSG_CTRUNC)");
  let off = 0;
  let messages = 0;
  while (off + CMSG_HDR <= controllen) {
    const len = Number(cv.getBigUint64(off, true));
    const level = cv.getInt32(off + 8, true);
    const type = cv.getInt32(off + 12, true);
    if (len < CMSG_HDR || off + len > controllen) {
      problems.push(`malformed control message length ${len}`);
      break;
    }
    messages++;
    if (level === SOCK.SOL_SOCKET && type === SOCK.SCM_RIGHTS) {
      for (let p = off + CMSG_HDR; p + 4 <= off + len; p += 4) fds.push(cv.getInt32(p, true));
    } else {
      problems.push(`unexpected control message level ${level} type ${type}`);
    }
    off += (len + 7) & ~7;
  }
  if (messages > 1) problems.push(`expected one control message, got ${messages}`);
  if (fds.length !== 1 && n > 0n) problems.push(`expected one fd, got ${fds.length}`);
  return { bytes: Number(n), fds, problems };
}

/** sizeof(struct sockaddr_un): sa_family_t (2 bytes) and sun_path[108]. */
const SOCKADDR_UN_SIZE = 110;

/**
 * Opens a non-blocking, close-on-exec AF_UNIX stream socket and connects it to `path`. A Unix
 * socket connect completes at once or fails (EAGAIN when the listener's backlog is full), so a
 * non-blocking connect never leaves the caller waiting. Throws RangeError when the path does not
 * fit sun_path, OsError("connect(PATH)") when the connect fails; the socket is closed then.
 */
export function connectUnixStream(path: string): number {
  const bytes = cstr(path);
  if (bytes.byteLength > SOCKADDR_UN_SIZE - 2) {
    throw new RangeError(`Unix socket path is too long (at most 107 bytes): '${path}'`);
  }
  const addr = new Uint8Array(new ArrayBuffer(SOCKADDR_UN_SIZE));
  new DataView(addr.buffer).setUint16(0, SOCK.AF_UNIX, true);
  addr.set(bytes, 2);
  const fd = socket(SOCK.AF_UNIX, SOCK.STREAM | SOCK.NONBLOCK);
  const r = stream().connect(fd, addr, 2 + bytes.byteLength);
  if (r < 0) {
    const e = errno();
    sc(NONE, NR.close, L(fd));
    throw new OsError(`connect(${path})`, e);
  }
  return fd;
}

/**
 * send(2) with MSG_NOSIGNAL (a closed peer is an EPIPE error, not a SIGPIPE death) and
 * MSG_DONTWAIT. Returns the byte count, or -1 when the socket buffer is full.
 */
export function sendSome(fd: number, buf: Uint8Array<ArrayBuffer>): number {
  const n = stream().send(fd, buf, BigInt(buf.byteLength), SOCK.MSG_NOSIGNAL | SOCK.MSG_DONTWAIT);
  if (n < 0) {
    const e = errno();
    if (e === E.EAGAIN) return -1;
    throw new OsError("send", e);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// poll

/** poll(2) on the calling thread; returns revents per fd (0 when nothing happened). */
export function poll(fds: readonly number[], events: number, timeoutMs: number): number[] {
  const buf = pollBuffer(fds, events);
  check("poll", more().poll(buf, BigInt(fds.length), timeoutMs));
  return pollResult(buf, fds.length);
}

/**
 * poll(2) on a worker thread: the event loop keeps running while it waits. Returns revents per
 * fd; an interrupted poll returns all zeros.
 */
export async function pollAsync(
  fds: readonly number[],
  events: readonly number[],
  timeoutMs: number,
): Promise<number[]> {
  const buf = new Uint8Array(new ArrayBuffer(8 * fds.length));
  const v = new DataView(buf.buffer);
  fds.forEach((fd, i) => {
    v.setInt32(i * 8, fd, true);
    v.setInt16(i * 8 + 4, events[i] ?? 0, true);
  });
  // errno cannot be read after a call on another thread; a negative result means EINTR or a
  // bad fd, and the caller re-checks its fds on the next round either way.
  const r = await proc().poll_async(buf, BigInt(fds.length), timeoutMs);
  if (r < 0) return fds.map(() => 0);
  return pollResult(buf, fds.length);
}

function pollBuffer(fds: readonly number[], events: number): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(new ArrayBuffer(8 * fds.length));
  const v = new DataView(buf.buffer);
  fds.forEach((fd, i) => {
    v.setInt32(i * 8, fd, true);
    v.setInt16(i * 8 + 4, events, true);
  });
  return buf;
}

function pollResult(buf: Uint8Array<ArrayBuffer>, n: number): number[] {
  const v = new DataView(buf.buffer);
  return Array.from({ length: n }, (_, i) => v.getInt16(i * 8 + 6, true) & 0xffff);
}

// ---------------------------------------------------------------------------------------------
// Identity, capabilities, process attributes

/** Real, effective and saved uid or gid. */
export interface Ids {
  /** Real id. */
  real: number;
  /** Effective id. */
  effective: number;
  /** Saved id. */
  saved: number;
}

/** getresuid(2). */
export function getresuid(): Ids {
  const out = new Uint32Array(new ArrayBuffer(12)); // real, effective, saved
  const p = ptr(out);
  const r = sc([out], NR.getresuid, p, p + 4n, p + 8n);
  check("getresuid", r);
  return { real: out[0]!, effective: out[1]!, saved: out[2]! };
}

/** getresgid(2). */
export function getresgid(): Ids {
  const out = new Uint32Array(new ArrayBuffer(12)); // real, effective, saved
  const p = ptr(out);
  const r = sc([out], NR.getresgid, p, p + 4n, p + 8n);
  check("getresgid", r);
  return { real: out[0]!, effective: out[1]!, saved: out[2]! };
}

/** setresuid(2): changes every thread (glibc broadcasts it). */
export function setresuid(r: number, e: number, s: number): void {
  check("setresuid", ids().setresuid(r, e, s));
}

/** setresgid(2): changes every thread (glibc broadcasts it). */
export function setresgid(r: number, e: number, s: number): void {
  check("setresgid", ids().setresgid(r, e, s));
}

/**
 * The raw setresuid system call: changes only the calling thread. glibc's setresuid() repeats
 * the call on every thread, so a probe that root cannot be regained would, on a thread that
 * still could, actually regain it there; this one touches nothing but the caller.
 */
export function setresuidThisThread(r: number, e: number, s: number): void {
  if (sc(NONE, NR.setresuid, L(r), L(e), L(s)) < 0) {
    throw new OsError("setresuid (this thread)", errno());
  }
}

/** The supplementary groups of the calling process. */
export function getgroups(): number[] {
  const n = check("getgroups", ids().getgroups(0, new Uint8Array(0)));
  const list = new Uint32Array(Math.max(n, 1));
  const got = check("getgroups", ids().getgroups(n, new Uint8Array(list.buffer)));
  return Array.from(list.subarray(0, got));
}

/** getpid(2). */
export function getpid(): number {
  return sc(NONE, NR.getpid);
}

/** gettid(2): the calling thread's id. */
export function gettid(): number {
  return sc(NONE, NR.gettid);
}

/** prctl(2) constants. */
export const PR = {
  SET_DUMPABLE: 4,
  GET_DUMPABLE: 3,
  SET_KEEPCAPS: 8,
  CAPBSET_READ: 23,
  CAPBSET_DROP: 24,
  SET_NO_NEW_PRIVS: 38,
  GET_NO_NEW_PRIVS: 39,
  CAP_AMBIENT: 47,
  CAP_AMBIENT_CLEAR_ALL: 4,
  // Memory-deny-write-execute (Linux 6.3): PR_SET_MDWE and its PR_MDWE_REFUSE_EXEC_GAIN.
  SET_MDWE: 65,
  MDWE_REFUSE_EXEC_GAIN: 1,
} as const;

/** prctl(2); `name` names the option in errors. */
export function prctl(option: number, a2: number, name: string, a3 = 0, a4 = 0, a5 = 0): number {
  return check(`prctl(${name})`, sc(NONE, NR.prctl, L(option), L(a2), L(a3), L(a4), L(a5)));
}

/**
 * From now on no memory of this process can become executable (PR_SET_MDWE with
 * PR_MDWE_REFUSE_EXEC_GAIN, Linux 6.3 and later): no new mapping may be writable and executable,
 * and no mapping may gain execution. For a process that makes no machine code (V8 --jitless,
 * libc called through addresses, as here): bytes an attacker writes into its memory cannot be
 * made to run. Kept across fork and exec.
 *
 * @returns false when the kernel lacks the option (EINVAL); any other failure throws.
 */
export function forbidExecutableMemory(): boolean {
  try {
    prctl(PR.SET_MDWE, PR.MDWE_REFUSE_EXEC_GAIN, "PR_SET_MDWE");
    return true;
  } catch (e) {
    if (e instanceof OsError && e.errno === E.EINVAL) return false;
    throw e;
  }
}

/** The three capability sets of the calling thread, as 64-bit masks. */
export interface CapSets {
  /** Effective set. */
  effective: bigint;
  /** Permitted set. */
  permitted: bigint;
  /** Inheritable set. */
  inheritable: bigint;
}

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** capget(2) for the calling thread. */
export function capget(): CapSets {
  const hdr = new Uint32Array(new ArrayBuffer(8));
  hdr[0] = LINUX_CAPABILITY_VERSION_3;
  const data = new Uint32Array(new ArrayBuffer(24));
  const r = sc([hdr, data], NR.capget, ptr(hdr), ptr(data));
  check("capget", r);
  const j = (lo: number, hi: number) => BigInt(data[lo]!) | (BigInt(data[hi]!) << 32n);
  return { effective: j(0, 3), permitted: j(1, 4), inheritable: j(2, 5) };
}

/** capset(2): changes only the calling thread, which is why privileged calls stay on it. */
export function capset(sets: CapSets): void {
  const hdr = new Uint32Array(new ArrayBuffer(8));
  hdr[0] = LINUX_CAPABILITY_VERSION_3;
  const lo = (v: bigint) => Number(v & 0xffffffffn);
  const hi = (v: bigint) => Number(v >> 32n);
  const data = new Uint32Array(new ArrayBuffer(24));
  data.set([
    lo(sets.effective),
    lo(sets.permitted),
    lo(sets.inheritable),
    hi(sets.effective),
    hi(sets.permitted),
    hi(sets.inheritable),
  ]);
  const r = sc([hdr, data], NR.capset, ptr(hdr), ptr(data));
  check("capset", r);
}

/**
 * if_nametoindex(3); 0 when there is no such interface. Done as glibc 2.36 does it, with system
 * calls so that it binds no symbol of its own: a name of 16 bytes or more is no interface;
 * otherwise SIOCGIFINDEX on a throwaway datagram socket (netlink, else Unix, else IPv4: the
 * first family the kernel allows; any of them answers this ioctl), and 0 for any failure.
 */
export function ifNameToIndex(name: string): number {
  const bytes = cstr(name);
  if (bytes.length > 16) return 0;
  const ifr = new Uint8Array(new ArrayBuffer(40)); // struct ifreq: name[16], then ifr_ifindex
  ifr.set(bytes);
  const type = L(SOCK.DGRAM | SOCK.CLOEXEC);
  let fd = -1;
  for (const family of [SOCK.AF_NETLINK, SOCK.AF_UNIX, SOCK.AF_INET]) {
    fd = sc(NONE, NR.socket, L(family), type, 0n);
    if (fd >= 0) break;
  }
  if (fd < 0) return 0;
  const r = sc([ifr], NR.ioctl, L(fd), BigInt(SIOCGIFINDEX), ptr(ifr));
  sc(NONE, NR.close, L(fd));
  return r < 0 ? 0 : new DataView(ifr.buffer).getInt32(16, true);
}

/** SIOCGIFINDEX: an interface's index by name (struct ifreq). */
const SIOCGIFINDEX = 0x8933;

/**
 * readAll()'s read buffer, one for the process, made on first use: what it read is copied out
 * before it returns, and nothing runs between (no await). A fresh 64 KiB per call was garbage V8
 * collects late: the bridge service, which reads a few small files per request, held about
 * 200 MiB of them.
 */
let readScratch: Uint8Array<ArrayBuffer> | undefined;

/**
 * Reads an open fd to its end, through libc. Fails rather than returning a short read: past
 * `limit` bytes (RangeError), on any read error, and on EAGAIN (a regular or /proc file never
 * gives it; stopping there would silently drop the rest).
 *
 * @throws {RangeError} past `limit` bytes.
 * @throws {OsError} from read(2), EAGAIN included; the syscall is named `read(PATH)`.
 */
export function readAll(fd: number, limit: number, path: string): Uint8Array<ArrayBuffer> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = readScratch ??= new Uint8Array(new ArrayBuffer(65536));
  for (;;) {
    const n = read(fd, buf, `read(${path})`);
    if (n < 0) throw new OsError(`read(${path})`, E.EAGAIN);
    if (n === 0) break;
    total += n;
    if (total > limit) throw new RangeError(`File is larger than ${limit} bytes: ${path}`);
    chunks.push(buf.slice(0, n));
  }
  const all = new Uint8Array(new ArrayBuffer(total));
  let off = 0;
  for (const ch of chunks) {
    all.set(ch, off);
    off += ch.length;
  }
  return all;
}

/** Reads a whole small file through libc (for /proc, which Deno's APIs gate behind --allow-all). */
export function readSmallFile(path: string, limit = 1 << 20): string {
  const fd = open(path, O.RDONLY | O.NOCTTY);
  try {
    return new TextDecoder().decode(readAll(fd, limit, path));
  } finally {
    close(fd);
  }
}

/** The names in a directory (getdents64(2) through libc; works for /proc without --allow-all). */
export function listDir(path: string): string[] {
  const fd = open(path, O.RDONLY | O.DIRECTORY);
  try {
    const names: string[] = [];
    const buf = new Uint8Array(new ArrayBuffer(32768));
    for (;;) {
      const n = sc([buf], NR.getdents64, L(fd), ptr(buf), BigInt(buf.byteLength));
      if (n < 0) throw new OsError("getdents64", errno());
      if (n === 0) break;
      const v = new DataView(buf.buffer);
      for (let off = 0; off < n;) {
        const reclen = v.getUint16(off + 16, true);
        const raw = buf.subarray(off + 19, off + reclen);
        const end = raw.indexOf(0);
        const name = new TextDecoder().decode(raw.subarray(0, end < 0 ? raw.length : end));
        if (name !== "." && name !== "..") names.push(name);
        off += reclen;
      }
    }
    return names;
  } finally {
    close(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The bridge service: Unix sockets by path, peer credentials, messages with fds

/** `struct sockaddr_un` for `path` and its length (family, path, NUL). */
function sockaddrUn(path: string): [Uint8Array<ArrayBuffer>, number] {
  const bytes = new TextEncoder().encode(path);
  // sun_path is 108 bytes; a longer path would be truncated by the kernel: refuse it.
  if (bytes.length === 0 || bytes.length > 107 || bytes.includes(0)) {
    throw new RangeError(`Unix socket path does not fit in sun_path: ${JSON.stringify(path)}`);
  }
  const sa = new Uint8Array(new ArrayBuffer(110));
  new DataView(sa.buffer).setUint16(0, SOCK.AF_UNIX, true);
  sa.set(bytes, 2);
  return [sa, 2 + bytes.length + 1];
}

/** bind(2) of a Unix socket to a path. */
export function bindUnix(fd: number, path: string): void {
  const [sa, len] = sockaddrUn(path);
  check(`bind(${path})`, svc().bind(fd, sa, len));
}

/** listen(2). */
export function listen(fd: number, backlog: number): void {
  check("listen", svc().listen(fd, backlog));
}

/**
 * accept4(2) with SOCK_NONBLOCK and SOCK_CLOEXEC; returns the new fd, or -1 when no connection
 * is waiting (EAGAIN) or the one waiting went away before it was taken (ECONNABORTED).
 */
export function accept(fd: number): number {
  const r = svc().accept4(fd, null, null, SOCK.NONBLOCK | SOCK.CLOEXEC);
  if (r < 0) {
    const e = errno();
    if (e === E.EAGAIN || e === 103 /* ECONNABORTED */ || e === E.EINTR) return -1;
    throw new OsError("accept4", e);
  }
  return r;
}

/** connect(2) of a Unix socket to a path. */
export function connectUnix(fd: number, path: string): void {
  const [sa, len] = sockaddrUn(path);
  check(`connect(${path})`, svc().connect(fd, sa, len));
}

/** unlink(2). */
export function unlink(path: string): void {
  check(`unlink(${path})`, svc().unlink(cstr(path)));
}

/** chmod(2). */
export function chmod(path: string, mode: number): void {
  check(`chmod(${path})`, svc().chmod(cstr(path), mode));
}

/** mkdir(2); an existing directory is not an error. */
export function mkdir(path: string, mode: number): void {
  if (svc().mkdir(cstr(path), mode) < 0) {
    const e = errno();
    if (e !== E.EEXIST) throw new OsError(`mkdir(${path})`, e);
  }
}

/** stat(2) of a path, following symlinks (statx with no flags). */
export function stat(path: string): FileStat {
  const buf = new Uint8Array(new ArrayBuffer(256));
  const p = cstr(path);
  const r = sc([p, buf], NR.statx, AT_FDCWD, ptr(p), 0n, L(STATX_BASIC_STATS), ptr(buf));
  check(`statx(${path})`, r);
  return parseStatx(buf);
}

/** getsockopt(SO_PEERGROUPS): the peer's supplementary groups when it connected. */
export function peerGroups(fd: number): number[] {
  // NGROUPS_MAX is 65536; start small and grow once to the size the kernel asks for (ERANGE).
  let count = 64;
  for (let attempt = 0; attempt < 2; attempt++) {
    const list = new Uint32Array(new ArrayBuffer(count * 4));
    const len = new Uint32Array(new ArrayBuffer(4));
    len[0] = count * 4;
    const r = sc(
      [list, len],
      NR.getsockopt,
      L(fd),
      L(SOCK.SOL_SOCKET),
      L(SOCK.SO_PEERGROUPS),
      ptr(list),
      ptr(len),
    );
    if (r === 0) return Array.from(list.subarray(0, len[0]! / 4));
    const e = errno();
    if (e !== 34 /* ERANGE */) throw new OsError("getsockopt(SO_PEERGROUPS)", e);
    count = Math.ceil(len[0]! / 4);
  }
  throw new OsError("getsockopt(SO_PEERGROUPS)", 34);
}

/** One message received on a SOCK_SEQPACKET socket. */
export interface Message {
  /** The data bytes (at most the limit asked for). */
  data: Uint8Array<ArrayBuffer>;
  /** True when the message was longer than the limit (MSG_TRUNC); the rest is gone. */
  truncated: boolean;
  /** Every fd that came with it, close-on-exec; the caller must close them. */
  fds: number[];
  /** True when control data was cut (MSG_CTRUNC): the kernel dropped fds that did not fit. */
  controlTruncated: boolean;
}

/**
 * One non-blocking recvmsg(2) of at most `limit` bytes; undefined on EAGAIN. A message with 0
 * bytes and no fds means the peer closed. Every fd that arrives is returned, never dropped.
 */
export function recvMessage(sock: number, limit: number): Message | undefined {
  const data = new Uint8Array(new ArrayBuffer(limit));
  const control = new Uint8Array(new ArrayBuffer(256));
  const h = msghdr(data, control);
  const mv = h.view;
  inFlight = h.keep;
  const n = proc().recvmsg(sock, h.msg, SOCK.MSG_CMSG_CLOEXEC | SOCK.MSG_DONTWAIT);
  inFlight = NONE;
  if (n < 0n) {
    const e = errno();
    if (e === E.EAGAIN || e === E.EINTR) return undefined;
    throw new OsError("recvmsg", e);
  }
  const flags = mv.getInt32(48, true);
  const controllen = Number(mv.getBigUint64(40, true));
  const cv = new DataView(control.buffer);
  const fds: number[] = [];
  for (let off = 0; off + CMSG_HDR <= controllen;) {
    const len = Number(cv.getBigUint64(off, true));
    if (len < CMSG_HDR || off + len > controllen) break;
    if (cv.getInt32(off + 8, true) === SOCK.SOL_SOCKET && cv.getInt32(off + 12, true) === 1) {
      for (let p = off + CMSG_HDR; p + 4 <= off + len; p += 4) fds.push(cv.getInt32(p, true));
    }
    off += (len + 7) & ~7;
  }
  return {
    data: data.slice(0, Math.min(Number(n), limit)),
    truncated: (flags & SOCK.MSG_TRUNC) !== 0,
    fds,
    controlTruncated: (flags & SOCK.MSG_CTRUNC) !== 0,
  };
}

/**
 * One sendmsg(2) of `data`, with `fd` attached by SCM_RIGHTS when given. Never blocks
 * (MSG_DONTWAIT: a client that does not read must not stall the service) and never raises
 * SIGPIPE (MSG_NOSIGNAL). Throws OsError unless the whole message was sent.
 */
export function sendMessage(sock: number, bytes: Uint8Array<ArrayBuffer>, fd?: number): void {
  const h = fd === undefined ? msghdr(bytes) : msghdr(bytes, rightsMessage(fd), CMSG_LEN_1FD);
  const n = sc(h.keep, NR.sendmsg, L(sock), ptr(h.msg), L(SOCK.MSG_NOSIGNAL | SOCK.MSG_DONTWAIT));
  if (n < 0) throw new OsError("sendmsg", errno());
  if (n !== bytes.byteLength) throw new OsError("sendmsg", E.EPIPE);
}
