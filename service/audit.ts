// The service's record of who got what: one `key=value` line per request or tap event on
// stderr (the journal under systemd). Formatting is pure; the values may come from clients.

/** One audit record: keys in the order given, values as text or numbers. */
export type AuditFields = ReadonlyArray<readonly [string, string | number | undefined]>;

/** Characters a value may hold without quotes. */
const PLAIN = /^[A-Za-z0-9._:/@+,-]+$/;

/**
 * Quotes a value when it holds anything but plain characters: `"..."` with `\"`, `\\` and
 * `\xHH` for control and non-ASCII bytes, so a client-chosen name (a process's comm, a bridge
 * name) can never forge a second field or a second line.
 *
 * @param value The value.
 * @returns The value as it appears after `=`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { auditValue } from "./audit.ts";
 *
 * assert.equal(auditValue("br0"), "br0");
 * assert.equal(auditValue('x decision=allow\n'), '"x decision=allow\\x0a"');
 * ```
 */
export function auditValue(value: string): string {
  if (PLAIN.test(value)) return value;
  let out = '"';
  for (const byte of new TextEncoder().encode(value)) {
    if (byte === 0x22) out += '\\"';
    else if (byte === 0x5c) out += "\\\\";
    else if (byte >= 0x20 && byte < 0x7f) out += String.fromCharCode(byte);
    else out += `\\x${byte.toString(16).padStart(2, "0")}`;
  }
  return out + '"';
}

/**
 * Formats one audit line (without newline): `time=ISO8601 key=value ...`; undefined values are
 * left out.
 *
 * @param time When it happened.
 * @param fields The keys and values.
 * @returns The line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { auditLine } from "./audit.ts";
 *
 * assert.equal(
 *   auditLine(new Date(0), [["uid", 1000], ["bridge", "br0"], ["tap", undefined]]),
 *   "time=1970-01-01T00:00:00.000Z uid=1000 bridge=br0",
 * );
 * ```
 */
export function auditLine(time: Date, fields: AuditFields): string {
  const parts = [`time=${time.toISOString()}`];
  for (const [key, value] of fields) {
    if (value !== undefined) parts.push(`${key}=${auditValue(String(value))}`);
  }
  return parts.join(" ");
}

const encoder = new TextEncoder();

/** Writes one audit line to stderr. */
export function audit(fields: AuditFields): void {
  Deno.stderr.writeSync(encoder.encode(auditLine(new Date(), fields) + "\n"));
}
