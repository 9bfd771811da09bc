// Two "hosts" on one Ethernet segment, for the tests and `deno task demo --hosts`: two network
// namespaces joined only by an underlay veth with IP addresses (192.0.2.1 and 192.0.2.2, a
// documentation range), each with a bridge, the two bridges joined by a tunnel over the
// underlay. VMs on either host then share one segment (10.0.99.0/24).
//
//   linux:       a Linux bridge per host, joined by a kernel VXLAN port (VNI 42);
//   ovs-vxlan:   an Open vSwitch bridge per host (datapath_type=netdev, userspace, no kernel
//   ovs-geneve:  module) with an OVS VXLAN or Geneve port: userspace tunnelling. The underlay
//                address sits on a second OVS bridge, br-phy, whose port is the underlay veth:
//                the userspace datapath sends the tunnel packets itself, routing and resolving
//                ARP through br-phy (OVS's "userspace tunnelling" set-up).
//
// A VM here is anything with a port on a host's bridge: `vm()` makes a namespace with a veth
// into the bridge (a kernel TCP/IP stack to ping and move data with); the service's tests add
// QEMU guests on taps the same way, through the bridge name and, for OVS, `ovs(host).dbSock`.

import { Ovsdb } from "../ovs/ovsdb.ts";
import { NetNs, type Output, ROOT, run } from "./_netns.ts";
import { OvsInstance } from "./_ovs.ts";

/** The two hosts. */
export type Host = "a" | "b";

/** How the two bridges are joined. */
export type SegmentKind = "linux" | "ovs-vxlan" | "ovs-geneve";

/** Underlay addresses (the only link between the hosts). */
export const UNDERLAY: Readonly<Record<Host, string>> = { a: "192.0.2.1", b: "192.0.2.2" };

/** The VXLAN/Geneve network identifier. */
export const VNI = 42;

/**
 * Underlay MTU: 1500 for the VMs plus the 50 bytes of VXLAN (or Geneve without options)
 * encapsulation, rounded up, so VMs keep the usual 1500.
 */
export const UNDERLAY_MTU = 1600;

/** The bridge VMs attach to on each host. */
export const BRIDGE = "br0";

const other = (h: Host): Host => (h === "a" ? "b" : "a");

/** Two hosts, their bridges and tunnel, and the VMs made on them; all removed on dispose. */
export class TwoHosts implements AsyncDisposable {
  /** The host namespaces. */
  readonly hosts: Readonly<Record<Host, NetNs>>;
  /** How the bridges are joined. */
  readonly kind: SegmentKind;
  readonly #ovs = new Map<Host, OvsInstance>();
  readonly #vms: NetNs[] = [];
  #vmCount = 0;

  private constructor(kind: SegmentKind, a: NetNs, b: NetNs) {
    this.kind = kind;
    this.hosts = { a, b };
  }

  /** Builds both hosts, the underlay, the bridges and the tunnel. */
  static async create(kind: SegmentKind): Promise<TwoHosts> {
    const a = await NetNs.create("vmb-hostA");
    let b: NetNs | undefined;
    try {
      b = await NetNs.create("vmb-hostB");
    } catch (e) {
      await a[Symbol.asyncDispose]();
      throw e;
    }
    const hosts = new TwoHosts(kind, a, b);
    try {
      // The underlay: one veth, one end in each host, nothing else between them.
      await a.ip(
        "link",
        "add",
        "underlay",
        "type",
        "veth",
        "peer",
        "name",
        "underlay",
        "netns",
        b.name,
      );
      for (const h of ["a", "b"] as const) {
        await hosts.hosts[h].ip("link", "set", "underlay", "mtu", String(UNDERLAY_MTU), "up");
      }
      if (kind === "linux") await hosts.#linux();
      else await hosts.#openVSwitch(kind === "ovs-vxlan" ? "vxlan" : "geneve");
      return hosts;
    } catch (e) {
      await hosts[Symbol.asyncDispose]();
      throw e;
    }
  }

