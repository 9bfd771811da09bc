// The bridge service's command line. Pure: argv in, options out, or a one-line RangeError.

/** The service's settings. */
export interface ServiceOptions {
  /** Listen here (`--listen PATH`); undefined: systemd's socket, else the default path. */
  listen: string | undefined;
  /** Live taps one uid may hold (`--max-taps-per-user N`, default 64). */
  maxTapsPerUser: number;
  /** Milliseconds a client has to send its request (`--timeout-ms N`, default 5000). */
  timeoutMs: number;
  /** Connections open at once (`--max-clients N`, default 256); more get STATUS.BUSY. */
  maxClients: number;
  /** Milliseconds between checks for taps made persistent (`--sweep-ms N`, default 1000). */
  sweepMs: number;
  /** The Open vSwitch database socket (`--ovsdb PATH`, default Debian's db.sock). */
  ovsdb: string;
}

/** The usage line. */
export const SERVICE_USAGE =
  "Usage: vm-bridged [--listen PATH] [--max-taps-per-user N] [--timeout-ms N] " +
  "[--max-clients N] [--sweep-ms N] [--ovsdb PATH]";

const NUMERIC: ReadonlyMap<string, [keyof ServiceOptions, number, number]> = new Map([
  ["--max-taps-per-user", ["maxTapsPerUser", 0, 1_000_000]],
  ["--timeout-ms", ["timeoutMs", 1, 3_600_000]],
  ["--max-clients", ["maxClients", 1, 65_536]],
  ["--sweep-ms", ["sweepMs", 10, 3_600_000]],
]);

/**
 * Parses the service's arguments: each option once, `--opt VALUE` or `--opt=VALUE`, numbers as
 * plain decimal digits within range, an absolute socket path.
 *
 * @param argv The arguments after the program name.
 * @returns The options with defaults filled in.
 * @throws {RangeError} for anything else; the message says what and shows the usage.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseServiceArgs } from "./args.ts";
 *
 * assert.equal(parseServiceArgs(["--listen", "/tmp/s"]).listen, "/tmp/s");
 * assert.equal(parseServiceArgs([]).maxTapsPerUser, 64);
 * assert.throws(() => parseServiceArgs(["--timeout-ms=1e3"]), RangeError);
 * ```
 */
export function parseServiceArgs(argv: readonly string[]): ServiceOptions {
  const out: ServiceOptions = {
    listen: undefined,
    maxTapsPerUser: 64,
    timeoutMs: 5000,
    maxClients: 256,
    sweepMs: 1000,
    ovsdb: "/var/run/openvswitch/db.sock",
  };
  const seen = new Set<string>();
  const fail = (why: string) => new RangeError(`${why}\n${SERVICE_USAGE}`);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const key = eq < 0 ? arg : arg.slice(0, eq);
    if (key !== "--listen" && key !== "--ovsdb" && !NUMERIC.has(key)) {
      throw fail(`vm-bridged: unknown argument: ${JSON.stringify(arg)}`);
    }
    if (seen.has(key)) throw fail(`vm-bridged: ${key} given twice`);
    seen.add(key);
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else value = argv[++i];
    if (value === undefined) throw fail(`vm-bridged: ${key} needs a value`);
    if (key === "--listen" || key === "--ovsdb") {
      if (!value.startsWith("/")) {
        throw fail(`vm-bridged: ${key} needs an absolute path: ${JSON.stringify(value)}`);
      }
      if (key === "--listen") out.listen = value;
      else out.ovsdb = value;
      continue;
    }
    const [field, min, max] = NUMERIC.get(key)!;
    const n = /^[0-9]{1,10}$/.test(value) ? Number(value) : NaN;
    if (!(n >= min && n <= max)) {
      throw fail(`vm-bridged: ${key} must be a whole number from ${min} to ${max}: ${value}`);
    }
    (out as unknown as Record<string, number>)[field] = n;
  }
  return out;
}
