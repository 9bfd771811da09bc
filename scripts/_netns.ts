// Throwaway network namespaces and a private /etc/qemu, for the demo, the benchmarks and the
// tests. Nothing here touches the machine's own interfaces or its real /etc: every change lives
// in a namespace.

/** The repository root. */
export const ROOT: string = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** The helper run from source with the compile flags (a path QEMU can exec). */
export const HELPER_FROM_SOURCE: string = `${ROOT}/bin/qemu-bridge-helper`;

/** QEMU's own C helper, our reference. */
export const C_HELPER = "/usr/lib/qemu/qemu-bridge-helper";

/** The result of a command. */
export interface Output {
  /** Exit code. */
  code: number;
  /** stdout as text. */
  stdout: string;
  /** stderr as text. */
  stderr: string;
}

/** Runs a command and collects its output; never throws for a non-zero exit. */
export async function run(argv: readonly string[], stdin?: string): Promise<Output> {
  const cmd = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs a command and throws with its stderr when it fails. */
export async function must(argv: readonly string[], stdin?: string): Promise<string> {
  const out = await run(argv, stdin);
  if (out.code !== 0) {
    throw new Error(`${argv.join(" ")} failed (${out.code}): ${out.stderr.trim()}`);
  }
  return out.stdout;
}

/** One interface as `ip -j -d link show` reports it (the fields tests look at). */
export interface Link {
  /** Interface name. */
  ifname: string;
  /** MTU. */
  mtu: number;
  /** MAC address. */
  address: string;
  /** Bridge this interface is a port of. */
  master?: string;
  /** Flags such as "UP", "LOWER_UP". */
  flags: string[];
  /** operstate. */
  operstate: string;
  /** linkinfo kind ("bridge", "tun", "veth"). */
  kind?: string;
}

let counter = 0;

/** A network namespace that exists until disposed. */
export class NetNs implements AsyncDisposable {
  /** The namespace name. */
  readonly name: string;

  private constructor(name: string) {
    this.name = name;
  }

  /** Creates a namespace with a unique name and brings its loopback up. */
  static async create(prefix = "vmbt"): Promise<NetNs> {
    const name = `${prefix}-${Deno.pid}-${++counter}`;
    await must(["ip", "netns", "add", name]);
    const ns = new NetNs(name);
    await ns.ip("link", "set", "lo", "up");
    return ns;
  }

  /** `ip -n NS ...`. */
  ip(...args: string[]): Promise<string> {
    return must(["ip", "-n", this.name, ...args]);
  }

  /** argv prefix that runs a command inside the namespace. */
  exec(argv: readonly string[]): string[] {
    return ["ip", "netns", "exec", this.name, ...argv];
  }

  /** Runs a shell script inside the namespace. */
  sh(script: string): Promise<Output> {
    return run(this.exec(["sh", "-c", script]));
  }

  /** Creates a bridge, up, with an optional address and MTU. */
  async bridge(
    name = "br0",
    opts: { addr?: string; mtu?: number; up?: boolean; mac?: string } = {},
  ): Promise<void> {
    await this.ip("link", "add", name, "type", "bridge");
    // A fixed bridge MAC: a bridge with a random MAC adopts the lowest port MAC.
    await this.ip("link", "set", name, "address", opts.mac ?? "02:00:00:00:00:01");
    if (opts.mtu) await this.ip("link", "set", name, "mtu", String(opts.mtu));
    if (opts.addr) await this.ip("addr", "add", opts.addr, "dev", name);
    if (opts.up ?? true) await this.ip("link", "set", name, "up");
  }

  /** Every interface in the namespace. */
  async links(): Promise<Link[]> {
    const raw = JSON.parse(await this.ip("-j", "-d", "link", "show")) as Array<
      Record<string, unknown>
    >;
    return raw.map((l) => {
      const link: Link = {
        ifname: String(l.ifname),
        mtu: Number(l.mtu),
        address: String(l.address),
        flags: (l.flags as string[] | undefined) ?? [],
        operstate: String(l.operstate),
      };
      if (typeof l.master === "string") link.master = l.master;
      const kind = (l.linkinfo as { info_kind?: string } | undefined)?.info_kind;
      if (kind) link.kind = kind;
      return link;
    });
  }

  /** Names of the tap devices in the namespace. */
  async taps(): Promise<string[]> {
    return (await this.links()).filter((l) => l.kind === "tun").map((l) => l.ifname);
  }

  /** Deletes the namespace (and with it every interface in it). */
  async [Symbol.asyncDispose](): Promise<void> {
    await run(["ip", "netns", "del", this.name]);
  }
}

/** What the sandboxed command sees. */
export interface SandboxOptions {
  /** Files to put in the private /etc/qemu: name → content (or content and mode/owner). */
  etcQemu?: Record<string, string | { text: string; mode?: number; uid?: number; gid?: number }>;
  /** Extra setup commands run as root inside the sandbox before the exec (sh syntax). */
  setup?: string;
  /** Put a 0666 /dev/net/tun on a private tmpfs (this machine's is 0600). */
  tun0666?: boolean;
  /** Run the command as this uid/gid (via setpriv), e.g. 65534. */
  user?: { uid: number; gid: number; groups?: number[] };
}

/**
 * argv prefix that runs a command in `ns` inside a private mount namespace, with a private
 * /etc/qemu (an overlay over /etc, so the real /etc is never written) and optionally a 0666
 * tun node and another user. The staging directory is returned for cleanup.
 */
export async function sandbox(
  ns: NetNs,
  opts: SandboxOptions = {},
): Promise<{ argv: string[]; cleanup: () => Promise<void> }> {
  const stage = await Deno.makeTempDir({ prefix: "vmb-etc-qemu-" });
  await Deno.chmod(stage, 0o755);
  for (const [name, spec] of Object.entries(opts.etcQemu ?? {})) {
    const s = typeof spec === "string" ? { text: spec } : spec;
    const path = `${stage}/${name}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, s.text);
    await Deno.chmod(path, s.mode ?? 0o644);
    await Deno.chown(path, s.uid ?? 0, s.gid ?? 0);
  }
  const lines = [
    "set -e",
    // /mnt is only a mount point for the overlay's private upper layer.
    "mount -t tmpfs -o mode=0755 vmb-upper /mnt",
    "mkdir /mnt/u /mnt/w",
    "mount -t overlay vmb-etc -o lowerdir=/etc,upperdir=/mnt/u,workdir=/mnt/w /etc",
    "mkdir -p /etc/qemu",
    "mount -t tmpfs -o mode=0755 vmb-etc-qemu /etc/qemu",
    `cp -a ${stage}/. /etc/qemu/`,
  ];
  if (opts.tun0666) {
    lines.push(
      "mount -t tmpfs -o mode=0755 vmb-dev-net /dev/net",
      "mknod -m 0666 /dev/net/tun c 10 200",
    );
  }
  if (opts.setup) lines.push(opts.setup);
  let tail = ['exec "$@"'];
  if (opts.user) {
    const groups = opts.user.groups?.length
      ? `--groups=${opts.user.groups.join(",")}`
      : "--clear-groups";
    tail = [
      `exec setpriv --reuid=${opts.user.uid} --regid=${opts.user.gid} ${groups} --inh-caps=-all "$@"`,
    ];
  }
  const script = [...lines, ...tail].join("\n");
  return {
    argv: ns.exec(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "vmb-sandbox"]),
    cleanup: () => Deno.remove(stage, { recursive: true }),
  };
}
