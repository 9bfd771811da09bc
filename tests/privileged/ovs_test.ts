// Open vSwitch through our OVSDB client against the real ovsdb-server and ovs-vswitchd
// (Debian's openvswitch-switch), started in a throwaway namespace with a private database and
// stopped by pid. Userspace datapath only (datapath_type=netdev): no kernel module. Needs root.

import assert from "node:assert/strict";
import {
  classifyBridge,
  type KernelBridgeFacts,
  Ovsdb,
  OvsdbError,
  OvsdbUnreachableError,
} from "../../ovs/ovsdb.ts";
import { must, NetNs, rootTest, run } from "../_support/ns.ts";
import { kernelFactsIn, OvsInstance, tapMachine } from "../_support/ovs.ts";

const who = (pid: number) => new Map([["vm-bridge-uid", "1000"], ["vm-bridge-pid", String(pid)]]);

async function tap(ns: NetNs, name: string): Promise<void> {
  await ns.ip("tuntap", "add", "dev", name, "mode", "tap");
  await ns.ip("link", "set", name, "up");
}

/** What ovs-vsctl (an independent reader) lists on the bridge. */
async function vsctlPorts(ovs: OvsInstance, bridge: string): Promise<string[]> {
  const out = await must(["ovs-vsctl", `--db=unix:${ovs.dbSock}`, "list-ports", bridge]);
  return out.split("\n").filter((l) => l !== "");
}

async function interfaceNames(ovs: OvsInstance): Promise<string[]> {
  const out = await must([
    "ovs-vsctl",
    `--db=unix:${ovs.dbSock}`,
    "--bare",
    "--columns=name",
    "list",
    "Interface",
  ]);
  return out.split("\n").filter((l) => l !== "").sort();
}

