// Tests for cli/check.ts: the pure half of `qemu-bridge-helper --check` and `deno task doctor`:
// which bridges an ACL allows, and the one-line report for each finding.

import assert from "node:assert/strict";
import { AclError } from "../../acl/load.ts";
import {
  aclResult,
  allowedBridges,
  altnameResult,
  bridgeResult,
  decisionResult,
  existingBridgesResult,
  formatCheck,
  privilegeResult,
  skippedIncludeResult,
  tunResult,
} from "../../cli/check.ts";
import { OsError } from "../../sys/libc.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });
/** OsError builds its text with strerror() through libc, so those tests need --allow-ffi. */
const ffiTest = (name: string, fn: () => void) =>
  Deno.test({ name, permissions: { ffi: true }, fn });

test("formatCheck() prints `ok   WHAT` or `FAIL WHAT; fix: FIX` on one line", () => {
  assert.equal(formatCheck({ ok: true, what: "fine" }), "ok   fine");
  assert.equal(formatCheck({ ok: false, what: "broken" }), "FAIL broken");
  assert.equal(
    formatCheck({ ok: false, what: "broken", fix: "mend it" }),
    "FAIL broken; fix: mend it",
  );
  // A name from a file cannot break the line or drive the terminal.
  assert.equal(
    formatCheck({ ok: false, what: "`br\n0\x1b[2J'", fix: "x" }),
    "FAIL `br\\n0\\x1b[2J'; fix: x",
  );
});

test("allowedBridges() is allow rules minus deny rules", () => {
  assert.deepEqual(allowedBridges([]), { all: false, names: [] });
  assert.deepEqual(
    allowedBridges([
      { kind: "allow", name: "br0" },
      { kind: "allow", name: "br1" },
      { kind: "allow", name: "br0" },
      { kind: "deny", name: "br1" },
    ]),
    { all: false, names: ["br0"] },
  );
  assert.deepEqual(
    allowedBridges([{ kind: "deny", name: "br9" }, { kind: "allow-all" }]),
    { all: true, names: ["br9"] },
  );
  assert.deepEqual(
    allowedBridges([{ kind: "allow-all" }, { kind: "allow", name: "br0" }, { kind: "deny-all" }]),
    { all: false, names: [] },
  );
});

test("privilegeResult() wants CAP_NET_ADMIN in the effective set", () => {
  assert.deepEqual(privilegeResult(1n << 12n, 1000), {
    ok: true,
    what: "CAP_NET_ADMIN is effective",
  });
  assert.equal(
    privilegeResult(0x1ffffffffffn, 0).what,
    "CAP_NET_ADMIN is effective (running as root)",
  );
  const no = privilegeResult(1n << 13n, 1000);
  assert.equal(no.ok, false);
  assert.match(
    formatCheck(no),
    /^FAIL no CAP_NET_ADMIN: .*; fix: install the helper with `sudo deno task install-suid`/,
  );
});

test("tunResult() says how to fix each way /dev/net/tun can fail", () => {
  assert.equal(formatCheck(tunResult(0)), "ok   /dev/net/tun can be opened read-write by you");
  assert.match(
    formatCheck(tunResult(13, "Permission denied")),
    /^FAIL \/dev\/net\/tun cannot be opened by you: Permission denied; fix: make it mode 0666/,
  );
  assert.match(
    formatCheck(tunResult(2, "No such file or directory")),
    /^FAIL \/dev\/net\/tun is missing: .*; fix: load the tun driver: `sudo modprobe tun`$/,
  );
});

test("aclResult() counts rules", () => {
  assert.equal(
    formatCheck(aclResult({ rules: [{ kind: "allow", name: "br0" }] }, 1000)),
    "ok   `/etc/qemu/bridge.conf' parses: 1 rule",
  );
  assert.equal(
    formatCheck(aclResult({ rules: [] }, 1000)),
    "ok   `/etc/qemu/bridge.conf' parses: 0 rules",
  );
});

test("skippedIncludeResult() names an include you cannot read: its rules do not apply to you", () => {
  assert.equal(
    formatCheck(skippedIncludeResult({ path: "/etc/qemu/alice.conf", errno: 13 }, 1000)),
    "ok   you (uid 1000) cannot read include `/etc/qemu/alice.conf': its rules do not apply " +
      "to you, `deny' rules included",
  );
});

