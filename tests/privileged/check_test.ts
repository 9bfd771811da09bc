// `qemu-bridge-helper --check [--br=BR]` run for real as uid 65534 in throwaway namespaces: the
// problems QEMU users hit most, each reported on one line with its fix, exit 0 only when all ok.

import assert from "node:assert/strict";
import { exposeDeno, privilegedDeno, tempDirFor } from "../_support/deno_copy.ts";
import { NetNs, rootTest, run, sandbox, type SandboxOptions } from "../_support/ns.ts";
import { sourceForOthers } from "../_support/readable_source.ts";

// Run as another user, the helper comes from a copy every user can read: the checkout may be
// in a directory that user cannot enter.
const HELPER_FROM_SOURCE = (await sourceForOthers()).helper;

const NOBODY = { uid: 65534, gid: 65534 };

async function check(ns: NetNs, opts: SandboxOptions, ...args: string[]) {
  const sb = await sandbox(ns, { user: NOBODY, ...opts });
  try {
    return await run([...sb.argv, HELPER_FROM_SOURCE, "--check", ...args]);
  } finally {
    await sb.cleanup();
  }
}

rootTest("--check as uid 65534", async (t) => {
  await using copy = await privilegedDeno("filecaps");
  await using denoDir = await tempDirFor(NOBODY.uid, 0o700, "vmb-denodir-");
  const caps = exposeDeno(copy, { DENO_DIR: denoDir.path });

  await t.step(
    "without the capability and without bridge.conf: two FAIL lines, exit 1",
    async () => {
      await using ns = await NetNs.create();
      const r = await check(ns, { tun0666: true });
      assert.equal(r.code, 1);
      assert.equal(r.stderr, "");
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines.length, 3, r.stdout);
      assert.match(
        lines[0]!,
        /^FAIL no CAP_NET_ADMIN: .*; fix: install the helper with `sudo deno task install-suid`/,
      );
      assert.equal(lines[1], "ok   /dev/net/tun can be opened read-write by you");
      assert.match(
        lines[2]!,
        /^FAIL `\/etc\/qemu\/bridge\.conf' does not exist, so every bridge is denied; fix: /,
      );
    },
  );

  await t.step("/dev/net/tun 0600: the fix says how to open it up", async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const r = await check(ns, {
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup:
        "mount -t tmpfs -o mode=0755 vmb-dev-net /dev/net\nmknod -m 0600 /dev/net/tun c 10 200\n" +
        caps,
    });
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^FAIL \/dev\/net\/tun cannot be opened by you: Permission denied; fix: make it mode 0666/m,
    );
    assert.match(r.stdout, /^ok {3}CAP_NET_ADMIN is effective$/m);
  });

  await t.step(
    "allow all with a deny: every bridge but the denied one, and which exist",
    async () => {
      await using ns = await NetNs.create();
      await ns.bridge("br0");
      await ns.bridge("br1");
      await ns.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
      const r = await check(ns, {
        tun0666: true,
        etcQemu: { "bridge.conf": "allow all\ndeny br1\n" },
        setup: caps,
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(
        r.stdout,
        [
          "ok   CAP_NET_ADMIN is effective",
          "ok   /dev/net/tun can be opened read-write by you",
          "ok   `/etc/qemu/bridge.conf' parses: 2 rules",
          "ok   the ACL allows you every bridge except `br1'",
          "ok   bridges you may use: `br0'",
          "",
        ].join("\n"),
      );
    },
  );

  await t.step(
    "an allowed NIC that is not a bridge, and an allowed bridge that is missing",
    async () => {
      await using ns = await NetNs.create();
      await ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1");
      const r = await check(ns, {
        tun0666: true,
        etcQemu: { "bridge.conf": "allow eth0\nallow br7\n" },
        setup: caps,
      });
      assert.equal(r.code, 1);
      const lines = r.stdout.trim().split("\n");
      assert.equal(lines[3], "ok   the ACL allows you `eth0', `br7'");
      assert.match(
        lines[4]!,
        /^FAIL `eth0' is a network interface but not a bridge: a Wi-Fi or Ethernet NIC cannot take taps .*; fix: create a bridge/,
      );
      assert.match(
        lines[5]!,
        /^FAIL `br7' does not exist .*; fix: create it: `sudo ip link add br7 type bridge/,
      );
    },
  );

  await t.step(
    "an alternative name, given as --br or written in the ACL, is a FAIL naming the bridge",
    async () => {
      await using ns = await NetNs.create();
      await ns.bridge("br-prod");
      await ns.ip("link", "property", "add", "dev", "br-prod", "altname", "prod0");
      const opts = { tun0666: true, etcQemu: { "bridge.conf": "allow all\n" }, setup: caps };
      const r = await check(ns, opts, "--br=prod0");
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(
        r.stdout,
        /^FAIL `prod0' is an alternative name of `br-prod': the helper refuses it; fix: use --br=br-prod \(QEMU: br=br-prod\)$/m,
      );
      assert.doesNotMatch(r.stdout, /does not exist/);
      // The ACL naming the alternative name: its rule can never match what the helper accepts.
      const acl = await check(ns, { ...opts, etcQemu: { "bridge.conf": "allow prod0\n" } });
      assert.equal(acl.code, 1, acl.stdout + acl.stderr);
      assert.match(
        acl.stdout,
        /^FAIL `prod0' is an alternative name of `br-prod': the helper refuses it; fix: use `br-prod' in \/etc\/qemu\/bridge\.conf$/m,
      );
    },
  );

  await t.step(
    "an include you cannot read is named: its rules, its deny included, do not apply to you",
    async () => {
      await using ns = await NetNs.create();
      await ns.bridge("br0");
      const r = await check(ns, {
        tun0666: true,
        etcQemu: {
          "bridge.conf": "allow all\ninclude /etc/qemu/admins.conf\ninclude /etc/qemu/gone.conf\n",
          "admins.conf": { text: "deny br0\n", mode: 0o600 },
        },
        setup: caps,
      }, "--br=br0");
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(
        r.stdout,
        [
          "ok   CAP_NET_ADMIN is effective",
          "ok   /dev/net/tun can be opened read-write by you",
          "ok   `/etc/qemu/bridge.conf' parses: 1 rule",
          "ok   you (uid 65534) cannot read include `/etc/qemu/admins.conf': its rules do not " +
          "apply to you, `deny' rules included",
          "ok   include `/etc/qemu/gone.conf' does not exist: its rules apply to no one",
          "ok   the ACL allows you bridge `br0'",
          "ok   `br0' exists and is a bridge",
          "",
        ].join("\n"),
      );
    },
  );

  await t.step("--br=BR: denied by the ACL, with the message QEMU shows", async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const r = await check(ns, {
      tun0666: true,
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup: caps,
    }, "--br=br9");
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^FAIL the ACL denies you bridge `br9' \(QEMU shows `access denied by acl file'\); fix: add `allow br9'/m,
    );
    // Nothing about bridges that were not asked for.
    assert.doesNotMatch(r.stdout, /br0/);
  });
});
