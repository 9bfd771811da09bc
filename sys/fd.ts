// File descriptors as objects: one owner, an idempotent close(), and `using` support, which
// replaces the C helper's single `goto cleanup` path.

import { close } from "./libc.ts";

/** An owned file descriptor that is closed exactly once. */
export class Fd implements Disposable {
  #fd: number;

  /** Takes ownership of `fd`. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Invalid file descriptor: ${fd}`);
    this.#fd = fd;
  }

  /** The fd number; throws once closed, so a closed number is never reused by mistake. */
  get value(): number {
    if (this.#fd < 0) throw new Error("File descriptor is closed");
    return this.#fd;
  }

  /** True until close() or release(). */
  get open(): boolean {
    return this.#fd >= 0;
  }

  /** Gives up ownership without closing: the caller now owns the number. */
  release(): number {
    const fd = this.value;
    this.#fd = -1;
    return fd;
  }

  /** Closes the fd; calling it again does nothing. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    // A close error leaves the fd closed on Linux; there is nothing to retry.
    try {
      close(fd);
    } catch { /* already closed by the kernel's rules */ }
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