  async #linux(): Promise<void> {
    for (const h of ["a", "b"] as const) {
      const ns = this.hosts[h];
      await ns.ip("addr", "add", `${UNDERLAY[h]}/24`, "dev", "underlay");
      await ns.bridge(BRIDGE, { up: false });
      // The kernel's VXLAN device, unicast to the other host, enslaved to the bridge.
      await ns.ip(
        "link",
        "add",
        "vxlan0",
        "type",
        "vxlan",
        "id",
        String(VNI),
        "local",
        UNDERLAY[h],
        "remote",
        UNDERLAY[other(h)],
        "dstport",
        "4789",
        "dev",
        "underlay",
      );
      await ns.ip("link", "set", "vxlan0", "master", BRIDGE, "up");
      await ns.ip("link", "set", BRIDGE, "up");
    }
  }

  async #openVSwitch(tunnel: "vxlan" | "geneve"): Promise<void> {
    for (const h of ["a", "b"] as const) {
      const ns = this.hosts[h];
      const ovs = await OvsInstance.start(ns);
      this.#ovs.set(h, ovs);
      // br-phy carries the underlay address; the underlay veth is its port.
      await ovs.addBridge("br-phy", { addr: `${UNDERLAY[h]}/24`, mtu: UNDERLAY_MTU });
      {
        using db = ovs.db();
        await db.addPort({
          bridge: "br-phy",
          ifname: "underlay",
          // Marked as ours, so the scripts may remove it; an administrator's port would not be.
          externalIds: new Map([["vm-bridge-uid", "0"], ["vm-bridge-pid", String(Deno.pid)]]),
        });
        await db.waitAttached("underlay", 10_000);
      }
      await ovs.addBridge(BRIDGE);
      {
        using db = ovs.db();
        await db.addTunnel(
          BRIDGE,
          `${tunnel}0`,
          tunnel,
          new Map([["remote_ip", UNDERLAY[other(h)]], ["key", String(VNI)]]),
        );
        await db.waitAttached(`${tunnel}0`, 10_000);
      }
    }
  }

  /** The Open vSwitch instance of a host (OVS segments only). */
  ovs(host: Host): OvsInstance {
    const o = this.#ovs.get(host);
    if (!o) throw new Error(`host ${host} runs no Open vSwitch (segment ${this.kind})`);
    return o;
  }

  /**
   * A VM stand-in on `host`: a namespace whose eth0 (address `ip`/24, MTU 1500) is a veth into
   * the host's bridge (for OVS, added through our OVSDB client).
   */
  async vm(host: Host, ip: string): Promise<NetNs> {
    const ns = this.hosts[host];
    const vm = await NetNs.create(`vmb-vm${host.toUpperCase()}`);
    this.#vms.push(vm);
    const port = `vm${++this.#vmCount}`;
    await ns.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", vm.name);
    await ns.ip("link", "set", port, "up");
    if (this.kind === "linux") {
      await ns.ip("link", "set", port, "master", BRIDGE);
    } else {
      using db = this.ovs(host).db();
      await db.addPort({
        bridge: BRIDGE,
        ifname: port,
        externalIds: new Map([["vm-bridge-uid", "0"], ["vm-bridge-pid", String(Deno.pid)]]),
      });
      await db.waitAttached(port, 10_000);
    }
    if (this.kind !== "linux") {
      // The kernel hands a veth's TCP/UDP packets on with the checksum left to the NIC
      // (CHECKSUM_PARTIAL); the userspace datapath reads them raw (AF_PACKET) and forwards them
      // as they are, so the far end drops every segment (ping still works: ICMP checksums are
      // always complete). A real NIC or a QEMU guest without offloads computes its own.
      const r = await run(vm.exec(["ethtool", "-K", "eth0", "tx", "off"]));
      if (r.code !== 0) throw new Error(`ethtool -K eth0 tx off failed: ${r.stderr.trim()}`);
    }
    await vm.ip("addr", "add", `${ip}/24`, "dev", "eth0");
    await vm.ip("link", "set", "eth0", "up");
    return vm;
  }

  /** Removes the VMs, stops Open vSwitch and deletes both hosts. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const vm of this.#vms.splice(0)) await vm[Symbol.asyncDispose]();
    for (const ovs of this.#ovs.values()) await ovs[Symbol.asyncDispose]();
    this.#ovs.clear();
    await this.hosts.a[Symbol.asyncDispose]();
    await this.hosts.b[Symbol.asyncDispose]();
  }
}

/** `ping -c N` from `vm` to `ip`; returns the output and whether nothing was lost. */
export async function ping(
  vm: NetNs,
  ip: string,
  count = 3,
): Promise<{ ok: boolean; output: string }> {
  const r = await vm.sh(`ping -c ${count} -i 0.2 -W 3 ${ip}`);
  return { ok: r.code === 0 && / 0% packet loss/.test(r.stdout), output: r.stdout + r.stderr };
}

