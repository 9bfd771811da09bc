// The bridge service's decision for one client: the helper's ACL and rules, with every file
// judged by what the client (not the service) could open, so per-group include files work.

import { ACL_FILE, AclError, loadAcl } from "../acl/load.ts";
import { aclAllows } from "../acl/decide.ts";
import type { AclRule } from "../acl/parse.ts";
import type { FileStat } from "../sys/libc.ts";
import { STATUS } from "./protocol.ts";

/** Who a client is, as the kernel reported it (SO_PEERCRED, SO_PEERGROUPS). */
export interface Identity {
  /** Effective uid. */
  uid: number;
  /** Effective gid. */
  gid: number;
  /** Supplementary groups. */
  groups: readonly number[];
}

/**
 * Whether `who` may read (`want` 4) or search (`want` 1) a file with this owner and mode, by
 * the classic Unix rule: owner bits if the owner, else group bits if in the group, else other
 * bits; uid 0 may do anything (the helper run by root holds CAP_DAC_OVERRIDE). POSIX ACLs are
 * not consulted: the ACL files must be root-owned and not group/other-writable anyway, and an
 * ACL entry granting more would make the service stricter than the helper, never looser.
 *
 * @param st The file's owner, group and mode.
 * @param who The client.
 * @param want 4 to read, 1 to search a directory.
 * @returns True when allowed.
 *
 * @example A root:lab 0640 include
 * ```ts
 * import assert from "node:assert/strict";
 * import { mayAccess } from "./policy.ts";
 *
 * const st = { uid: 0, gid: 50, mode: 0o100640 };
 * assert.equal(mayAccess(st, { uid: 1000, gid: 1000, groups: [50] }, 4), true);
 * assert.equal(mayAccess(st, { uid: 1001, gid: 1001, groups: [] }, 4), false);
 * ```
 */
export function mayAccess(
  st: Pick<FileStat, "uid" | "gid" | "mode">,
  who: Identity,
  want: 4 | 1,
): boolean {
  if (who.uid === 0) return true;
  let bits: number;
  if (st.uid === who.uid) bits = (st.mode >> 6) & 7;
  else if (st.gid === who.gid || who.groups.includes(st.gid)) bits = (st.mode >> 3) & 7;
  else bits = st.mode & 7;
  return (bits & want) !== 0;
}

/** The outcome of the ACL for one client and bridge. */
export type Decision =
  | { ok: true }
  | { ok: false; status: typeof STATUS.DENIED | typeof STATUS.ACL; message: string };

/**
 * Loads the ACL as `who` would see it. Throws AclError as loadAcl() does.
 *
 * @param who The client.
 * @returns The rules of every file `who` could read.
 */
export function rulesFor(who: Identity): AclRule[] {
  return loadAcl(ACL_FILE, { onSkip: () => {}, access: (st, want) => mayAccess(st, who, want) });
}

/**
 * Decides for `who` and `bridge` exactly what our helper run by `who` decides, with the same
 * message: a broken ACL denies (`failed to parse default acl file ...`), then the rules.
 *
 * @param who The client, from the kernel.
 * @param bridge A valid interface name.
 * @returns Allowed, or the status and the helper's one-line message.
 */
export function decide(who: Identity, bridge: string): Decision {
  let rules: AclRule[];
  try {
    rules = rulesFor(who);
  } catch (e) {
    if (!(e instanceof AclError)) throw e;
    return { ok: false, status: STATUS.ACL, message: aclFailure(e) };
  }
  if (!aclAllows(rules, bridge)) {
    return { ok: false, status: STATUS.DENIED, message: "access denied by acl file" };
  }
  return { ok: true };
}

/** The helper's message for an ACL it cannot use. */
export function aclFailure(e: AclError): string {
  return `failed to parse default acl file \`${ACL_FILE}': ${e.message}`;
}
