// `sudo deno task demo`: the whole thing working in a throwaway network namespace. A bridge
// br0 (10.0.77.1/24), a private /etc/qemu with `allow br0`, our helper run from source, and a
// Deno-hosted machine at 10.0.77.2 that the namespace pings. Everything is removed at the end.
// `--qemu` boots a tiny Linux guest under an unmodified QEMU with our helper instead; `--v86`
// boots a 32-bit Linux guest in v86 (x86 in WebAssembly) inside this very Deno process.
// `--hosts` shows two hosts on one segment (scripts/_demo_hosts.ts).

import { bridgeNetdev } from "../mod.ts";
import { respond } from "../examples/responder.ts";
import { HELPER_FROM_SOURCE, NetNs, run, sandbox } from "./_netns.ts";
import { ensurePackages } from "./setup.ts";

const say = (s: string) => console.log(s);

async function missing(): Promise<string[]> {
  const problems: string[] = [];
  if (Deno.uid() !== 0) {
    problems.push("run it as root: sudo deno task demo (it creates a network namespace)");
  }
  try {
    await Deno.stat("/dev/net/tun");
  } catch {
    problems.push("/dev/net/tun is missing: modprobe tun");
  }
  if (Deno.args.includes("--v86")) {
    const r = await run(["sh", "-c", "command -v apt-get && command -v dpkg-deb"]);
    if (r.code !== 0) problems.push("apt-get and dpkg-deb are needed to fetch the i386 guest");
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

async function v86Demo(ns: NetNs, helper: string[]): Promise<boolean> {
  const { buildV86Guest, GUEST_HTTP_PORT, GUEST_IP, GUEST_MAC, MARKERS } = await import(
    "../examples/v86/build-guest.ts"
  );
  const { httpGet, powerOff, startV86 } = await import("../examples/v86/vm.ts");
  say("getting the guest (Debian's 686 kernel + busybox for i386, build/v86-guest/)...");
  const guest = await buildV86Guest({ log: (l) => say(`  ${l}`) });
  say(`attaching v86 to br0 through ${HELPER_FROM_SOURCE}`);
  await using nic = await bridgeNetdev({ br: "br0", helper });
  await using vm = await startV86({ netdev: nic, guest });
  say(`booting Linux ${guest.release} in v86, inside this Deno process, on ${nic.name}...`);
  try {
    await vm.waitFor(MARKERS.ready, 120_000);
  } catch (e) {
    say(`${(e as Error).message}\n--- guest serial console ---\n${vm.serial}`);
    return false;
  }
  const ip = GUEST_IP.split("/")[0]!;
  say(`the guest is up after ${(vm.elapsed() / 1000).toFixed(1)} s at ${ip} (${GUEST_MAC})\n`);
  say(`$ ip -n ${ns.name} -br link show master br0`);
  say((await ns.ip("-br", "link", "show", "master", "br0")).trimEnd());
  say(`\n$ ip netns exec ${ns.name} ping -c 3 ${ip}`);
  const ping = await ns.sh(`ping -c 3 -i 0.3 -W 2 ${ip}`);
  say(ping.stdout.trimEnd());
  say(`\ndownloading ${guest.blob.size} bytes from the guest's httpd over TCP...`);
  const got = await httpGet(ns.exec([]), ip, GUEST_HTTP_PORT, guest.blob.path).catch((e) => {
    say((e as Error).message);
    return undefined;
  });
  const fetched = got?.bytes === guest.blob.size && got.sha256 === guest.blob.sha256;
  if (got) {
    const mib = got.bytes / 1048576;
    say(
      `${got.status}: ${mib.toFixed(1)} MiB in ${(got.ms / 1000).toFixed(2)} s ` +
        `(${(mib / (got.ms / 1000)).toFixed(2)} MiB/s), SHA-256 ${fetched ? "matches" : "DIFFERS"}`,
    );
  }
  await powerOff(vm);
  const c = vm.link.counters;
  say(
    `frames: ${c.toGuest.frames} to the guest (${c.toGuest.notReady} dropped before it could ` +
      `receive), ${c.fromGuest.frames} from it`,
  );
  return ping.code === 0 && /\b0% packet loss/.test(ping.stdout) && fetched;
}

// The packages first (scripts/packages.txt): installed here as root on Debian/Ubuntu, else one
// line naming them and the command, and nothing runs.
const purposes = ["demo", ...["qemu", "v86", "hosts"].filter((p) => Deno.args.includes(`--${p}`))];
await ensurePackages(
  purposes,
  `deno task demo${Deno.args.length ? " " + Deno.args.join(" ") : ""}`,
);

if (Deno.args.includes("--hosts")) {
  const { hostsDemo } = await import("./_demo_hosts.ts");
  const hostsOk = await hostsDemo(say);
  say(hostsOk ? "\ndemo: ok (hosts, bridges, tunnels and VMs removed)" : "\ndemo: FAILED");
  Deno.exit(hostsOk ? 0 : 1);
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
      : Deno.args.includes("--v86")
      ? await v86Demo(ns, [...sb.argv, HELPER_FROM_SOURCE])
      : await responderDemo(ns, [...sb.argv, HELPER_FROM_SOURCE]);
  } finally {
    await sb.cleanup();
  }
}
say(ok ? "\ndemo: ok (namespace, bridge and tap removed)" : "\ndemo: FAILED");
Deno.exit(ok ? 0 : 1);
