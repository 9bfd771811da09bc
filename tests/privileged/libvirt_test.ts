// libvirt, a real client of the helper: libvirtd in session mode (qemu:///session) as uid 65534
// runs the helper itself for `<interface type='bridge'>` (`--use-vnet --br=BR --fd=N`),
// receives the tap, reads its name (TUNGETIFF), waits for the helper's exit status and passes
// the fd to QEMU. Once with the installed form (the helper on a Deno runtime with
// cap_net_admin+ep), once with the helper as a plain 0755 program asking the bridge service,
// and once for a bridge the ACL denies: libvirt must show our one-line reason and nothing may
// be left. Needs root, and Debian's libvirt-daemon, libvirt-daemon-driver-qemu and
// libvirt-clients (scripts/packages.txt).

import assert from "node:assert/strict";
import { exposeDeno, privilegedDeno, tempDirFor } from "../_support/deno_copy.ts";
import { buildGuest, type GuestImage } from "../_support/guest.ts";
import { runLibvirtSession } from "../_support/libvirt.ts";
import { HELPER_FROM_SOURCE, NetNs, rootTest, run, sandbox } from "../_support/ns.ts";
import { sourceForOthers } from "../_support/readable_source.ts";
import { clientSetup, noTapsLeft, startService } from "./_service.ts";

/** The guest's files where uid 65534 can read them. */
async function sharedGuest(): Promise<GuestImage> {
  const built = await buildGuest();
  const src = await sourceForOthers();
  return { kernel: await src.share(built.kernel), initrd: await src.share(built.initrd) };
}

/** The host's ping of the guest, and the taps that were in br0 while it ran. */
async function pingGuest(ns: NetNs): Promise<{ ok: boolean; output: string; ports: string[] }> {
  const r = await ns.sh("ping -c 3 -i 0.2 -W 3 10.0.77.2");
  const taps = await ns.taps();
  const master = await run(ns.exec(["ip", "-o", "link", "show", "master", "br0"]));
  return {
    ok: r.code === 0 && / 0% packet loss/.test(r.stdout),
    output: r.stdout + r.stderr,
    ports: taps.filter((t) =>
      master.stdout.includes(`: ${t}:`) || master.stdout.includes(`: ${t}@`)
    ),
  };
}

/**
 * Boots the guest through libvirt on br0 (the sandbox `sb` is the user's), pings both ways and
 * asserts it all: one tap in br0 while it ran, nothing of the user's left running, no tap left.
 * `more` adds to a failure's context.
 */
async function bootOnBr0(
  ns: NetNs,
  sb: { argv: string[]; cleanup: () => Promise<void> },
  home: string,
  helper: string,
  more: () => string = () => "",
): Promise<void> {
  const guest = await sharedGuest();
  let ping: Awaited<ReturnType<typeof pingGuest>> | undefined;
  try {
    const r = await runLibvirtSession({
      ns,
      prefix: sb.argv,
      home,
      helper,
      bridge: "br0",
      guest,
      whileRunning: async () => {
        ping = await pingGuest(ns);
      },
    });
    const ctx = `\n--- virsh create ---\n${r.createOutput}\n--- serial ---\n${r.serial}${more()}` +
      `\n--- libvirtd ---\n${r.libvirtdLog.slice(-4000)}`;
    assert.ok(r.created, `virsh create failed${ctx}`);
    assert.ok(r.booted, `the guest did not come up${ctx}`);
    assert.match(r.serial, /^VMB-GUEST-PING-OK/m, `the guest could not ping the host${ctx}`);
    assert.ok(ping?.ok, `the host could not ping the guest: ${ping?.output}${ctx}`);
    assert.equal(ping?.ports.length, 1, `one tap in br0 while the guest ran${ctx}`);
    assert.deepEqual(r.leftover, [], "libvirtd and QEMU stopped");
  } finally {
    await sb.cleanup();
  }
  assert.deepEqual(await noTapsLeft(ns), [], "the tap went with the domain");
}

rootTest(
  "libvirt session mode as uid 65534 runs the file-capability helper: the guest boots on br0 and pings both ways",
  async () => {
    const helper = (await sourceForOthers()).helper;
    await using copy = await privilegedDeno("filecaps");
    await using home = await tempDirFor(65534, 0o700, "vmb-libvirt-home-");
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    await using ns = await NetNs.create();
    await ns.bridge("br0", { addr: "10.0.77.1/24" });
    const sb = await sandbox(ns, {
      tun0666: true,
      user: { uid: 65534, gid: 65534 },
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup: exposeDeno(copy, { DENO_DIR: denoDir.path }),
    });
    await bootOnBr0(ns, sb, home.path, helper);
  },
);

rootTest(
  "libvirt session mode as uid 65534 runs the helper without capability: the bridge service gives the tap",
  async () => {
    await using home = await tempDirFor(65534, 0o700, "vmb-libvirt-home-");
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    await using ns = await NetNs.create();
    await ns.bridge("br0", { addr: "10.0.77.1/24" });
    await using svc = await startService(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    const sb = await sandbox(ns, {
      user: { uid: 65534, gid: 65534 },
      setup: clientSetup(svc, denoDir.path),
    });
    await bootOnBr0(
      ns,
      sb,
      home.path,
      HELPER_FROM_SOURCE,
      () => `\n--- service ---\n${svc.lines.join("\n")}`,
    );
    await svc.waitFor(
      /event=request uid=65534 gid=65534 pid=\d+ comm=\S+ op=open bridge=br0 kind=linux tap=tap\d+ decision=allow/,
    );
  },
);

rootTest(
  "libvirt session mode: a bridge the ACL denies fails virsh create with the helper's reason, and leaves nothing",
  async () => {
    const guest = await sharedGuest();
    const helper = (await sourceForOthers()).helper;
    await using copy = await privilegedDeno("filecaps");
    await using home = await tempDirFor(65534, 0o700, "vmb-libvirt-home-");
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    await using ns = await NetNs.create();
    await ns.bridge("br0", { addr: "10.0.77.1/24" });
    await ns.bridge("br1");
    const sb = await sandbox(ns, {
      tun0666: true,
      user: { uid: 65534, gid: 65534 },
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup: exposeDeno(copy, { DENO_DIR: denoDir.path }),
    });
    try {
      const r = await runLibvirtSession({
        ns,
        prefix: sb.argv,
        home: home.path,
        helper,
        bridge: "br1",
        guest,
        timeoutMs: 90_000,
      });
      const ctx = `\n--- virsh create ---\n${r.createOutput}\n--- serial ---\n${r.serial}`;
      assert.ok(!r.created, `virsh create succeeded on a denied bridge${ctx}`);
      // libvirt ran our helper as it runs QEMU's, and shows the helper's one line as its reason.
      assert.match(
        r.createOutput,
        /qemu-bridge-helper --use-vnet --br=br1 --fd=\d+: failed to communicate with bridge helper: stderr=access denied by acl file\n/,
        `libvirt shows our reason${ctx}`,
      );
      assert.deepEqual(r.leftover, [], "libvirtd stopped, no QEMU");
    } finally {
      await sb.cleanup();
    }
    assert.deepEqual(await noTapsLeft(ns), [], "no tap");
  },
);
