// An L2 forwarder between two taps: every frame read on one is sent on the other, as a
// user-space switch or a network impairment tool would do. With `--offloads`, TCP moves in
// frames of up to 64 KiB (TSO and checksum offload with the virtio-net header) instead of one
// frame per 1500 bytes. Run it with
//
//   deno run --allow-ffi examples/forward.ts --a=TAP_A --b=TAP_B [--offloads]
//
// where TAP_A and TAP_B are persistent taps you may open (`ip tuntap add dev tapA mode tap user
// $USER`), each a port of the bridge it should join (the bridges may live in different network
// namespaces: a tap keeps working after `ip link set tapA netns other`). It prints one JSON line
// when it is forwarding, and its counters when SIGINT or SIGTERM stops it.

import { tapNetdev } from "../mod.ts";
import type { Netdev, Offload } from "../mod.ts";

/** The offloads the forwarder asks for with `--offloads`. */
export const FORWARD_OFFLOADS: readonly Offload[] = ["csum", "tso4", "tso6", "tso-ecn"];

/**
 * Forwards every frame between `a` and `b` until either is closed, a batch at a time: every
 * frame waiting on one side is read (up to 16 a system call) and written to the other with
 * writeBatch() (the same). A frame the other side refuses is counted there
 * (`counters.tx.errors`) and forwarding goes on. (`a.listen((f) => b.send(f))` does the same
 * with one write(2) a frame.)
 *
 * @returns The two loops, settled when both ended: closing either Netdev ends both (the other at
 * its next batch).
 */
export async function forward(a: Netdev, b: Netdev): Promise<void> {
  const pump = async (from: Netdev, to: Netdev) => {
    for await (const batch of from.batches()) {
      if (to.closed) break; // the other side is gone: so is the forwarding
      to.writeBatch(batch);
    }
  };
  await Promise.all([pump(a, b), pump(b, a)]);
}

if (import.meta.main) {
  const args = new Map(Deno.args.map((a) => {
    const [k, v] = a.replace(/^--/, "").split("=");
    return [k!, v ?? "true"];
  }));
  const unknown = [...args.keys()].filter((k) => !["a", "b", "offloads"].includes(k));
  if (!args.get("a") || !args.get("b") || unknown.length > 0) {
    console.error("usage: forward.ts --a=TAP_A --b=TAP_B [--offloads]");
    Deno.exit(2);
  }
  const offloads = args.has("offloads");
  const options = offloads
    ? { vnetHdr: true, vnetMode: "raw" as const, offloads: FORWARD_OFFLOADS }
    : {};
  const a = await tapNetdev({ ifname: args.get("a")!, ...options });
  const b = await tapNetdev({ ifname: args.get("b")!, ...options });
  const stop = () => {
    void a.close();
    void b.close();
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  console.log(JSON.stringify({ ready: [a.name, b.name], offloads: a.offloads }));
  await forward(a, b);
  console.error(JSON.stringify({ [a.name]: a.counters, [b.name]: b.counters }));
  Deno.exit(0);
}
