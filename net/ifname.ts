// Linux network interface name rules (the kernel's dev_valid_name), checked on UTF-8 bytes,
// plus the escaping used to echo user text in one-line diagnostics.

/**
 * Size of the kernel's interface name buffer, including the terminating NUL (`<net/if.h>`).
 * A valid name is therefore at most `IFNAMSIZ - 1` = 15 bytes long.
 */
export const IFNAMSIZ = 16;

const encoder = new TextEncoder();

/**
 * Escapes the characters of `text` that would break a one-line diagnostic or drive a terminal:
 * `\t` `\n` `\v` `\f` `\r` become those two-character escapes, other C0 controls and DEL become
 * `\xHH`, C1 controls and U+2028/U+2029 become `\uHHHH`. Everything else, including backslash and
 * non-ASCII text, is kept verbatim so that printable names read exactly as the C helper prints
 * them.
 *
 * @param text The user-supplied text to echo.
 * @returns `text` with control characters escaped.
 *
 * @example Escaping a tab and an escape character
 * ```ts
 * import assert from "node:assert/strict";
 * import { escapeForMessage } from "./ifname.ts";
 *
 * assert.equal(escapeForMessage("br\t0\x1b[2J"), "br\\t0\\x1b[2J");
 * assert.equal(escapeForMessage("brücke"), "brücke");
 * ```
 */
export function escapeForMessage(text: string): string {
  // deno-lint-ignore no-control-regex -- matching control characters is the point
  return text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => {
    switch (c) {
      case "\t":
        return "\\t";
      case "\n":
        return "\\n";
      case "\v":
        return "\\v";
      case "\f":
        return "\\f";
      case "\r":
        return "\\r";
    }
    const code = c.charCodeAt(0);
    return code < 0x80
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/**
 * Bytes the kernel's `isspace()` (lib/ctype.c, Latin-1 table) treats as space: `\t` `\n` `\v`
 * `\f` `\r`, SP and 0xA0. The kernel works on bytes, so 0xA0 also matches the second byte of a
 * UTF-8 sequence such as U+00A0 (C2 A0) or U+0560 (D5 A0); we reject exactly what it rejects.
 */
function isKernelSpace(byte: number): boolean {
  return (byte >= 0x09 && byte <= 0x0d) || byte === 0x20 || byte === 0xa0;
}

/**
 * Checks `name` against the kernel's rules for a network interface name (`dev_valid_name`):
 * 1 to 15 UTF-8 bytes, not `.` or `..`, and no `/`, `:`, NUL or byte the kernel's `isspace()`
 * accepts (9-13, 32, 0xA0). The length is in bytes, so 8 × "é" (16 bytes) is too long.
 *
 * @param name The candidate interface name.
 * @returns `undefined` when `name` is valid, otherwise a one-line reason. A name of 16 bytes or
 * more gives exactly the C helper's wording, ``name `NAME' too long: N`` (N in bytes); control
 * characters in the echoed name are escaped (see {@linkcode escapeForMessage}).
 *
 * @example Valid and invalid names
 * ```ts
 * import assert from "node:assert/strict";
 * import { ifnameError } from "./ifname.ts";
 *
 * assert.equal(ifnameError("br0"), undefined);
 * assert.equal(ifnameError("0123456789abcdef"), "name `0123456789abcdef' too long: 16");
 * assert.equal(ifnameError("br/0"), "invalid interface name `br/0': contains `/'");
 * ```
 */
export function ifnameError(name: string): string | undefined {
  const shown = escapeForMessage(name);
  const invalid = (why: string) => `invalid interface name \`${shown}': ${why}`;
  if (name === "") return invalid("empty");
  // A lone surrogate has no UTF-8 form: TextEncoder would silently turn it into U+FFFD, so the
  // kernel would see a different name from the one that was checked. Better to fail.
  if (!name.isWellFormed()) return invalid("contains an unpaired UTF-16 surrogate");
  // Deno decodes argv lossily: a byte that is not UTF-8 arrives as U+FFFD, so `--br=br\xff`
  // would be checked and used as the different name "br\u{FFFD}". A real U+FFFD cannot be told
  // apart from that, and no bridge is named so: refuse both, wherever a name comes from.
  if (name.includes("\uFFFD")) return invalid("not valid UTF-8 (or U+FFFD)");
  const bytes = encoder.encode(name);
  if (bytes.length >= IFNAMSIZ) return `name \`${shown}' too long: ${bytes.length}`;
  if (name === "." || name === "..") return invalid("`.' and `..' are reserved");
  for (const byte of bytes) {
    if (byte === 0x00) return invalid("contains a NUL byte");
    if (byte === 0x2f) return invalid("contains `/'");
    if (byte === 0x3a) return invalid("contains `:'");
    if (isKernelSpace(byte)) {
      return invalid(`contains the whitespace byte 0x${byte.toString(16).padStart(2, "0")}`);
    }
  }
  return undefined;
}

/**
 * Tells whether `name` is a valid Linux network interface name (see {@linkcode ifnameError}).
 *
 * @param name The candidate interface name.
 * @returns `true` when the kernel would accept `name`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isValidIfname } from "./ifname.ts";
 *
 * assert.equal(isValidIfname("virbr0"), true);
 * assert.equal(isValidIfname("br 0"), false);
 * ```
 */
export function isValidIfname(name: string): boolean {
  return ifnameError(name) === undefined;
}
