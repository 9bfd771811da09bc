// The service's promise end to end: an unmodified QEMU run as uid 65534 (no supplementary
// group: QEMU under TCG needs none, and a fresh machine may have no kvm group), with our
// helper as a plain 0755 program (no file capability, no set-user-ID, /dev/net/tun left 0600),
// asks the bridge service through the helper; the test guest boots and pings across br0.

import assert from "node:assert/strict";
import { buildGuest } from "../_support/guest.ts";
import { tempDirFor } from "../_support/deno_copy.ts";
import { HELPER_FROM_SOURCE, NetNs, rootTest, sandbox } from "../_support/ns.ts";
import { runQemuPing } from "../_support/qemu.ts";
import { clientSetup, noTapsLeft, startService } from "./_service.ts";

rootTest(
  "QEMU as uid 65534 with a 0755 helper and no capability anywhere: the service gives the tap, guest and host ping",
  async () => {
    const guest = await buildGuest();
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    await using ns = await NetNs.create();
    await ns.bridge("br0", { addr: "10.0.77.1/24" });
    await using svc = await startService(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    const sb = await sandbox(ns, {
      user: { uid: 65534, gid: 65534 },
      // The client's own /etc/qemu is empty: the service's ACL decides.
      setup: clientSetup(svc, denoDir.path),
    });
    try {
      const st = await Deno.stat(HELPER_FROM_SOURCE);
      assert.equal(st.mode! & 0o7777, 0o755, "the helper is a plain 0755 program");
      const r = await runQemuPing({
        netns: ns.name,
        netdev: `bridge,id=n0,br=br0,helper=${HELPER_FROM_SOURCE}`,
        prefix: sb.argv,
        guest,
        timeoutMs: 120_000,
      });
      const ctx =
        `\n--- host ping ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}` +
        `\n--- service ---\n${svc.lines.join("\n")}`;
      assert.ok(r.hostPingOk, `the host could not ping the guest${ctx}`);
      assert.ok(r.guestPingOk, `the guest could not ping the host${ctx}`);
      assert.equal(r.stderr.trim(), "", `QEMU or the helper complained${ctx}`);
      await svc.waitFor(
        /event=request uid=65534 gid=65534 pid=\d+ comm=\S+ op=open bridge=br0 kind=linux tap=tap\d+ decision=allow/,
      );
    } finally {
      await sb.cleanup();
    }
    assert.deepEqual(await noTapsLeft(ns), [], "the tap went with QEMU");
  },
);
