// The installed setup end to end, as an unprivileged user: an unmodified QEMU runs as uid 65534
// (group kvm) and starts our helper (helper.ts with the compile flags, on a copy of the Deno
// runtime with cap_net_admin+ep); the test guest and the host ping each other over br0.

import assert from "node:assert/strict";
import { buildGuest } from "../_support/guest.ts";
import { exposeDeno, privilegedDeno, tempDirFor } from "../_support/deno_copy.ts";
import { NetNs, rootTest, sandbox } from "../_support/ns.ts";
import { runQemuPing } from "../_support/qemu.ts";
import { sourceForOthers } from "../_support/readable_source.ts";
import { testGroupFile } from "../_support/groups.ts";

// Run as another user, the helper comes from a copy every user can read: the checkout may be
// in a directory that user cannot enter.
const HELPER_FROM_SOURCE = (await sourceForOthers()).helper;

rootTest(
  "QEMU as uid 65534 with the file-capability helper: guest and host ping each other",
  async () => {
    // QEMU runs as uid 65534: the guest's files from where that user can read them.
    const built = await buildGuest();
    const src = await sourceForOthers();
    const guest = { kernel: await src.share(built.kernel), initrd: await src.share(built.initrd) };
    // QEMU's users are in group kvm: one of the test's own (a fresh machine has none).
    const kvm = await testGroupFile("kvm");
    await using copy = await privilegedDeno("filecaps");
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    await using ns = await NetNs.create();
    await ns.bridge("br0", { addr: "10.0.77.1/24" });
    const sb = await sandbox(ns, {
      tun0666: true,
      user: { uid: 65534, gid: 65534, groups: [kvm.gid] },
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup: `${kvm.mountLine}\n${exposeDeno(copy, { DENO_DIR: denoDir.path })}`,
    });
    try {
      const r = await runQemuPing({
        netns: ns.name,
        netdev: `bridge,id=n0,br=br0,helper=${HELPER_FROM_SOURCE}`,
        prefix: sb.argv,
        guest,
        timeoutMs: 120_000,
      });
      const ctx =
        `\n--- host ping ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}`;
      assert.ok(r.hostPingOk, `the host could not ping the guest${ctx}`);
      assert.ok(r.guestPingOk, `the guest could not ping the host${ctx}`);
      assert.equal(r.stderr.trim(), "", `QEMU or the helper complained${ctx}`);
    } finally {
      await sb.cleanup();
    }
  },
);
