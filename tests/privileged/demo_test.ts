// The README's first command, `sudo deno task demo`, run as CI runs it (root): it must exit 0,
// show three ping replies and the tap in the bridge, and leave no namespace behind.

import assert from "node:assert/strict";
import { namespaces, rootTest, runTask } from "../_support/ns.ts";

rootTest("deno task demo pings a Deno-hosted machine through a bridge and cleans up", async () => {
  const out = await runTask(["demo"], 60_000);
  const { stdout, context } = out;

  assert.equal(out.code, 0, `demo exited ${out.code}${context}`);
  // The demo names its namespace vmb-demo-<pid of its deno>-1 (deno task runs it as a
  // grandchild, so the pid is read from its first line); it must be gone when the demo is.
  const demoNs = /^network namespace (vmb-demo-\d+-1): bridge br0 10\.0\.77\.1\/24/m
    .exec(stdout)?.[1];
  assert.ok(demoNs, `no "network namespace vmb-demo-..." line${context}`);
  const replies = stdout.match(
    /^64 bytes from 10\.0\.77\.2: icmp_seq=\d+ ttl=64 time=[\d.]+ ms$/gm,
  );
  assert.equal(replies?.length, 3, `expected 3 ping replies${context}`);
  assert.match(stdout, /3 packets transmitted, 3 received, 0% packet loss/, context);
  // `ip -br link show master br0`: the tap the helper made, up, in the bridge.
  const tap = /^the machine is 10\.0\.77\.2 \(52:54:00:00:77:02\) on (tap\d+)$/m.exec(stdout)?.[1];
  assert.ok(tap, `no "the machine is ... on tapN" line${context}`);
  assert.match(stdout, new RegExp(`^${tap}\\s+UNKNOWN\\s+fe(:[0-9a-f]{2}){5} <[^>]*\\bUP\\b`, "m"));
  assert.match(stdout, /the machine answered \d+ ARP request\(s\) and 3 ping\(s\)/, context);
  assert.match(stdout, /^demo: ok \(namespace, bridge and tap removed\)$/m, context);

  assert.ok(!(await namespaces()).includes(demoNs), `the demo left its namespace ${demoNs}`);
});
