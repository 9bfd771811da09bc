// A Linux VM in Deno on your bridge: boots the i386 guest (examples/v86/build-guest.ts) in v86,
// with its NIC on a tap in `--br` made by the bridge helper, and gives you its serial console.
//
//   deno run -A examples/v86/build-guest.ts            # once, needs the Debian mirror
//   deno run --allow-read --allow-run --allow-ffi examples/v86/main.ts --br=br0
//
// Options: --br=BR (default br0), --helper=PATH (default: the installed helper), --ip=A.B.C.D/N
// (default 10.0.77.2/24), --mac=MAC, --nic=virtio|ne2k (ne2k stalls under sustained traffic: see
// v86.ts). Lines you type run in the guest's shell; Ctrl-D or Ctrl-C powers it off.

import { bridgeNetdev, DEFAULT_HELPER_PATH } from "../../mod.ts";
import { buildV86Guest, GUEST_IP, GUEST_MAC, MARKERS } from "./build-guest.ts";
import type { V86Nic } from "./build-guest.ts";
import { powerOff, startV86 } from "./vm.ts";

function parseArgs(args: readonly string[]): Map<string, string> {
  const known = new Set(["br", "helper", "ip", "mac", "nic"]);
  const out = new Map<string, string>();
  for (const a of args) {
    const m = /^--([a-z]+)=(.*)$/.exec(a);
    if (!m || !known.has(m[1]!)) throw new TypeError(`Unknown argument: "${a}"`);
    if (out.has(m[1]!)) throw new TypeError(`Duplicate argument: "--${m[1]}"`);
    out.set(m[1]!, m[2]!);
  }
  const nic = out.get("nic") ?? "virtio";
  if (nic !== "virtio" && nic !== "ne2k") throw new TypeError(`Unknown NIC model: "${nic}"`);
  return out;
}

async function main(): Promise<number> {
  let args: Map<string, string>;
  try {
    args = parseArgs(Deno.args);
  } catch (e) {
    console.error(`v86 example: ${(e as Error).message}`);
    return 2;
  }
  const br = args.get("br") ?? "br0";
  const ip = args.get("ip") ?? GUEST_IP;
  const mac = args.get("mac") ?? GUEST_MAC;
  const nicModel = (args.get("nic") ?? "virtio") as V86Nic;

  const guest = await buildV86Guest({ log: (l) => console.error(`build-guest: ${l}`) });
  await using nic = await bridgeNetdev({ br, helper: args.get("helper") ?? DEFAULT_HELPER_PATH });
  console.error(`${nic.name} on ${br}; booting Linux ${guest.release} in v86 (${nicModel})...`);
  await using vm = await startV86({
    netdev: nic,
    guest,
    ip,
    mac,
    nic: nicModel,
    onLine: (line) => console.log(line),
  });
  await vm.waitFor(MARKERS.ready, 120_000);
  console.error(
    `booted in ${(vm.elapsed() / 1000).toFixed(1)} s: ${ip.split("/")[0]} (${mac}) on ${br}. ` +
      `Type commands for the guest; Ctrl-D powers it off.`,
  );

  const quit = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", quit.resolve);
  (async () => {
    const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
    let rest = "";
    for await (const chunk of lines) {
      rest += chunk;
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        vm.type(rest.slice(0, nl));
        rest = rest.slice(nl + 1);
      }
    }
    quit.resolve();
  })().catch(quit.resolve);
  await quit.promise;
  Deno.removeSignalListener("SIGINT", quit.resolve);

  await powerOff(vm);
  const c = vm.link.counters;
  console.error(
    `frames to the guest: ${c.toGuest.frames} (${c.toGuest.notReady} before it could receive, ` +
      `${c.toGuest.overflow} overflowed); from the guest: ${c.fromGuest.frames} ` +
      `(${c.fromGuest.drops} dropped)`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
