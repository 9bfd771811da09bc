// Issue 11, "two hosts, one segment", end to end (tests/_support/hosts_service.ts): each host runs
// its own bridge service and an unmodified QEMU as uid 65534 with our helper as a plain 0755
// program (no capability) that asks its host's service for the tap; the two guests ping each
// other and move 4 MiB over TCP both ways (busybox nc in both guests, the SHA-256 checked at both
// ends). Once over Linux bridges + kernel VXLAN, once over Open vSwitch netdev bridges + a
// userspace VXLAN tunnel. Needs root.

import assert from "node:assert/strict";
import { BRIDGE, type Host, type SegmentKind, TwoHosts } from "../../scripts/_hosts.ts";
import { serviceGuests } from "../_support/hosts_service.ts";
import { rootTest } from "../_support/ns.ts";

async function twoHostsTwoServices(kind: SegmentKind): Promise<void> {
  await using hosts = await TwoHosts.create(kind);
  const run = await serviceGuests(hosts);
  const { a, b } = run.hosts;
  const { aToB, bToA } = run.moved;
  console.log(
    `  ${kind}: boot A ${(a.bootMs / 1000).toFixed(1)} s, B ${(b.bootMs / 1000).toFixed(1)} s; ` +
      `ping A -> B ${a.ping.rttsMs.join("/")} ms, B -> A ${b.ping.rttsMs.join("/")} ms; ` +
      `4 MiB A -> B ${aToB.wallMs} ms (nc ${aToB.senderMs} ms), ` +
      `B -> A ${bToA.wallMs} ms (nc ${bToA.senderMs} ms)`,
  );
  for (const [h, r] of [["a", a], ["b", b]] as [Host, typeof a][]) {
    const other = h === "a" ? "B" : "A";
    const ctx = `\n--- ping ---\n${r.ping.output}\n--- host ${h}'s service ---\n${
      r.serviceLines.join("\n")
    }`;
    assert.equal(r.ping.lossPercent, 0, `guest ${h.toUpperCase()} pinging guest ${other}${ctx}`);
    assert.equal(r.ping.rttsMs.length, 3, `three replies to guest ${h.toUpperCase()}${ctx}`);
    // Each service gave exactly one tap, to uid 65534, on its own host: the one its guest used.
    const opens = r.serviceLines.filter((l) => / op=open /.test(l));
    assert.equal(opens.length, 1, `host ${h}'s service answered one request${ctx}`);
    const audit = new RegExp(
      `event=request uid=65534 gid=65534 pid=\\d+ comm=\\S+ op=open bridge=${BRIDGE} kind=${
        kind === "linux" ? "linux" : "ovs"
      } tap=(tap\\d+) decision=allow`,
    ).exec(opens[0]!);
    assert.ok(audit, `host ${h}'s service did not give the tap${ctx}`);
    assert.deepEqual(r.tapsDuring, [audit[1]], `host ${h}'s guest tap is the one its service made`);
    assert.deepEqual(
      r.portsDuring,
      kind === "linux" ? [] : [audit[1]],
      `host ${h}'s OVS port is the service's tap`,
    );
    assert.deepEqual(r.tapsLeft, [], `the tap on host ${h} went with QEMU`);
    assert.deepEqual(r.portsLeft, [], `host ${h}'s service removed its guest's OVS port`);
  }
}

rootTest(
  "two hosts, each its own bridge service, Linux bridges + kernel VXLAN: a QEMU guest on each (tap from its host's service) ping and move 4 MiB over TCP both ways",
  () => twoHostsTwoServices("linux"),
);

rootTest(
  "two hosts, each its own bridge service, OVS + userspace VXLAN: a QEMU guest on each (tap from its host's service) ping and move 4 MiB over TCP both ways",
  () => twoHostsTwoServices("ovs-vxlan"),
);
