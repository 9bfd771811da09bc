// `sudo deno task demo --hosts`, run as CI runs it (root): both segments carry ping and 4 MiB
// intact, between veth VMs and between a QEMU guest on each host whose tap comes from its own
// host's bridge service, and no namespace or Open vSwitch daemon is left behind.

import assert from "node:assert/strict";
import { rootTest, run, runTask } from "../_support/ns.ts";

rootTest(
  "deno task demo --hosts joins two hosts by Linux and Open vSwitch tunnels and cleans up",
  async () => {
    const out = await runTask(["demo", "--hosts"], 420_000);
    const { stdout, context } = out;
    assert.equal(out.code, 0, `demo --hosts exited ${out.code}${context}`);
    assert.equal(
      stdout.match(/3 packets transmitted, 3 received, 0% packet loss/g)?.length,
      2,
      context,
    );
    assert.equal(
      stdout.match(/4 MiB over TCP from VM A to VM B: 4194304 bytes received, SHA-256 matches/g)
        ?.length,
      2,
      context,
    );
    assert.match(stdout, /br0 \[internal\], vm1, vxlan0 \[vxlan\]/, context);
    // Each host's QEMU guest got its tap from its own host's service, on both segments.
    for (const kind of ["linux", "ovs"]) {
      for (const host of ["A", "B"]) {
        assert.match(
          stdout,
          new RegExp(
            `^host ${host}'s service: event=request uid=65534 gid=65534 pid=\\d+ comm=\\S+ ` +
              `op=open bridge=br0 kind=${kind} tap=tap\\d+ decision=allow`,
            "m",
          ),
          context,
        );
      }
    }
    assert.equal(
      stdout.match(
        /^guest A -> guest B ping: 0% loss \([\d./]+ ms\); guest B -> guest A ping: 0% loss/gm,
      )?.length,
      2,
      context,
    );
    assert.equal(
      stdout.match(
        /^4 MiB over TCP \(busybox nc in both guests\), SHA-256 the same at both ends: A -> B \d+ ms, B -> A \d+ ms/gm,
      )?.length,
      2,
      context,
    );
    assert.equal(
      stdout.match(/^afterwards: taps left A 0, B 0; OVS ports left A 0, B 0$/gm)?.length,
      2,
      context,
    );
    // Every namespace the demo named is gone, and so are its OVS daemons.
    const names = [...stdout.matchAll(/\b(vmb-(?:host|vm)[AB]-\d+-\d+)\b/g)].map((m) => m[1]!);
    assert.ok(names.length >= 8, context);
    const left = await run(["ip", "netns", "list"]);
    for (const n of names) assert.ok(!left.stdout.includes(n), `${n} left behind`);
    const daemons = await run(["pgrep", "-f", "vmb-ovs-"]);
    assert.equal(daemons.stdout.trim(), "", "an ovsdb-server or ovs-vswitchd of the demo survived");
  },
);
