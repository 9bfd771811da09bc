// What in a process's memory map was made to run at run time: for the tests that check that the
// helper and the service make no machine code (--jitless, libc called through addresses).

/**
 * The lines of /proc/PID/maps (`address perms offset dev inode [path]`) that are executable and
 * not a binary's own mapping (no path; the kernel's `[vdso]` and `[vsyscall]` aside), or that are
 * writable and executable at all. Empty for a process that made no code.
 */
export function madeCode(maps: readonly string[]): string[] {
  return maps.filter((line) => {
    const [, perms = "", , , , path = ""] = line.split(/\s+/);
    return perms[2] === "x" &&
      (perms[1] === "w" || !/^(\/|\[vdso\]$|\[vsyscall\]$)/.test(path));
  });
}
