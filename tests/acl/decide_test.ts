// Tests for acl/decide.ts: allowed && !denied, deny wins in any order, `deny all` is absolute,
// default deny, byte-exact names (behaviour doc §4.3, §10 item 1).

import assert from "node:assert/strict";
import { aclAllows } from "../../acl/decide.ts";
import { type AclRule, parseAcl } from "../../acl/parse.ts";

const allow = (name: string): AclRule => ({ kind: "allow", name });
const deny = (name: string): AclRule => ({ kind: "deny", name });
const ALLOW_ALL: AclRule = { kind: "allow-all" };
const DENY_ALL: AclRule = { kind: "deny-all" };

const CASES: ReadonlyArray<readonly [string, readonly AclRule[], string, boolean]> = [
  ["no rules deny by default", [], "br0", false],
  ["no rules deny the empty name", [], "", false],
  ["allow NAME allows that bridge", [allow("br0")], "br0", true],
  ["allow NAME does not allow another bridge", [allow("br0")], "br1", false],
  ["allow NAME is case-sensitive", [allow("br0")], "BR0", false],
  ["allow NAME does not match a prefix", [allow("br0")], "br", false],
  ["allow NAME does not match a longer name", [allow("br0")], "br00", false],
  ["allow NAME does not match the empty name", [allow("br0")], "", false],
  ["allow NAME does not glob", [allow("br*")], "br0", false],
  ["allow NAME is byte-exact (NFC vs NFD)", [allow("br\u00fc")], "bru\u0308", false],
  ["allow NAME matches the same UTF-8 name", [allow("br\u00fc")], "br\u00fc", true],
  ["allow all allows any bridge", [ALLOW_ALL], "virbr7", true],
  ["allow ALL (a name) is not allow all", [allow("ALL")], "br0", false],
  ["allow ALL allows the bridge named ALL", [allow("ALL")], "ALL", true],
  ["deny NAME alone does not allow", [deny("br1")], "br0", false],
  ["deny all alone denies", [DENY_ALL], "br0", false],
  ["deny NAME after allow NAME wins", [allow("br0"), deny("br0")], "br0", false],
  ["deny NAME before allow NAME wins", [deny("br0"), allow("br0")], "br0", false],
  ["deny NAME after allow all wins for that bridge", [ALLOW_ALL, deny("br0")], "br0", false],
  ["deny NAME before allow all wins for that bridge", [deny("br0"), ALLOW_ALL], "br0", false],
  ["deny NAME does not affect another bridge", [ALLOW_ALL, deny("br0")], "br1", true],
  ["deny NAME of another bridge keeps an allow", [deny("br1"), allow("br0")], "br0", true],
  ["deny all after allow NAME wins", [allow("br0"), DENY_ALL], "br0", false],
  ["deny all before allow NAME wins", [DENY_ALL, allow("br0")], "br0", false],
  ["deny all wins over allow all", [ALLOW_ALL, DENY_ALL], "br0", false],
  [
    "deny all in the middle of many allows wins",
    [allow("br0"), ALLOW_ALL, DENY_ALL, allow("br0"), ALLOW_ALL],
    "br0",
    false,
  ],
  ["a repeated allow still allows", [allow("br0"), allow("br0")], "br0", true],
  ["a case-different deny does not deny", [allow("br0"), deny("BR0")], "br0", true],
];

for (const [what, rules, bridge, expected] of CASES) {
  Deno.test({
    name: `aclAllows(): ${what}`,
    permissions: "none",
    fn() {
      assert.equal(aclAllows(rules, bridge), expected);
    },
  });
}

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  const result: T[][] = [];
  items.forEach((item, index) => {
    const rest = [...items.slice(0, index), ...items.slice(index + 1)];
    for (const tail of permutations(rest)) result.push([item, ...tail]);
  });
  return result;
}

Deno.test({
  name: "aclAllows() gives the same answer for every order of the rules",
  permissions: "none",
  fn() {
    const sets: ReadonlyArray<readonly AclRule[]> = [
      [allow("br0"), deny("br0"), allow("br1"), ALLOW_ALL],
      [allow("br0"), deny("br1"), DENY_ALL, allow("br2")],
      [ALLOW_ALL, deny("br1"), allow("br1"), deny("br2")],
    ];
    for (const rules of sets) {
      for (const bridge of ["br0", "br1", "br2", "br3"]) {
        const expected = aclAllows(rules, bridge);
        for (const order of permutations(rules)) {
          assert.equal(aclAllows(order, bridge), expected, JSON.stringify({ order, bridge }));
        }
      }
    }
  },
});

Deno.test({
  name: "aclAllows() decides on rules parsed by parseAcl()",
  permissions: "none",
  fn() {
    const text = "# lab\nallow all\r\ndeny br-prod\n\tallow br0\n";
    const rules = parseAcl(text, "bridge.conf").filter((entry): entry is AclRule =>
      entry.kind !== "include"
    );
    assert.equal(aclAllows(rules, "br0"), true);
    assert.equal(aclAllows(rules, "br7"), true);
    assert.equal(aclAllows(rules, "br-prod"), false);
  },
});

Deno.test({
  name: "aclAllows() does not modify the rules",
  permissions: "none",
  fn() {
    const rules = Object.freeze([Object.freeze(allow("br0")), Object.freeze(DENY_ALL)]);
    assert.equal(aclAllows(rules, "br0"), false);
    assert.deepEqual(rules, [allow("br0"), DENY_ALL]);
  },
});
