// The service holds CAP_NET_ADMIN and nothing else, on every thread; this checks it at start
// (capabilities are per thread, so it reads each thread's status). The check itself is pure.

import { CAP_NET_ADMIN, threadStatuses } from "../caps/privileges.ts";
import { capget } from "../sys/libc.ts";

const NET_ADMIN = 1n << BigInt(CAP_NET_ADMIN);

/**
 * Checks one `/proc/self/task/TID/status` text: the inheritable, permitted, effective, ambient
 * and bounding sets may hold nothing but CAP_NET_ADMIN. Pure.
 *
 * @param status The status file's text.
 * @returns What is wrong, one line, or undefined.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { capsProblem } from "./caps.ts";
 *
 * const ok = "CapInh:\t0\nCapPrm:\t1000\nCapEff:\t1000\nCapBnd:\t1000\nCapAmb:\t0\n";
 * assert.equal(capsProblem(ok), undefined);
 * assert.match(capsProblem(ok.replace("CapBnd:\t1000", "CapBnd:\t1fff"))!, /CapBnd/);
 * ```
 */
export function capsProblem(status: string): string | undefined {
  for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]) {
    const hex = status.match(new RegExp(`^${set}:[ \\t]*([0-9a-f]{1,16})$`, "m"))?.[1];
    if (hex === undefined) return `has no readable ${set}`;
    if (BigInt(`0x${hex}`) & ~NET_ADMIN) return `holds more than CAP_NET_ADMIN: ${set}=${hex}`;
  }
  return undefined;
}

/** Thrown when the service's privileges are not exactly CAP_NET_ADMIN. */
export class CapsError extends Error {
  /** `message` is one line. */
  constructor(message: string) {
    super(message);
    this.name = "CapsError";
  }
}

/**
 * Requires CAP_NET_ADMIN in the effective set of this (the main) thread and no other capability
 * in any set of any thread.
 *
 * @throws {CapsError} naming the problem and how to start the service right.
 */
export function requireOnlyNetAdmin(): void {
  const how = "start it from vm-bridge.service, or as root with " +
    "setpriv --bounding-set=-all,+net_admin --inh-caps=-all";
  if ((capget().effective & NET_ADMIN) === 0n) {
    throw new CapsError(`vm-bridged: CAP_NET_ADMIN is not in the effective set: ${how}`);
  }
  for (const [tid, status] of threadStatuses()) {
    const problem = capsProblem(status);
    if (problem !== undefined) {
      throw new CapsError(`vm-bridged: refusing to run: thread ${tid} ${problem}; ${how}`);
    }
  }
}
