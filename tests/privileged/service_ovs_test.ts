// The bridge service on Open vSwitch bridges: the real ovsdb-server and ovs-vswitchd (Debian's
// openvswitch-switch, userspace datapath) started in a throwaway namespace, the service started
// there with --ovsdb pointing at the private database, and ovs-vsctl as an independent reader.

import assert from "node:assert/strict";
import { requestTap, ServiceError } from "../../service/client.ts";
import { STATUS } from "../../service/protocol.ts";
import { type Ovsdb, type PortInfo } from "../../ovs/ovsdb.ts";
import { BridgeHelperError, runHelper } from "../../net/run_helper.ts";
import { HELPER_FROM_SOURCE, must, NetNs, rootTest, sandbox } from "../_support/ns.ts";
import { OvsInstance } from "../_support/ovs.ts";
import { bridgeNetdev } from "../../mod.ts";
import { respond } from "../../examples/responder.ts";
import { BRIDGE, ping, TwoHosts } from "../../scripts/_hosts.ts";
import { clientSetup, type ServiceProc, startService } from "./_service.ts";
import { tempDirFor } from "../_support/deno_copy.ts";

const ACL = { "bridge.conf": "allow sw0\nallow br0\n" };
const OVN = "allow * %u:*\n";

/** The vm-bridge ports of `bridge` (the bridge's own port left out). */
async function vmPorts(db: Ovsdb, bridge: string): Promise<PortInfo[]> {
  return (await db.listPorts(bridge)).filter((p) => p.name !== bridge);
}

/** What ovs-vsctl lists on the bridge, and every Interface name. */
async function vsctl(
  ovs: OvsInstance,
  bridge: string,
): Promise<{ ports: string[]; ifaces: string[] }> {
  const lines = (s: string) => s.split("\n").filter((l) => l !== "").sort();
  const db = `--db=unix:${ovs.dbSock}`;
  return {
    ports: lines(await must(["ovs-vsctl", db, "list-ports", bridge])),
    ifaces: lines(await must(["ovs-vsctl", db, "--bare", "--columns=name", "list", "Interface"])),
  };
}

/**
 * Waits until the namespace has no VM tap (`tapN`; the OVS bridge's own devices `sw0` and
 * `ovs-netdev` are taps too, and stay): the kernel tears down asynchronously.
 */
async function noTapsLeft(ns: NetNs, ms = 5000): Promise<string[]> {
  const end = Date.now() + ms;
  const vmTaps = async () => (await ns.taps()).filter((t) => /^tap\d+$/.test(t));
  let taps = await vmTaps();
  while (taps.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    taps = await vmTaps();
  }
  return taps;
}

/** The service in `ns`, listening, on `ovs`'s database; sweeping every `sweepMs` when given. */
function serviceOn(
  ns: NetNs,
  ovs: OvsInstance,
  etcQemu: Record<string, string>,
  sweepMs?: number,
): Promise<ServiceProc> {
  const sweep = sweepMs === undefined ? [] : ["--sweep-ms", String(sweepMs)];
  return startService(ns, {
    etcQemu,
    args: ["--ovsdb", ovs.dbSock, ...sweep],
    activation: "listen",
  });
}

