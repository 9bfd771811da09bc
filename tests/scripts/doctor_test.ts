// Tests for the pure judgements of scripts/doctor.ts (the installation checks), and the doctor
// run for real as uid 65534 on an ACL with includes. It is run against an installed helper in
// tests/scripts/install_test.ts.

import assert from "node:assert/strict";
import { formatCheck } from "../../cli/check.ts";
import {
  capabilityResults,
  executableResult,
  type InstalledFile,
  installedFileResults,
} from "../../scripts/doctor.ts";
import { tempDirFor } from "../_support/deno_copy.ts";
import { NetNs, ROOT, rootTest, run, sandbox } from "../_support/ns.ts";

const P = "/usr/local/libexec/qemu-bridge-helper";
const GOOD: InstalledFile = { uid: 0, gid: 107, mode: 0o100750, isFile: true };
const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });
const lines = (results: { ok: boolean; what: string; fix?: string }[]) => results.map(formatCheck);

test("installedFileResults() accepts root:group 0750", () => {
  assert.deepEqual(lines(installedFileResults(P, GOOD)), [
    `ok   ${P} is installed`,
    `ok   ${P} is root-owned, mode 0750, not set-user-ID`,
  ]);
});

test("installedFileResults() flags a missing helper, set-user-ID, foreign owners and o+x", () => {
  assert.deepEqual(lines(installedFileResults(P, null)), [
    `FAIL ${P} is not installed; fix: sudo deno task install-suid`,
  ]);
  const suid = lines(installedFileResults(P, { ...GOOD, mode: 0o104755 }))[1]!;
  assert.match(
    suid,
    /^FAIL .* is set-user-ID or set-group-ID \(mode 4755\).*SECURITY\.md.*; fix: sudo chmod 0750 /,
  );
  assert.match(
    lines(installedFileResults(P, { ...GOOD, mode: 0o102750 }))[1]!,
    /set-group-ID \(mode 2750\)/,
  );
  assert.match(
    lines(installedFileResults(P, { ...GOOD, uid: 1000 }))[1]!,
    /owned by uid 1000 .*can replace it/,
  );
  assert.match(lines(installedFileResults(P, { ...GOOD, mode: 0o100770 }))[1]!, /can replace it/);
  assert.match(
    lines(installedFileResults(P, { ...GOOD, mode: 0o100755 }))[1]!,
    /^FAIL .* mode 0755: every local user may run it .*; fix: sudo chmod 0750/,
  );
  assert.match(
    lines(installedFileResults(P, { ...GOOD, isFile: false }))[0]!,
    /not a regular file/,
  );
});

test("executableResult() wants root, or membership of the helper's group", () => {
  assert.equal(executableResult(P, GOOD, { uid: 0, gids: [0] }, "kvm").ok, true);
  assert.equal(executableResult(P, GOOD, { uid: 1000, gids: [1000, 107] }, "kvm").ok, true);
  assert.equal(
    formatCheck(executableResult(P, GOOD, { uid: 1000, gids: [1000] }, "kvm")),
    `FAIL you (uid 1000) may not run ${P}: it runs for group kvm only; ` +
      `fix: sudo usermod -aG kvm "$USER" and log in again`,
  );
});

test("capabilityResults() wants exactly cap_net_admin=ep and no nosuid mount", () => {
  assert.deepEqual(
    lines(capabilityResults(P, { code: 0, output: `${P} cap_net_admin=ep\n` }, ["rw"])),
    [
      `ok   ${P} has exactly the file capability cap_net_admin=ep`,
    ],
  );
  assert.match(
    lines(capabilityResults(P, { code: 0, output: "" }, ["rw"]))[0]!,
    /^FAIL .* does not have exactly cap_net_admin=ep .*; fix: sudo setcap cap_net_admin\+ep /,
  );
  const nosuid = lines(
    capabilityResults(P, { code: 0, output: `${P} cap_net_admin=ep\n` }, ["nosuid"]),
  );
  assert.match(nosuid[1]!, /^FAIL .* mounted nosuid: its file capability is ignored/);
});

rootTest(
  "the doctor names each include you cannot read: its rules do not apply to you",
  async () => {
    const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
      tasks: Record<string, string>;
    };
    const words = config.tasks.doctor?.split(" ") ?? [];
    assert.equal(words[0], "deno");
    const doctor = [
      Deno.execPath(),
      ...words.slice(1).map((w) => (w.startsWith("scripts/") ? `${ROOT}/${w}` : w)),
    ];
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const sb = await sandbox(ns, {
      user: { uid: 65534, gid: 65534 },
      etcQemu: {
        "bridge.conf": "allow all\ninclude /etc/qemu/admins.conf\ninclude gone.conf\n",
        "admins.conf": { text: "deny br0\n", mode: 0o600 },
      },
    });
    try {
      const env = ["env", `DENO_DIR=${denoDir.path}`, `HOME=${denoDir.path}`, "NO_COLOR=1"];
      const r = await run([...sb.argv, ...env, ...doctor, "--br=br0"]);
      assert.match(
        r.stdout,
        /^ok {3}you \(uid 65534\) cannot read include `\/etc\/qemu\/admins\.conf': its rules do not apply to you, `deny' rules included$/m,
        r.stdout + r.stderr,
      );
      assert.match(
        r.stdout,
        /^ok {3}include `\/etc\/qemu\/gone\.conf' does not exist: its rules apply to no one$/m,
      );
      assert.match(r.stdout, /^ok {3}the ACL allows you bridge `br0'$/m);
    } finally {
      await sb.cleanup();
    }
  },
);