rootTest(
  "OVS: a bridge made through OVSDB is an Open vSwitch bridge to the kernel and the database",
  async () => {
    await using ns = await NetNs.create("vmb-ovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await ns.bridge("brl");
    await ns.ip("link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1");
    const facts: Record<string, KernelBridgeFacts> = await kernelFactsIn(ns, [
      "sw0",
      "brl",
      "dummy0",
      "br-int",
    ]);
    assert.deepEqual({ ...facts }, {
      sw0: { exists: true, linuxBridge: false },
      brl: { exists: true, linuxBridge: true },
      dummy0: { exists: true, linuxBridge: false },
      "br-int": { exists: false, linuxBridge: false },
    });
    using db = ovs.db();
    const kinds = [];
    for (const name of ["sw0", "brl", "dummy0", "br-int"]) {
      kinds.push(classifyBridge(name, facts[name]!, await db.findBridge(name)).kind);
    }
    assert.deepEqual(kinds, ["ovs", "linux", "none", "none"]);
    assert.equal((await db.findBridge("sw0"))?.datapathType, "netdev");
    assert.equal(await db.isOvsBridge("brl"), false);
  },
);

rootTest(
  "OVS: a tap added through OVSDB carries external_ids, is attached, pings, and is removed",
  async () => {
    await using ns = await NetNs.create("vmb-ovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0", { addr: "10.0.88.1/24" });
    await tap(ns, "vmtap0");
    using db = ovs.db();
    const added = await db.addPort({
      bridge: "sw0",
      ifname: "vmtap0",
      externalIds: who(4242),
      ifaceId: "alice:web1",
    });
    const iface = await db.waitAttached("vmtap0", 10_000);
    assert.ok((iface.ofport ?? 0) > 0, `ofport ${iface.ofport}`);
    assert.equal(iface.uuid, added.iface);
    assert.deepEqual([...iface.externalIds].sort(), [
      ["iface-id", "alice:web1"],
      ["vm-bridge-pid", "4242"],
      ["vm-bridge-uid", "1000"],
    ]);
    const ports = await db.listPorts("sw0");
    assert.deepEqual(ports.map((p) => p.name), ["sw0", "vmtap0"]);
    const port = ports.find((p) => p.name === "vmtap0")!;
    assert.equal(port.uuid, added.port);
    // The iface-id is on the Interface only (where OVN reads it); who asked is on both.
    assert.deepEqual([...port.externalIds].sort(), [["vm-bridge-pid", "4242"], [
      "vm-bridge-uid",
      "1000",
    ]]);
    assert.deepEqual(await vsctlPorts(ovs, "sw0"), ["vmtap0"]);
    const ext = await must([
      "ovs-vsctl",
      `--db=unix:${ovs.dbSock}`,
      "get",
      "Interface",
      "vmtap0",
      "external_ids:iface-id",
    ]);
    assert.equal(ext.trim(), '"alice:web1"');

    // Frames flow: the bridge's own port (10.0.88.1) pings a machine on the tap (10.0.88.2)
    // through the userspace datapath.
    {
      await using _vm = await tapMachine(ns, "vmtap0", "10.0.88.2", "52:54:00:00:88:02");
      const ping = await ns.sh("ping -c 3 -i 0.2 -W 2 10.0.88.2");
      assert.equal(ping.code, 0, `${ping.stdout}${ping.stderr}\n${await ovs.logs()}`);
      assert.match(ping.stdout, / 0% packet loss/);

      assert.equal(await db.removePort("vmtap0"), true);
      assert.deepEqual(await vsctlPorts(ovs, "sw0"), []);
      assert.deepEqual(await interfaceNames(ovs), ["sw0"]);
      // Off the bridge, the machine is unreachable.
      await ns.ip("neigh", "flush", "all");
      const after = await ns.sh("ping -c 2 -i 0.2 -W 1 10.0.88.2");
      assert.notEqual(after.code, 0, after.stdout);
    }
    assert.equal(await db.removePort("vmtap0"), false, "a second removal finds nothing");
    await ns.ip("link", "del", "vmtap0");
  },
);

rootTest("OVS: 100 VMs came and went: no stale port, interface or datapath port", async () => {
  await using ns = await NetNs.create("vmb-ovs");
  await using ovs = await OvsInstance.start(ns);
  await ovs.addBridge("sw0");
  using db = ovs.db();
  const t0 = performance.now();
  for (let i = 0; i < 100; i++) {
    const name = `vmtap${i}`;
    await tap(ns, name);
    await db.addPort({ bridge: "sw0", ifname: name, externalIds: who(1000 + i) });
    const iface = await db.waitAttached(name, 10_000);
    assert.ok((iface.ofport ?? 0) > 0);
    // The VM exits: its tap goes, then the service removes the port.
    await ns.ip("link", "del", name);
    assert.equal(await db.removePort(name), true, name);
  }
  const ms = performance.now() - t0;
  console.log(`100 attach/detach cycles through OVSDB: ${ms.toFixed(0)} ms`);
  assert.deepEqual((await db.listPorts("sw0")).map((p) => p.name), ["sw0"]);
  assert.deepEqual(await vsctlPorts(ovs, "sw0"), []);
  assert.deepEqual(await interfaceNames(ovs), ["sw0"]);
  // ovs-vswitchd's own view: the datapath has only the bridge's port left.
  const show = await run([
    "ovs-appctl",
    `--target=${ovs.dir}/ovs-vswitchd.ctl`,
    "dpif/show",
  ]);
  assert.equal(show.code, 0, show.stderr);
  assert.doesNotMatch(show.stdout, /vmtap/);
  assert.deepEqual((await ns.taps()).filter((t) => t.startsWith("vmtap")), []);
});

rootTest(
  "OVS: an iface-id held by another interface is refused and nothing is written",
  async () => {
    await using ns = await NetNs.create("vmb-ovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await tap(ns, "vmtap1");
    await tap(ns, "vmtap2");
    using db = ovs.db();
    await db.addPort({ bridge: "sw0", ifname: "vmtap1", externalIds: who(1), ifaceId: "alice:a" });
    await assert.rejects(
      () =>
        db.addPort({ bridge: "sw0", ifname: "vmtap2", externalIds: who(2), ifaceId: "alice:a" }),
      {
        name: "OvsdbError",
        message: "The iface-id 'alice:a' is already bound to another Open vSwitch interface",
      },
    );
    await assert.rejects(
      () => db.addPort({ bridge: "nosuch", ifname: "vmtap2", externalIds: who(2) }),
      { message: "No Open vSwitch bridge named 'nosuch'" },
    );
    await assert.rejects(
      () => db.addPort({ bridge: "sw0", ifname: "vmtap1", externalIds: who(2) }),
      { message: "A port or interface named 'vmtap1' already exists in the Open vSwitch database" },
    );
    assert.deepEqual(await vsctlPorts(ovs, "sw0"), ["vmtap1"]);
    assert.deepEqual(await interfaceNames(ovs), ["sw0", "vmtap1"]);
    // An administrator's port (no vm-bridge-uid) is never removed by the service's call.
    await db.addTunnel("sw0", "vx0", "vxlan", new Map([["remote_ip", "192.0.2.9"]]));
    await assert.rejects(() => db.removePort("vx0"), OvsdbError);
    assert.deepEqual(await vsctlPorts(ovs, "sw0"), ["vmtap1", "vx0"]);
  },
);

rootTest("OVS: with the switch or the database down, the errors say so", async () => {
  await using ns = await NetNs.create("vmb-ovs");
  await using ovs = await OvsInstance.start(ns);
  await ovs.addBridge("sw0");
  await tap(ns, "vmtap0");

  // ovs-vswitchd stopped: the bridge's kernel device (a persistent tap of the userspace
  // datapath) outlives it, so kernel and database still say "Open vSwitch bridge"; what tells is
  // that nobody takes the new port in. The service waits for that and rolls back.
  await ovs.stopSwitch();
  const facts = await kernelFactsIn(ns, ["sw0"]);
  {
    using db = ovs.db();
    assert.equal(classifyBridge("sw0", facts.sw0!, await db.findBridge("sw0")).kind, "ovs");
    await db.addPort({ bridge: "sw0", ifname: "vmtap0", externalIds: who(1) });
    await assert.rejects(() => db.waitAttached("vmtap0", 500), {
      name: "OvsdbError",
      message: "Open vSwitch did not attach 'vmtap0' within 500 ms: is ovs-vswitchd running?",
    });
    assert.equal(await db.removePort("vmtap0"), true);
    assert.deepEqual(await vsctlPorts(ovs, "sw0"), []);
  }

  // ovsdb-server stopped: a clear one-line error, at once.
  await ovs.stopServer();
  const t0 = Date.now();
  assert.throws(() => Ovsdb.connect({ path: ovs.dbSock }), (e: unknown) => {
    assert.ok(e instanceof OvsdbUnreachableError);
    assert.match(
      e.message,
      new RegExp(
        `^Open vSwitch database not reachable at '${ovs.dbSock}': (No such file or directory|Connection refused)$`,
      ),
    );
    return true;
  });
  assert.ok(Date.now() - t0 < 1000);
  await ns.ip("link", "del", "vmtap0");
});

rootTest(
  "OVS: removing a dead VM's port by its row never removes a new VM's port of the same name",
  async () => {
    await using ns = await NetNs.create("vmb-ovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await tap(ns, "vmtap0");
    using db = ovs.db();
    const first = await db.addPort({ bridge: "sw0", ifname: "vmtap0", externalIds: who(1) });
    assert.equal(await db.removePort("vmtap0", { expectUuid: first.port }), true);
    // The kernel gave the same name to the next VM's tap, which got its own port.
    const second = await db.addPort({ bridge: "sw0", ifname: "vmtap0", externalIds: who(2) });
    assert.notEqual(second.port, first.port);
    // A late cleanup for the first VM finds a different row and leaves it alone.
    assert.equal(await db.removePort("vmtap0", { expectUuid: first.port }), false);
    assert.deepEqual(await vsctlPorts(ovs, "sw0"), ["vmtap0"]);
    assert.equal(await db.removePort("vmtap0", { expectUuid: second.port }), true);
    assert.deepEqual(await vsctlPorts(ovs, "sw0"), []);
    await ns.ip("link", "del", "vmtap0");
  },
);
