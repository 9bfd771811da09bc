// The ACL decision: given the rules of bridge.conf and its includes, may this bridge be used?
// Same semantics as QEMU's helper: allowed by some rule and denied by none, deny by default.

import type { AclRule } from "./parse.ts";

/**
 * Decides whether `bridge` may be used. As in QEMU, the order of the rules does not matter:
 * access is granted when some rule allows the bridge (`allow NAME` or `allow all`) and no rule
 * denies it (`deny NAME` or `deny all`). Deny always wins, `deny all` is absolute, and no rules
 * means no access. Names are compared whole, case-sensitively and without globbing.
 *
 * @param rules Every rule of the main file and its includes, in any order.
 * @param bridge The bridge name asked for.
 * @returns `true` only when access is granted.
 *
 * @example Deny wins regardless of order
 * ```ts
 * import assert from "node:assert/strict";
 * import { aclAllows } from "./decide.ts";
 *
 * assert.equal(aclAllows([{ kind: "allow-all" }], "br0"), true);
 * assert.equal(aclAllows([{ kind: "deny", name: "br0" }, { kind: "allow-all" }], "br0"), false);
 * assert.equal(aclAllows([], "br0"), false);
 * ```
 */
export function aclAllows(rules: readonly AclRule[], bridge: string): boolean {
  let allowed = false;
  let denied = false;
  for (const rule of rules) {
    // `===` on JS strings equals a byte compare of their UTF-8 forms for well-formed strings;
    // with lone surrogates it is stricter (two that encode alike still differ), failing closed.
    switch (rule.kind) {
      case "allow-all":
        allowed = true;
        break;
      case "allow":
        if (rule.name === bridge) allowed = true;
        break;
      case "deny-all":
        denied = true;
        break;
      case "deny":
        if (rule.name === bridge) denied = true;
        break;
    }
  }
  return allowed && !denied;
}
