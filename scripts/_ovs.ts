// Open vSwitch started by the tests and the demo: ovsdb-server and ovs-vswitchd from Debian's
// openvswitch-switch, run inside a namespace we made, with a private database, run and log
// directory, and stopped by pid. The system's own Open vSwitch (if any) is never touched: the
// private OVS_RUNDIR keeps the bridges' management sockets out of /var/run/openvswitch, and
// `--disable-system` keeps ovs-vswitchd off the kernel datapath, so only `datapath_type=netdev`
// bridges exist and no kernel module is needed.

import { Ovsdb } from "../ovs/ovsdb.ts";
import { must, type NetNs, run } from "./_netns.ts";

/** The schema Debian's package ships. */
export const OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema";

/** What is missing to run Open vSwitch here, with the fix; empty when nothing is. */
export async function ovsMissing(): Promise<string[]> {
  const problems: string[] = [];
  for (const cmd of ["ovsdb-server", "ovs-vswitchd", "ovsdb-tool"]) {
    const r = await run(["sh", "-c", `command -v ${cmd}`]);
    if (r.code !== 0) problems.push(`${cmd} is missing: apt-get install openvswitch-switch`);
  }
  try {
    await Deno.stat(OVS_SCHEMA);
  } catch {
    problems.push(`${OVS_SCHEMA} is missing: apt-get install openvswitch-switch`);
  }
  return problems;
}

async function waitFor(what: string, ok: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** A private ovsdb-server (and optionally ovs-vswitchd) in one namespace. */
export class OvsInstance implements AsyncDisposable {
  /** The private directory: database, sockets, logs. */
  readonly dir: string;
  /** The database socket. */
  readonly dbSock: string;
  /** The namespace the daemons run in. */
  readonly ns: NetNs;
  #server: Deno.ChildProcess | undefined;
  #switch: Deno.ChildProcess | undefined;

  private constructor(ns: NetNs, dir: string) {
    this.ns = ns;
    this.dir = dir;
    this.dbSock = `${dir}/db.sock`;
  }

  /**
   * Creates a database from the package's schema and starts ovsdb-server in `ns`, then (unless
   * `vswitchd: false`) ovs-vswitchd; the Open_vSwitch root row is created through our client.
   */
  static async start(ns: NetNs, opts: { vswitchd?: boolean } = {}): Promise<OvsInstance> {
    const missing = await ovsMissing();
    if (missing.length > 0) throw new Error(`Open vSwitch is not installed: ${missing.join("; ")}`);
    const dir = await Deno.makeTempDir({ prefix: "vmb-ovs-" });
    const ovs = new OvsInstance(ns, dir);
    try {
      await must(["ovsdb-tool", "create", `${dir}/conf.db`, OVS_SCHEMA]);
      ovs.#server = ovs.#spawn([
        "ovsdb-server",
        `${dir}/conf.db`,
        `--remote=punix:${ovs.dbSock}`,
        `--unixctl=${dir}/ovsdb-server.ctl`,
        `--log-file=${dir}/ovsdb-server.log`,
        "--no-chdir",
      ]);
      await waitFor(`ovsdb-server's socket ${ovs.dbSock}`, () => exists(ovs.dbSock), 15_000);
      {
        using db = ovs.db();
        await db.init();
      }
      if (opts.vswitchd ?? true) await ovs.startSwitch();
      return ovs;
    } catch (e) {
      await ovs[Symbol.asyncDispose]();
      throw e;
    }
  }

  #spawn(argv: string[]): Deno.ChildProcess {
    const env = {
      OVS_RUNDIR: this.dir,
      OVS_DBDIR: this.dir,
      OVS_LOGDIR: this.dir,
      OVS_SYSCONFDIR: this.dir,
      OVS_PKGDATADIR: "/usr/share/openvswitch",
    };
    // `ip netns exec` execs the daemon, so the child's pid is the daemon's pid.
    const cmd = this.ns.exec(argv);
    return new Deno.Command(cmd[0]!, {
      args: cmd.slice(1),
      env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  /** Starts ovs-vswitchd (userspace datapath only) against the private database. */
  async startSwitch(): Promise<void> {
    if (this.#switch) return;
    this.#switch = this.#spawn([
      "ovs-vswitchd",
      `unix:${this.dbSock}`,
      "--disable-system",
      `--unixctl=${this.dir}/ovs-vswitchd.ctl`,
      `--log-file=${this.dir}/ovs-vswitchd.log`,
      "--no-chdir",
    ]);
    await waitFor(
      "ovs-vswitchd's control socket",
      () => exists(`${this.dir}/ovs-vswitchd.ctl`),
      15_000,
    );
  }

  /** A connection to the private database. */
  db(timeoutMs = 10_000): Ovsdb {
    return Ovsdb.connect({ path: this.dbSock, timeoutMs });
  }

  /** Creates a `datapath_type=netdev` bridge through our client and waits for its device. */
  async addBridge(name: string, opts: { addr?: string; mtu?: number } = {}): Promise<void> {
    {
      using db = this.db();
      await db.addBridge(name, "netdev");
    }
    await waitFor(
      `the device of bridge ${name}`,
      async () => (await run(["ip", "-n", this.ns.name, "link", "show", name])).code === 0,
      15_000,
    );
    if (opts.mtu) await this.ns.ip("link", "set", name, "mtu", String(opts.mtu));
    if (opts.addr) await this.ns.ip("addr", "add", opts.addr, "dev", name);
    await this.ns.ip("link", "set", name, "up");
  }

  /** The last lines of both logs, for failure messages. */
  async logs(lines = 20): Promise<string> {
    const out: string[] = [];
    for (const f of ["ovsdb-server.log", "ovs-vswitchd.log"]) {
      const text = await Deno.readTextFile(`${this.dir}/${f}`).catch(() => "");
      out.push(`--- ${f}`, ...text.trimEnd().split("\n").slice(-lines));
    }
    return out.join("\n");
  }

  /** Stops ovs-vswitchd by pid (SIGTERM, then SIGKILL after 5 s) and reaps it. */
  async stopSwitch(): Promise<void> {
    await stop(this.#switch);
    this.#switch = undefined;
  }

  /** Stops ovsdb-server by pid and reaps it. */
  async stopServer(): Promise<void> {
    await stop(this.#server);
    this.#server = undefined;
  }

  /** Stops both daemons and removes the private directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopSwitch();
    await this.stopServer();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

async function stop(child: Deno.ChildProcess | undefined): Promise<void> {
  if (!child) return;
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, 5000);
  await child.status;
  clearTimeout(timer);
}
