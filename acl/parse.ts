// The grammar of /etc/qemu/bridge.conf: turns the text of one ACL file into rules and include
// directives, line by line exactly as QEMU's parse_acl_file does, but failing closed.

import { escapeForMessage, ifnameError, IFNAMSIZ } from "../net/ifname.ts";

/** One access rule from an ACL file. `name` is a bridge name, compared byte for byte. */
export type AclRule =
  | { kind: "allow"; name: string }
  | { kind: "allow-all" }
  | { kind: "deny"; name: string }
  | { kind: "deny-all" };

/**
 * One parsed ACL line: a rule, or an `include` of another file. `path` is the trimmed argument,
 * unresolved (C resolves it against the helper's cwd); `line` is the 1-based line it came from.
 */
export type AclEntry = AclRule | { kind: "include"; path: string; line: number };

/**
 * Thrown for a line of an ACL file that does not parse. The message is `FILE:LINE: DETAIL`, where
 * DETAIL keeps the C helper's wording where it has one (``Unknown command `CMD'``,
 * ``name `ARG' too long: N``, `Invalid config line: ...`).
 */
export class AclSyntaxError extends SyntaxError {
  /** The file name the text was read from, as given to {@linkcode parseAcl}. */
  readonly file: string;
  /** The 1-based line number of the offending line. */
  readonly line: number;
  /** What is wrong with the line, without the file and line prefix. */
  readonly detail: string;

  /**
   * Creates the error.
   *
   * @param file The file name the text was read from.
   * @param line The 1-based line number.
   * @param detail What is wrong with the line.
   */
  constructor(file: string, line: number, detail: string) {
    super(`${escapeForMessage(file)}:${line}: ${detail}`);
    this.name = "AclSyntaxError";
    this.file = file;
    this.line = line;
    this.detail = detail;
  }
}

/**
 * The longest physical line accepted, in UTF-8 bytes without the newline. C reads with
 * `fgets(line, 4096)` and parses the rest of a longer line as a new line, which lets a rule be
 * smuggled after a long comment; we never split a line, and reject one longer than this.
 */
export const MAX_LINE_BYTES = 65536;

const encoder = new TextEncoder();

/** `g_ascii_isspace`: SP, `\t`, `\n`, `\f`, `\r`. Not `\v`, as in QEMU since 4.1. */
const ASCII_SPACE = " \t\n\f\r";

function trimStartSpace(text: string): string {
  let start = 0;
  while (start < text.length && ASCII_SPACE.includes(text.charAt(start))) start++;
  return text.slice(start);
}

function trimSpace(text: string): string {
  let end = text.length;
  while (end > 0 && ASCII_SPACE.includes(text.charAt(end - 1))) end--;
  return trimStartSpace(text.slice(0, end));
}

/**
 * Parses the text of one ACL file. Lines are split on `\n` only. Per line, as QEMU does: leading
 * whitespace (SP `\t` `\n` `\f` `\r`, not `\v`) is skipped; an empty line or one starting with
 * `#` is skipped (comments are whole-line only); the command ends at the first SP of the line or,
 * only if there is none, the first `\t`; the argument is the rest, trimmed. The argument of any
 * command but `include` must be shorter than 16 bytes (checked before the command). Commands are
 * `allow NAME`, `allow all`, `deny NAME`, `deny all` and `include PATH`, case-sensitive.
 *
 * Where C is lenient we fail closed: a name that is not a valid interface name (empty, with
 * spaces, e.g. `allow br0 # lab`) is an error rather than a rule that can never match, a NUL byte
 * is an error rather than the end of the line, and a line over {@linkcode MAX_LINE_BYTES} is an
 * error rather than several lines.
 *
 * @param text The whole file, decoded.
 * @param file The file name, used in error messages only.
 * @returns The rules and includes in file order.
 * @throws {AclSyntaxError} At the first line that does not parse.
 *
 * @example Parsing rules
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseAcl } from "./parse.ts";
 *
 * assert.deepEqual(parseAcl("# lab\nallow br0\ndeny all\n", "bridge.conf"), [
 *   { kind: "allow", name: "br0" },
 *   { kind: "deny-all" },
 * ]);
 * assert.throws(() => parseAcl("allow br0\nallowed br1\n", "bridge.conf"), {
 *   name: "AclSyntaxError",
 *   message: "bridge.conf:2: Unknown command `allowed'",
 * });
 * ```
 */
export function parseAcl(text: string, file: string): AclEntry[] {
  const entries: AclEntry[] = [];
  const lines = text.split("\n");
  for (let index = 0; index < lines.length; index++) {
    const entry = parseLine(lines[index] ?? "", file, index + 1);
    if (entry !== undefined) entries.push(entry);
  }
  return entries;
}

function parseLine(raw: string, file: string, line: number): AclEntry | undefined {
  const fail = (detail: string): never => {
    throw new AclSyntaxError(file, line, detail);
  };

  const rawBytes = encoder.encode(raw).length;
  if (rawBytes > MAX_LINE_BYTES) fail(`line too long: ${rawBytes} bytes (limit ${MAX_LINE_BYTES})`);
  // C would end the line at the NUL and silently ignore the rest: "allow br0\0junk" means
  // "allow br0". Text after a NUL is not what anyone meant to write, so refuse the file.
  if (raw.includes("\0")) fail("NUL byte in line");

  const rest = trimStartSpace(raw);
  if (rest === "" || rest.startsWith("#")) return undefined;

  // The separator is the first SP anywhere in the line; only without any SP, the first tab.
  // So "allow\tbr0 " has the command "allow\tbr0", exactly as in C.
  let sep = rest.indexOf(" ");
  if (sep < 0) sep = rest.indexOf("\t");
  if (sep < 0) return fail(`Invalid config line: "${escapeForMessage(raw)}"`);

  const cmd = rest.slice(0, sep);
  const arg = trimSpace(rest.slice(sep + 1));

  // C checks the length before the command, so "foo 0123456789abcdef" is "too long".
  if (cmd !== "include") {
    const argBytes = encoder.encode(arg).length;
    if (argBytes >= IFNAMSIZ) fail(`name \`${escapeForMessage(arg)}' too long: ${argBytes}`);
  }

  switch (cmd) {
    case "allow":
    case "deny":
      if (arg === "all") return { kind: cmd === "allow" ? "allow-all" : "deny-all" };
      return { kind: cmd, name: checkName(arg, fail) };
    case "include":
      if (arg === "") fail("include needs a path");
      return { kind: "include", path: arg, line };
    default:
      return fail(`Unknown command \`${escapeForMessage(cmd)}'`);
  }
}

/**
 * A rule for a name the kernel would refuse can never match a real bridge. C stores it anyway
 * (so `allow br0 # lab` allows a bridge literally named "br0 # lab", which does not exist and
 * silently does not allow br0); better to fail and tell the admin why.
 */
function checkName(name: string, fail: (detail: string) => never): string {
  const reason = ifnameError(name);
  if (reason === undefined) return name;
  if (name.includes(" #") || name.includes("\t#")) {
    return fail(
      `invalid bridge name \`${escapeForMessage(name)}' (comments must be on their own line)`,
    );
  }
  return fail(reason);
}
