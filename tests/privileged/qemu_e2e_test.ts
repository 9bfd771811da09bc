// End to end with an unmodified QEMU and our helper (helper.ts from source with the compile
// flags): the test guest boots with each spelling QEMU has for a helper-made tap, and the host
// and the guest ping each other across br0, in a throwaway namespace with a private /etc/qemu.

import assert from "node:assert/strict";
import { buildGuest } from "../_support/guest.ts";
import { HELPER_FROM_SOURCE, NetNs, rootTest, sandbox } from "../_support/ns.ts";
import { runQemuPing } from "../_support/qemu.ts";

async function boot(netdev: string, extraQemuArgs: string[] = []) {
  const guest = await buildGuest();
  await using ns = await NetNs.create("vmbq");
  await ns.bridge("br0", { addr: "10.0.77.1/24" });
  const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  try {
    const r = await runQemuPing({
      netns: ns.name,
      netdev,
      prefix: sb.argv,
      guest,
      timeoutMs: 120_000,
      ...(extraQemuArgs.length ? { extraQemuArgs } : {}),
    });
    const ctx =
      `\n--- host ping ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}`;
    console.log(
      `  ${netdev}: boot ${(r.bootMs / 1000).toFixed(1)} s, host->guest ${
        r.hostRttsMs.join("/")
      } ms, guest->host ${r.guestRttsMs.join("/")} ms`,
    );
    assert.ok(r.hostPingOk, `the host could not ping the guest${ctx}`);
    assert.equal(r.hostLossPercent, 0, `host ping lost packets${ctx}`);
    assert.ok(r.guestPingOk, `the guest could not ping the host${ctx}`);
    assert.equal(r.stderr.trim(), "", `QEMU or the helper complained${ctx}`);
  } finally {
    await sb.cleanup();
  }
  assert.deepEqual(await ns.taps(), [], "a tap outlived QEMU");
}

rootTest("QEMU -netdev bridge,helper=<ours>: host and guest ping each other", async () => {
  await boot(`bridge,id=n0,br=br0,helper=${HELPER_FROM_SOURCE}`);
});

rootTest(
  "QEMU -netdev tap,helper=<ours> (br0 by default): host and guest ping each other",
  async () => {
    await boot(`tap,id=n0,helper=${HELPER_FROM_SOURCE}`);
  },
);

rootTest("QEMU -nic bridge,helper=<ours>: host and guest ping each other", async () => {
  await boot(`-nic bridge,br=br0,helper=${HELPER_FROM_SOURCE}`);
});

rootTest("QEMU -net bridge,helper=<ours> (hub 0): host and guest ping each other", async () => {
  await boot(`-net bridge,br=br0,helper=${HELPER_FROM_SOURCE}`);
});