/** What a TCP transfer measured. */
export interface Transfer {
  /** Bytes the client sent. */
  sent: number;
  /** Bytes the server received. */
  received: number;
  /** The SHA-256 of both sides matched and so did the counts. */
  intact: boolean;
  /** Client time from connect to close, in ms. */
  ms: number;
}

/** Sends `bytes` over TCP from `from` to `toIp` (a server in `to`, port 5001). */
export async function tcpTransfer(
  from: NetNs,
  to: NetNs,
  toIp: string,
  bytes = 4 << 20,
): Promise<Transfer> {
  const probe = `${ROOT}/scripts/_tcp_probe.ts`;
  const deno = [Deno.execPath(), "run", "--no-prompt", "--allow-net"];
  const argv = to.exec([...deno, probe, "server", "5001"]);
  const server = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  const timer = setTimeout(() => {
    try {
      server.kill("SIGKILL");
    } catch { /* gone */ }
  }, 120_000);
  try {
    while (!out.includes("listening")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`TCP server in ${to.name} did not start`);
      out += value;
    }
    const client = await runFor(
      from.exec([...deno, probe, "client", toIp, "5001", String(bytes)]),
      60_000,
    );
    if (client.code !== 0) throw new Error(`TCP client in ${from.name} failed: ${client.stderr}`);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const sent = JSON.parse(client.stdout.trim()) as { bytes: number; sha256: string; ms: number };
    const got = JSON.parse(out.slice(out.indexOf("listening") + 9).trim()) as {
      bytes: number;
      sha256: string;
    };
    return {
      sent: sent.bytes,
      received: got.bytes,
      intact: sent.bytes === got.bytes && sent.sha256 === got.sha256,
      ms: sent.ms,
    };
  } finally {
    clearTimeout(timer);
    try {
      server.kill("SIGKILL");
    } catch { /* gone */ }
    await server.status;
    await server.stderr.cancel().catch(() => {});
  }
}

/** Runs a command, killing it after `ms` (a TCP connect to a dead segment waits minutes). */
async function runFor(argv: string[], ms: number): Promise<Output> {
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, ms);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** What is missing for a segment kind, with the fix. */
export async function hostsMissing(kind: SegmentKind): Promise<string[]> {
  const problems: string[] = [];
  if (kind !== "linux") {
    const { ovsMissing } = await import("./_ovs.ts");
    problems.push(...await ovsMissing());
  }
  const r = await run(["sh", "-c", "command -v ip && command -v ping"]);
  if (r.code !== 0) problems.push("ip and ping are needed: apt-get install iproute2 iputils-ping");
  if (kind !== "linux" && (await run(["sh", "-c", "command -v ethtool"])).code !== 0) {
    problems.push("ethtool is missing: apt-get install ethtool");
  }
  return problems;
}

/** The tunnel as the host sees it, for the demo: the kernel VXLAN device, or the OVS ports. */
export async function describeTunnel(hosts: TwoHosts, host: Host): Promise<string> {
  if (hosts.kind === "linux") {
    return (await hosts.hosts[host].ip("-d", "-br", "link", "show", "vxlan0")).trim();
  }
  using db: Ovsdb = hosts.ovs(host).db();
  const ports = await db.listPorts(BRIDGE);
  return ports.map((p) =>
    `${p.name}${p.interfaceRows.map((i) => i.type ? ` (${i.type})` : "").join("")}`
  ).join(", ");
}
