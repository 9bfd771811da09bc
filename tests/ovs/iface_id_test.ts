// The iface-id policy: who may bind a tap to which OVN logical port.

import assert from "node:assert/strict";
import {
  authorizeIfaceId,
  checkIfaceId,
  loadOvnPolicy,
  type OvnClient,
  parseOvnPolicy,
} from "../../ovs/iface_id.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

const alice: OvnClient = { uid: 1000, user: "alice", groups: ["alice", "lab"] };
const al: OvnClient = { uid: 100, user: "al", groups: ["al"] };
const bob: OvnClient = { uid: 10001, user: "bob", groups: ["bob"] };

const POLICY = `# every user owns "<name>:..." and "u<uid>-..."
allow *      %u:*
allow *      u%U-*
allow @lab   lab-shared-*   # the lab's common ports
allow bob    5f1e8d8a-4a0b-4e43-9d7e-0a4f6b0c9e11
`;
const rules = parseOvnPolicy(POLICY, "bridge-ovn.conf");

test("authorizeIfaceId() lets a user claim the logical ports named after them", () => {
  assert.deepEqual(authorizeIfaceId(rules, alice, "alice:web1"), { allowed: true, line: 2 });
  assert.deepEqual(authorizeIfaceId(rules, alice, "u1000-db"), { allowed: true, line: 3 });
  assert.deepEqual(authorizeIfaceId(rules, alice, "lab-shared-7"), { allowed: true, line: 4 });
  assert.deepEqual(
    authorizeIfaceId(rules, bob, "5f1e8d8a-4a0b-4e43-9d7e-0a4f6b0c9e11"),
    { allowed: true, line: 5 },
  );
});

test("authorizeIfaceId() never lets a user claim another user's port", () => {
  // "al" is a prefix of "alice", 100 a prefix of 1000 and 10001: the separators make it moot.
  for (const id of ["alice:web1", "alice:ice:web1", "u1000-db", "u10001-x", "u100"]) {
    assert.equal(authorizeIfaceId(rules, al, id).allowed, false, id);
  }
  assert.equal(authorizeIfaceId(rules, al, "al:x").allowed, true);
  assert.equal(authorizeIfaceId(rules, bob, "alice:web1").allowed, false);
  assert.equal(authorizeIfaceId(rules, bob, "lab-shared-7").allowed, false);
  assert.equal(
    authorizeIfaceId(rules, alice, "5f1e8d8a-4a0b-4e43-9d7e-0a4f6b0c9e11").allowed,
    false,
  );
  // The prefix alone (an empty rest) is not a port name anyone was given.
  assert.equal(authorizeIfaceId(rules, alice, "alice:").allowed, false);
});

test("authorizeIfaceId() gives users whose names and uids are prefixes disjoint port sets", () => {
  // Names that are prefixes of each other, uids that are prefixes of each other.
  const users: OvnClient[] = ["a", "al", "alice", "alice-b", "alice.b", "a_1"].flatMap((user) =>
    [1, 10, 100, 1000].map((uid) => ({ uid, user, groups: [] }))
  );
  const everyone = parseOvnPolicy("allow * %u:*\nallow * u%U-*\nallow * vm.%u:%U\n", "f");
  const candidates = users.flatMap((c) => [
    `${c.user}:vm`,
    `${c.user}:`,
    `${c.user}:x:y`,
    `u${c.uid}-vm`,
    `u${c.uid}0-vm`,
    `vm.${c.user}:${c.uid}`,
  ]);
  for (const id of candidates) {
    const owners = users.filter((c) => authorizeIfaceId(everyone, c, id).allowed);
    const distinct = new Set(owners.map((c) => `${c.user}/${c.uid}`));
    // Every owner of one id shares one user name (a %u rule) or one uid (a %U rule).
    const names = new Set(owners.map((c) => c.user));
    const uids = new Set(owners.map((c) => c.uid));
    assert.ok(names.size <= 1 || uids.size <= 1, `${id}: ${[...distinct].join(", ")}`);
  }
});