test("skippedIncludeResult() names a missing include: its rules apply to no one", () => {
  for (const errno of [2, 20]) {
    assert.equal(
      formatCheck(skippedIncludeResult({ path: "/etc/qemu/gone.conf", errno }, 1000)),
      "ok   include `/etc/qemu/gone.conf' does not exist: its rules apply to no one",
    );
  }
});

ffiTest("aclResult() tells a missing ACL from an unreadable and a broken one", () => {
  const file = "/etc/qemu/bridge.conf";
  const failed = (errno: number) =>
    new AclError(file, "cannot open", { cause: new OsError(`open(${file})`, errno) });
  assert.equal(
    formatCheck(aclResult({ error: failed(2) }, 1000)),
    "FAIL `/etc/qemu/bridge.conf' does not exist, so every bridge is denied; fix: create it, " +
      "root-owned 0644, with one line per bridge: `echo 'allow br0' | sudo tee /etc/qemu/bridge.conf'",
  );
  assert.match(
    formatCheck(aclResult({ error: failed(13) }, 1000)),
    /^FAIL `\/etc\/qemu\/bridge\.conf' cannot be read by you \(uid 1000\): .*; fix: `sudo chmod 0644/,
  );
  assert.match(
    formatCheck(
      aclResult({ error: new AclError(file, "bridge.conf:2: Unknown command `alow'") }, 0),
    ),
    /^FAIL `\/etc\/qemu\/bridge\.conf' is refused: bridge\.conf:2: Unknown command `alow'; fix: correct it/,
  );
});

test("decisionResult() answers for one bridge, or lists what the ACL allows", () => {
  const rules = [{ kind: "allow", name: "br0" }, { kind: "deny", name: "br1" }] as const;
  assert.equal(formatCheck(decisionResult(rules, "br0")), "ok   the ACL allows you bridge `br0'");
  assert.equal(
    formatCheck(decisionResult(rules, "br1")),
    "FAIL the ACL denies you bridge `br1' (QEMU shows `access denied by acl file'); fix: add " +
      "`allow br1' to /etc/qemu/bridge.conf (and remove any `deny` of it and any `deny all`)",
  );
  assert.equal(formatCheck(decisionResult(rules, "")), "ok   the ACL allows you `br0'");
  assert.equal(
    formatCheck(decisionResult([{ kind: "allow-all" }, { kind: "deny", name: "br1" }], "")),
    "ok   the ACL allows you every bridge except `br1'",
  );
  assert.match(
    formatCheck(decisionResult([], "")),
    /^FAIL the ACL allows you no bridge at all; fix: add `allow br0'/,
  );
});

test("bridgeResult() tells a missing bridge from a NIC that is not a bridge", () => {
  assert.equal(formatCheck(bridgeResult("br0", "bridge")), "ok   `br0' exists and is a bridge");
  assert.match(
    formatCheck(bridgeResult("br0", "missing")),
    /^FAIL `br0' does not exist .*; fix: create it: `sudo ip link add br0 type bridge && sudo ip link set br0 up'/,
  );
  assert.match(
    formatCheck(bridgeResult("wlan0", "not-bridge")),
    /^FAIL `wlan0' is a network interface but not a bridge: a Wi-Fi or Ethernet NIC cannot take taps .*; fix: create a bridge/,
  );
  assert.match(
    formatCheck(bridgeResult("a/b", "invalid")),
    /^FAIL `a\/b' is not a valid interface name/,
  );
});

test("existingBridgesResult() needs at least one bridge when every bridge is allowed", () => {
  assert.equal(
    formatCheck(existingBridgesResult(["br0", "virbr0"])),
    "ok   bridges you may use: `br0', `virbr0'",
  );
  assert.match(
    formatCheck(existingBridgesResult([])),
    /^FAIL the ACL allows you every bridge, but there is none/,
  );
});

test("altnameResult() names the bridge's own name, for --br and for the ACL", () => {
  assert.deepEqual(altnameResult("prod0", "br-prod", "argument"), {
    ok: false,
    what: "`prod0' is an alternative name of `br-prod': the helper refuses it",
    fix: "use --br=br-prod (QEMU: br=br-prod)",
  });
  assert.equal(
    altnameResult("prod0", "br-prod", "acl").fix,
    "use `br-prod' in /etc/qemu/bridge.conf",
  );
});
