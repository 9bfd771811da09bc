// `sudo deno task demo`: the whole thing working in a throwaway network namespace. A bridge
// br0 (10.0.77.1/24), a private /etc/qemu with `allow br0`, our helper run from source, and a
// Deno-hosted machine at 10.0.77.2 that the namespace pings. Everything is removed at the end.
// `--qemu` boots a tiny Linux guest under an unmodified QEMU with our helper instead.

import { bridgeNetdev } from "../mod.ts";
import { respond } from "../examples/responder.ts";
import { HELPER_FROM_SOURCE, NetNs, run, sandbox } from "../tests/_support/ns.ts";

const say = (s: string) => console.log(s);

async function missing(): Promise<string[]> {
  const problems: string[] = [];
  if (Deno.uid() !== 0) problems.push("run it as root: sudo deno task demo (it creates a network namespace)");
  for (const [cmd, pkg] of [["ip", "iproute2"], ["unshare", "util-linux"], ["ping", "iputils-ping"]]) {
    const r = await run(["sh", "-c", `command -v ${cmd}`]).catch(() => ({ code: 1 }));
    if (r.code !== 0) problems.push(`${cmd} is missing: apt-get install ${pkg}`);
  }
  try {
    await Deno.stat("/dev/net/tun");
  } catch {
    problems.push("/dev/net/tun is missing: modprobe tun");
  }
  if (Deno.args.includes("--qemu")) {
    const r = await run(["sh", "-c", "command -v qemu-system-x86_64"]);
    if (r.code !== 0) problems.push("qemu-system-x86_64 is missing: apt-get install qemu-system-x86");
    const k = await run(["sh", "-c", "ls /boot/vmlinuz-* && ls /bin/busybox"]);
    if (k.code !== 0) {
      problems.push("a guest kernel and busybox are missing: apt-get install linux-image-amd64 busybox-static");
    }
  }
  return problems;
}

async function responderDemo(ns: NetNs, helper: string[]): Promise<boolean> {
  say(`attaching a Deno-hosted machine to br0 through ${HELPER_FROM_SOURCE}`);
  await using nic = await bridgeNetdev({ br: "br0", helper });
  const { stats, done } = respond(nic, { ip: "10.0.77.2", mac: "52:54:00:00:77:02" });
  say(`the machine is 10.0.77.2 (52:54:00:00:77:02) on ${nic.name}\n`);
  say(`$ ip -n ${ns.name} -br link show master br0`);
  say((await ns.ip("-br", "link", "show", "master", "br0")).trimEnd());
  say(`\n$ ip netns exec ${ns.name} ping -c 3 10.0.77.2`);
  const ping = await ns.sh("ping -c 3 -i 0.3 -W 2 10.0.77.2");
  say(ping.stdout.trimEnd());
  await nic.close();
  await done;
  say(`\nthe machine answered ${stats.arpReplies} ARP request(s) and ${stats.pingReplies} ping(s)`);
  say(`frames: ${nic.counters.rx.frames} received, ${nic.counters.tx.frames} sent`);
  return ping.code === 0 && stats.pingReplies === 3;
}

async function qemuDemo(ns: NetNs, sandboxArgv: string[]): Promise<boolean> {
  const { buildGuest } = await import("../tests/_support/guest.ts");
  const { runQemuPing } = await import("../tests/_support/qemu.ts");
  say("building the tiny guest (Debian kernel + busybox initramfs)...");
  const guest = await buildGuest();
  say(`booting it under QEMU with -netdev bridge,id=n0,br=br0,helper=${HELPER_FROM_SOURCE}`);
  const r = await runQemuPing({
    netns: ns.name,
    prefix: sandboxArgv,
    guest,
    netdev: `bridge,id=n0,br=br0,helper=${HELPER_FROM_SOURCE}`,
    timeoutMs: 120_000,
  });
  say(`guest booted in ${(r.bootMs / 1000).toFixed(1)} s`);
  say(r.hostPing.trimEnd());
  say(`guest pinged the host: ${r.guestPingOk ? "yes" : "no"}`);
  return r.guestPingOk && /\b0% packet loss/.test(r.hostPing);
}

const problems = await missing();
if (problems.length > 0) {
  for (const p of problems) console.error(`demo: ${p}`);
  Deno.exit(1);
}

let ok = false;
{
  await using ns = await NetNs.create("vmb-demo");
  say(`network namespace ${ns.name}: bridge br0 10.0.77.1/24, private /etc/qemu with "allow br0"`);
  await ns.bridge("br0", { addr: "10.0.77.1/24" });
  const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  try {
    ok = Deno.args.includes("--qemu")
      ? await qemuDemo(ns, sb.argv)
      : await responderDemo(ns, [...sb.argv, HELPER_FROM_SOURCE]);
  } finally {
    await sb.cleanup();
  }
}
say(ok ? "\ndemo: ok (namespace, bridge and tap removed)" : "\ndemo: FAILED");
Deno.exit(ok ? 0 : 1);
