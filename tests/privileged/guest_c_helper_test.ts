/**
 * Smoke test of the test guest against QEMU's own C qemu-bridge-helper:
 * boots the busybox guest in a throwaway network namespace with bridge br0,
 * pings it from the namespace and waits for the guest's ping of the bridge.
 *
 * Needs root (netns, bridge, tap, mounts). Skipped when not root, except with
 * CI=true, where not being root is a failure.
 */

import { buildGuest } from "../_support/guest.ts";
import {
  C_BRIDGE_HELPER,
  createTestNetns,
  privateEtcQemuPrefix,
  runQemuPing,
  type RunQemuPingResult,
} from "../_support/qemu.ts";

const isRoot = Deno.uid() === 0;
const inCI = Deno.env.get("CI") === "true";
const SKIP_REASON = "needs root (network namespace, bridge, tap device, private mounts)";
if (!isRoot && !inCI) {
  console.warn(`SKIP tests/privileged/guest_c_helper_test.ts: ${SKIP_REASON}`);
}

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function realEtcQemuExists(): Promise<boolean> {
  try {
    await Deno.lstat("/etc/qemu");
    return true;
  } catch {
    return false;
  }
}

async function pingThroughCHelper(netdev: (bridge: string) => string): Promise<RunQemuPingResult> {
  if (!isRoot) throw new Error(`CI=true but not running as root: this test ${SKIP_REASON}`);
  await Deno.stat(C_BRIDGE_HELPER); // fail loudly if qemu-system-x86 is missing
  const etcQemuBefore = await realEtcQemuExists();
  const guest = await buildGuest();
  const ns = await createTestNetns();
  const scratch = await Deno.makeTempDir({ prefix: "vmbguest-etc-" });
  try {
    const r = await runQemuPing({
      netns: ns.name,
      netdev: netdev(ns.bridge),
      prefix: privateEtcQemuPrefix(ns.name, scratch, `allow ${ns.bridge}\n`),
      guest,
      timeoutMs: 120_000,
    });
    console.log(
      `boot ${r.bootMs} ms; host->guest RTTs ${r.hostRttsMs.join("/")} ms; ` +
        `guest->host RTTs ${r.guestRttsMs.join("/")} ms; stopped by ${r.stoppedBy}`,
    );
    const ctx =
      `\n--- host ping ---\n${r.hostPing}\n--- serial ---\n${r.serial}\n--- stderr ---\n${r.stderr}`;
    assert(r.hostPingOk, `host ping of the guest failed (${r.hostLossPercent}% loss)${ctx}`);
    assert(r.hostRttsMs.length === 3, `expected 3 host ping replies${ctx}`);
    assert(r.guestPingOk, `guest did not print VMB-GUEST-PING-OK${ctx}`);
    assert(r.stoppedBy === "poweroff", `guest did not power off on request${ctx}`);
    return r;
  } finally {
    await ns.remove();
    await Deno.remove(scratch, { recursive: true });
    assert(
      (await realEtcQemuExists()) === etcQemuBefore,
      "the real /etc/qemu was created or removed by the test",
    );
  }
}

Deno.test({
  name: "guest boots and pings over br0 with -netdev bridge,helper=<C helper> [root]",
  ignore: !isRoot && !inCI,
  fn: async () => {
    await pingThroughCHelper((br) => `bridge,id=n0,br=${br},helper=${C_BRIDGE_HELPER}`);
  },
});

Deno.test({
  name: "guest boots and pings over br0 with -netdev tap,helper=<C helper> (default br0) [root]",
  ignore: !isRoot && !inCI,
  fn: async () => {
    await pingThroughCHelper(() => `tap,id=n0,helper=${C_BRIDGE_HELPER}`);
  },
});