async function until(what: string, ok: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

rootTest(
  "service OVS: the tap becomes a port through OVSDB with who asked, and goes when the fd closes",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await using svc = await serviceOn(ns, ovs, { ...ACL, "bridge-ovn.conf": OVN }, 50);
    using db = ovs.db();
    {
      using fd = await requestTap("sw0", false, {
        socket: svc.socket,
        timeoutMs: 30_000,
        ifaceId: "root:web1",
      });
      assert.ok(fd.value >= 0);
      const ports = await vmPorts(db, "sw0");
      assert.equal(ports.length, 1);
      const port = ports[0]!;
      assert.match(port.name, /^tap\d+$/);
      assert.deepEqual([...port.externalIds].sort(), [
        ["vm-bridge-pid", String(Deno.pid)],
        ["vm-bridge-uid", "0"],
      ]);
      const iface = port.interfaceRows[0]!;
      assert.ok((iface.ofport ?? 0) > 0, `attached by ovs-vswitchd: ofport ${iface.ofport}`);
      assert.deepEqual([...iface.externalIds].sort(), [
        ["iface-id", "root:web1"],
        ["vm-bridge-pid", String(Deno.pid)],
        ["vm-bridge-uid", "0"],
      ]);
      // An independent reader agrees; the tap is up and on no Linux bridge.
      assert.deepEqual((await vsctl(ovs, "sw0")).ports, [port.name]);
      const link = (await ns.links()).find((l) => l.ifname === port.name)!;
      assert.ok(link.flags.includes("UP"), link.flags.join(","));
      assert.equal(link.master, undefined);
      const line = await svc.waitFor(/event=request .*decision=allow/);
      assert.match(
        line,
        new RegExp(
          `event=request uid=0 gid=0 pid=${Deno.pid} comm=deno op=open bridge=sw0 kind=ovs ` +
            `iface_id=root:web1 tap=${port.name} decision=allow reason=ok$`,
        ),
      );
    }
    // The VM exits (its fd closes): the tap goes, and the service removes exactly its port.
    assert.deepEqual(await noTapsLeft(ns), []);
    await until("the port's removal", async () => (await vmPorts(db, "sw0")).length === 0);
    assert.deepEqual(await vsctl(ovs, "sw0"), { ports: [], ifaces: ["sw0"] });
    await svc.waitFor(
      /event=ovs-port bridge=sw0 tap=tap\d+ port=\S+ action=removed reason="tap gone"/,
    );
  },
);

rootTest(
  "service OVS: iface-id allowed for one's own name, refused for another user's, without a " +
    "policy, and on a Linux bridge; a refusal leaves no tap and no port",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await ns.bridge("br0");
    using db = ovs.db();
    const ask = (socket: string, bridge: string, ifaceId: string) =>
      requestTap(bridge, false, { socket, timeoutMs: 30_000, ifaceId });
    {
      await using svc = await serviceOn(ns, ovs, { ...ACL, "bridge-ovn.conf": OVN });
      (await ask(svc.socket, "sw0", "root:db")).close();
      await assert.rejects(() => ask(svc.socket, "sw0", "nobody:db"), (e: unknown) => {
        assert.ok(e instanceof ServiceError);
        assert.equal(e.status, STATUS.DENIED);
        assert.equal(
          e.message,
          "iface-id 'nobody:db' refused: no rule in /etc/qemu/bridge-ovn.conf allows it for root",
        );
        return true;
      });
      // "roo:" is no prefix trick: the colon ends the user name.
      await assert.rejects(() => ask(svc.socket, "sw0", "roo:t:x"), { status: STATUS.DENIED });
      await assert.rejects(() => ask(svc.socket, "br0", "root:db"), {
        status: STATUS.DENIED,
        message: "iface-id refused: `br0' is not an Open vSwitch bridge",
      });
      // The same iface-id twice: the second VM cannot take the bound logical port over.
      {
        using _first = await ask(svc.socket, "sw0", "root:twice");
        await assert.rejects(() => ask(svc.socket, "sw0", "root:twice"), {
          status: STATUS.FAILED,
          message:
            /^failed to add interface `tap\d+' to Open vSwitch bridge `sw0': The iface-id 'root:twice' is already bound/,
        });
        assert.equal((await vmPorts(db, "sw0")).length, 1);
      }
      assert.deepEqual(await noTapsLeft(ns), []);
    }
    {
      // No policy file: no iface-id for anyone (deny by default); a tap without one is fine.
      await using svc = await serviceOn(ns, ovs, ACL);
      await assert.rejects(() => ask(svc.socket, "sw0", "root:db"), {
        status: STATUS.DENIED,
        message: "iface-id 'root:db' refused: /etc/qemu/bridge-ovn.conf allows no iface-id",
      });
      (await requestTap("sw0", false, { socket: svc.socket, timeoutMs: 30_000 })).close();
      // The ACL decides by name for Open vSwitch bridges too.
      await ovs.addBridge("sw1");
      await assert.rejects(
        () => requestTap("sw1", false, { socket: svc.socket, timeoutMs: 30_000 }),
        { status: STATUS.DENIED, message: "access denied by acl file" },
      );
    }
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);