test("authorizeIfaceId() gives %u rules nothing to a uid with no user name", () => {
  const nameless: OvnClient = { uid: 4242, user: undefined, groups: [] };
  assert.equal(authorizeIfaceId(rules, nameless, "undefined:x").allowed, false);
  assert.equal(authorizeIfaceId(rules, nameless, "u4242-x").allowed, true);
});

test("authorizeIfaceId() denies by default and says why", () => {
  assert.deepEqual(authorizeIfaceId([], alice, "alice:web1"), {
    allowed: false,
    reason: "iface-id 'alice:web1' refused: /etc/qemu/bridge-ovn.conf allows no iface-id",
  });
  assert.deepEqual(authorizeIfaceId(rules, bob, "alice:web1"), {
    allowed: false,
    reason: "iface-id 'alice:web1' refused: no rule in /etc/qemu/bridge-ovn.conf allows it for bob",
  });
});

test("authorizeIfaceId() rejects a malformed iface-id before any rule", () => {
  for (const id of ["", "a b", "x".repeat(129), "a\nb", "a*", "a%u", "é"]) {
    assert.throws(() => authorizeIfaceId(rules, alice, id), TypeError, JSON.stringify(id));
  }
  checkIfaceId("x".repeat(128));
});

test("parseOvnPolicy() refuses patterns that would let expansions overlap", () => {
  const bad: [string, RegExp][] = [
    ["allow * %u*", /2: '%u' must be followed by ':'/],
    ["allow * vm-%u-*", /'%u' must be followed by ':'/],
    ["allow * %U*", /'%U' must not be followed by '\*'/],
    ["allow * %U0*", /'%U' must not be followed by a digit/],
    ["allow * a*b", /'\*' may only end a pattern/],
    ["allow * %x:*", /unknown placeholder '%x'/],
    ["allow * a b c", /expected 'allow WHO PATTERN'/],
    ["permit * a", /unknown command 'permit'/],
    ["allow @ a", /invalid user or group '@'/],
    ["allow a:b x", /invalid user or group 'a:b'/],
    ["allow * sp ace", /expected 'allow WHO PATTERN'/],
    ["allow * ü", /invalid character in pattern: 'ü'/],
  ];
  for (const [line, re] of bad) {
    assert.throws(() => parseOvnPolicy(`# x\n${line}\n`, "f.conf"), SyntaxError, line);
    assert.throws(() => parseOvnPolicy(`# x\n${line}\n`, "f.conf"), re, line);
  }
  assert.throws(() => parseOvnPolicy("allow * a b", "/etc/qemu/bridge-ovn.conf"), {
    message: "/etc/qemu/bridge-ovn.conf:1: expected 'allow WHO PATTERN'",
  });
});

test("parseOvnPolicy() reads who and pattern, skipping comments and blank lines", () => {
  assert.deepEqual(rules, [
    { who: { kind: "everyone" }, pattern: "%u:*", line: 2 },
    { who: { kind: "everyone" }, pattern: "u%U-*", line: 3 },
    { who: { kind: "group", name: "lab" }, pattern: "lab-shared-*", line: 4 },
    {
      who: { kind: "user", name: "bob" },
      pattern: "5f1e8d8a-4a0b-4e43-9d7e-0a4f6b0c9e11",
      line: 5,
    },
  ]);
  assert.deepEqual(parseOvnPolicy("allow * %U", "f"), [
    { who: { kind: "everyone" }, pattern: "%U", line: 1 },
  ]);
});

Deno.test("loadOvnPolicy() treats a missing file as 'no iface-id for anyone'", async () => {
  assert.deepEqual(loadOvnPolicy("/nonexistent/bridge-ovn.conf"), []);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/p.conf`, "allow * %u:*\n");
    assert.equal(loadOvnPolicy(`${dir}/p.conf`).length, 1);
    await Deno.writeTextFile(`${dir}/p.conf`, "allow everyone\n");
    assert.throws(() => loadOvnPolicy(`${dir}/p.conf`), SyntaxError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
