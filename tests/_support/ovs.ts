// Test support for Open vSwitch: the private ovsdb-server/ovs-vswitchd of scripts/_ovs.ts, and a
// Deno-hosted machine on a persistent tap inside a namespace (the test process itself lives in
// the root namespace, where the tap's name does not resolve).

export * from "../../scripts/_ovs.ts";
import { ROOT } from "../../scripts/_netns.ts";
import type { NetNs } from "../../scripts/_netns.ts";

/** A responder (ARP + ping, examples/responder.ts) on tap `ifname` in `ns`, until disposed. */
export async function tapMachine(
  ns: NetNs,
  ifname: string,
  ip: string,
  mac: string,
): Promise<AsyncDisposable> {
  const argv = ns.exec([
    Deno.execPath(),
    "run",
    "--no-prompt",
    "--allow-ffi",
    `${ROOT}/tests/_support/tap_machine.ts`,
    ifname,
    ip,
    mac,
  ]);
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  while (!seen.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`tap machine on ${ifname} exited before it was ready`);
    seen += value;
  }
  reader.releaseLock();
  return {
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.stdout.cancel().catch(() => {});
      await child.status;
    },
  };
}

/** Runs ovs/ovsdb.ts's kernelBridgeFacts() inside `ns` for each name. */
export async function kernelFactsIn(
  ns: NetNs,
  names: string[],
): Promise<Record<string, { exists: boolean; linuxBridge: boolean }>> {
  const argv = ns.exec([
    Deno.execPath(),
    "run",
    "--no-prompt",
    "--allow-ffi",
    `${ROOT}/tests/_support/tap_machine.ts`,
    "--facts",
    ...names,
  ]);
  const out = await new Deno.Command(argv[0]!, { args: argv.slice(1), stderr: "inherit" })
    .output();
  if (out.code !== 0) throw new Error(`kernelBridgeFacts in ${ns.name} failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}