rootTest(
  "service OVS: 100 VMs came and went through the service: no stale port or interface",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await using svc = await serviceOn(ns, ovs, ACL, 20);
    using db = ovs.db();
    const names = new Set<string>();
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) {
      using _fd = await requestTap("sw0", false, { socket: svc.socket, timeoutMs: 30_000 });
      // Tap names are reused at once; each VM's port is its own row, removed by its uuid.
      const ports = await vmPorts(db, "sw0");
      assert.ok(ports.length >= 1 && ports.length <= 2, `${ports.length} ports at cycle ${i}`);
      for (const p of ports) names.add(p.name);
    }
    await until("every port's removal", async () => (await vmPorts(db, "sw0")).length === 0);
    const ms = performance.now() - t0;
    console.log(`100 attach/detach cycles through the service: ${ms.toFixed(0)} ms`);
    assert.deepEqual(await vsctl(ovs, "sw0"), { ports: [], ifaces: ["sw0"] });
    assert.deepEqual(await noTapsLeft(ns), []);
    const removed = svc.lines.filter((l) => /event=ovs-port .*action=removed/.test(l)).length;
    assert.ok(removed >= 100, `${removed} removals audited`);
    assert.equal(svc.lines.filter((l) => /remove-failed/.test(l)).length, 0);
    console.log(`tap names used: ${[...names].sort().join(" ")}`);
  },
);

rootTest(
  "service OVS: ovs-vswitchd or ovsdb-server down gives a clear error and no tap, no port",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await using svc = await serviceOn(ns, ovs, ACL);
    await ovs.stopSwitch();
    await assert.rejects(
      () => requestTap("sw0", false, { socket: svc.socket, timeoutMs: 30_000 }),
      (e: unknown) => {
        assert.ok(e instanceof ServiceError);
        assert.equal(e.status, STATUS.FAILED);
        assert.match(
          e.message,
          /^failed to add interface `tap\d+' to Open vSwitch bridge `sw0': Open vSwitch did not attach 'tap\d+' within 2000 ms: is ovs-vswitchd running\?$/,
        );
        return true;
      },
    );
    assert.deepEqual(await noTapsLeft(ns), []);
    {
      using db = ovs.db();
      assert.deepEqual(await vmPorts(db, "sw0"), [], "rolled back: no port");
    }
    await ovs.stopServer();
    await assert.rejects(
      () => requestTap("sw0", false, { socket: svc.socket, timeoutMs: 30_000 }),
      {
        status: STATUS.FAILED,
        message:
          `bridge \`sw0' may be an Open vSwitch bridge: Open vSwitch database not reachable at '${ovs.dbSock}': No such file or directory`,
      },
    );
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);

rootTest(
  "service OVS: at start, ports vm-bridge added for taps that are gone are removed, others kept",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    using db = ovs.db();
    // A crash between a tap's end and its cleanup: the row stays, the device is gone.
    await ns.ip("tuntap", "add", "dev", "gone0", "mode", "tap");
    const ids = new Map([["vm-bridge-uid", "1000"], ["vm-bridge-pid", "1"]]);
    await db.addPort({ bridge: "sw0", ifname: "gone0", externalIds: ids });
    await ns.ip("link", "del", "gone0");
    // An administrator's port whose device is gone too: not ours, kept.
    await db.addTunnel("sw0", "vx0", "vxlan", new Map([["remote_ip", "192.0.2.9"]]));
    await using svc = await serviceOn(ns, ovs, ACL);
    await svc.waitFor(
      /event=ovs-port bridge=sw0 tap=gone0 .*action=removed reason="stale at start"/,
    );
    assert.deepEqual((await vsctl(ovs, "sw0")).ports, ["vx0"]);
  },
);

rootTest(
  "bridgeNetdev() via our helper without privilege, which gets an OVS tap from the service, " +
    "cannot check the port and says to ask the service",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await using svc = await serviceOn(ns, ovs, ACL, 50);
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    const sb = await sandbox(ns, {
      user: { uid: 65534, gid: 65534 },
      etcQemu: ACL,
      setup: clientSetup(svc, denoDir.path),
    });
    try {
      await assert.rejects(
        bridgeNetdev({ br: "sw0", via: "helper", helper: [...sb.argv, HELPER_FROM_SOURCE] }),
        (e) => {
          assert.ok(e instanceof BridgeHelperError, String(e));
          assert.match(
            e.message,
            /^Bridge helper sent a tap that is not a port of bridge `sw0': `tap\d+' is not a port of any bridge; `sw0' looks like an Open vSwitch bridge, whose ports the kernel does not show, so this cannot be checked: ask the bridge service for the tap \(bridgeNetdev\(\) with via "service" or "auto"\)$/,
          );
          return true;
        },
      );
      await svc.waitFor(/event=request uid=65534 .*bridge=sw0 kind=ovs .*decision=allow/);
    } finally {
      await sb.cleanup();
    }
    assert.deepEqual(await noTapsLeft(ns), [], "the rejected tap is closed, and goes");
  },
);

rootTest(
  "helper without the service refuses an Open vSwitch bridge and names the service",
  async () => {
    await using ns = await NetNs.create("vmb-svcovs");
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    const sb = await sandbox(ns, { etcQemu: ACL });
    try {
      const e = await runHelper({
        helper: [...sb.argv, HELPER_FROM_SOURCE],
        bridge: "sw0",
        vnetHdr: false,
        signal: AbortSignal.timeout(60_000),
      }).then((fd) => {
        fd.close();
        return undefined;
      }, (e) => e);
      assert.ok(e instanceof BridgeHelperError, String(e));
      const first = e.stderr.split("\n")[0]!;
      assert.match(
        first,
        /^failed to add interface `tap\d+' to bridge `sw0': Operation not supported: `sw0' is not a Linux bridge but looks like an Open vSwitch bridge; only the bridge service \(vm-bridged\) attaches taps to Open vSwitch bridges/,
      );
    } finally {
      await sb.cleanup();
    }
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);

rootTest(
  "two hosts, OVS userspace VXLAN: a VM on host A gets its port from the service; a VM on " +
    "host B pings it",
  async () => {
    await using hosts = await TwoHosts.create("ovs-vxlan");
    const vmB = await hosts.vm("b", "10.0.99.2");
    const ovsA = hosts.ovs("a");
    await using svc = await startService(hosts.hosts.a, {
      etcQemu: { "bridge.conf": `allow ${BRIDGE}\n`, "bridge-ovn.conf": OVN },
      args: ["--ovsdb", ovsA.dbSock, "--sweep-ms", "50"],
      activation: "listen",
    });
    using db = ovsA.db();
    {
      // The library asks the service (no helper process): the v86-style Deno-hosted VM on A.
      await using nic = await bridgeNetdev({
        br: BRIDGE,
        via: "service",
        serviceSocket: svc.socket,
      });
      const { stats } = respond(nic, { ip: "10.0.99.10", mac: "52:54:00:00:99:10" });
      const ports = (await vmPorts(db, BRIDGE)).filter((p) => /^tap\d+$/.test(p.name));
      assert.equal(ports.length, 1);
      assert.equal(ports[0]!.externalIds.get("vm-bridge-uid"), "0");
      const p = await ping(vmB, "10.0.99.10");
      assert.ok(p.ok, p.output);
      assert.ok(stats.pingReplies >= 3, `${stats.pingReplies} ping replies`);
      console.log(`host B -> service-made tap on host A: ${p.output.split("\n").at(-2) ?? ""}`);
    }
    await until(
      "the port's removal",
      async () => (await vmPorts(db, BRIDGE)).every((p) => !/^tap\d+$/.test(p.name)),
    );
    assert.deepEqual(await noTapsLeft(hosts.hosts.a), []);
  },
);
