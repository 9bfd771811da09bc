// Test support: the bridge service started from source in a throwaway network namespace with a
// private /etc/qemu, under systemd-socket-activate (as vm-bridge.socket would) or with --listen,
// holding only CAP_NET_ADMIN (setpriv), and stopped by its pid.

import { listDir } from "../../sys/libc.ts";
import { NetNs, ROOT, sandbox, type SandboxOptions } from "../_support/ns.ts";

/** The service run from source with the compile flags. */
export const SERVICE_FROM_SOURCE = `${ROOT}/bin/vm-bridged`;

/** How to start it. */
export interface StartOptions {
  /** The private /etc/qemu. */
  etcQemu: NonNullable<SandboxOptions["etcQemu"]>;
  /** Extra service arguments. */
  args?: string[];
  /** "systemd": under systemd-socket-activate (default); "listen": --listen PATH. */
  activation?: "systemd" | "listen";
  /** Extra root setup inside the sandbox. */
  setup?: string;
}

/** A running service. */
export class ServiceProc implements AsyncDisposable {
  /** The socket path (in a temporary directory reachable from every namespace). */
  readonly socket: string;
  /** The directory holding it. */
  readonly dir: string;
  /** The service's pid (the process execs down to deno). */
  readonly pid: number;
  /** Every stderr line so far. */
  readonly lines: string[] = [];
  #child: Deno.ChildProcess;
  #cleanup: () => Promise<void>;
  #reader: Promise<void>;
  #status: Promise<Deno.CommandStatus>;

  constructor(dir: string, child: Deno.ChildProcess, cleanup: () => Promise<void>) {
    this.dir = dir;
    this.socket = `${dir}/socket`;
    this.#child = child;
    this.pid = child.pid;
    this.#cleanup = cleanup;
    this.#status = child.status;
    this.#reader = (async () => {
      let rest = "";
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        const parts = rest.split("\n");
        rest = parts.pop()!;
        this.lines.push(...parts);
      }
      if (rest) this.lines.push(rest);
    })();
  }

  /** Waits until a stderr line matches; returns it. */
  async waitFor(re: RegExp, ms = 30_000, from = 0): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const hit = this.lines.slice(from).find((l) => re.test(l));
      if (hit !== undefined) return hit;
      if (Date.now() > end) {
        throw new Error(`no service line matching ${re} in:\n${this.lines.join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** The number of fds the service holds open now. */
  fdCount(): number {
    return listDir(`/proc/${this.pid}/fd`).length;
  }

  /** The service's fds and what each is (`3 -> socket:[123]`), for a failure message. */
  fdTable(): string {
    const dir = `/proc/${this.pid}/fd`;
    // Unix and netlink sockets by inode (columns: see proc(5)), to tell a client from a runtime fd.
    const known = new Map<string, string>();
    for (const table of ["unix", "netlink"]) {
      try {
        for (const line of Deno.readTextFileSync(`/proc/${this.pid}/net/${table}`).split("\n")) {
          const f = line.trim().split(/\s+/);
          const inode = table === "unix" ? f[6] : f[9];
          if (inode && /^\d+$/.test(inode)) known.set(inode, `${table} ${f.join(" ")}`);
        }
      } catch { /* the table is optional detail */ }
    }
    return listDir(dir).map((fd) => {
      try {
        const target = Deno.readLinkSync(`${dir}/${fd}`);
        const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
        const what = inode ? known.get(inode) : undefined;
        return `${fd} -> ${target}${what ? ` (${what})` : ""}`;
      } catch {
        return `${fd} -> ?`;
      }
    }).join(", ");
  }

  /**
   * The fd count once the service is idle: the service closes a client's socket just after
   * sending its reply, so a count taken the moment a reply arrives may still include that
   * socket. The lowest of a few samples over `ms` is the idle count.
   */
  async idleFdCount(ms = 500): Promise<number> {
    let n = this.fdCount();
    for (let t = 0; t < ms; t += 50) {
      await new Promise((r) => setTimeout(r, 50));
      n = Math.min(n, this.fdCount());
    }
    return n;
  }

  /**
   * Waits (up to `ms`) for the fd count to come back to `baseline`, and returns the count: the
   * runtime may hold a transient fd for a moment, a leaked one stays for good.
   */
  async fdCountSettles(baseline: number, ms = 3000): Promise<number> {
    const end = Date.now() + ms;
    let n = this.fdCount();
    while (n !== baseline && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
      n = this.fdCount();
    }
    return n;
  }

  /** Sends a signal to the service (by pid). */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    try {
      Deno.kill(this.pid, signal);
    } catch { /* already gone */ }
  }

  /** Waits for it to exit. */
  async exited(): Promise<Deno.CommandStatus> {
    const s = await this.#status;
    await this.#reader;
    return s;
  }

  /** Stops it and removes its directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.exited();
    await this.#cleanup();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Starts the service in `ns` with a private /etc/qemu. Under systemd-socket-activate the
 * service starts at the first connection (as with vm-bridge.socket); with "listen" this waits
 * for its start line.
 */
export async function startService(ns: NetNs, opts: StartOptions): Promise<ServiceProc> {
  const dir = await Deno.makeTempDir({ prefix: "vmb-svc-" });
  await Deno.chmod(dir, 0o755);
  return await startIn(ns, dir, opts);
}

/** Starts (or restarts) the service with its socket in `dir`. */
export async function startIn(ns: NetNs, dir: string, opts: StartOptions): Promise<ServiceProc> {
  const sb = await sandbox(ns, {
    etcQemu: opts.etcQemu,
    ...(opts.setup ? { setup: opts.setup } : {}),
  });
  const service = [
    "setpriv",
    "--bounding-set=-all,+net_admin",
    "--inh-caps=-all",
    SERVICE_FROM_SOURCE,
    ...(opts.activation === "listen" ? ["--listen", `${dir}/socket`] : []),
    ...(opts.args ?? []),
  ];
  const argv = opts.activation === "listen" ? service : [
    "systemd-socket-activate",
    "--seqpacket",
    "-l",
    `${dir}/socket`,
    ...service,
  ];
  const child = new Deno.Command(sb.argv[0]!, {
    args: [...sb.argv.slice(1), ...argv],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const proc = new ServiceProc(dir, child, sb.cleanup);
  if (opts.activation === "listen") await proc.waitFor(/event=start/);
  else {
    const end = Date.now() + 30_000;
    while (!(await exists(`${dir}/socket`))) {
      if (Date.now() > end) throw new Error(`no socket: ${proc.lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // systemd-socket-activate makes it 0644 whatever the umask; vm-bridge.socket says
    // SocketMode=0666 (anyone may ask, the ACL decides), so the test does the same.
    await Deno.chmod(`${dir}/socket`, 0o666);
  }
  return proc;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the namespace has no tap (the kernel tears down asynchronously). */
export async function noTapsLeft(ns: NetNs, ms = 5000): Promise<string[]> {
  const end = Date.now() + ms;
  let taps = await ns.taps();
  while (taps.length > 0 && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
    taps = await ns.taps();
  }
  return taps;
}

/**
 * Sandbox setup lines (sandbox({ setup })) for a client of `svc` as another user: the service's
 * socket at the default /run/vm-bridge/socket, on a private /run, and `DENO_DIR` for the
 * helper's Deno (a directory that user owns).
 */
export function clientSetup(svc: ServiceProc, denoDir: string): string {
  return [
    `export DENO_DIR=${denoDir}`,
    "mount -t tmpfs -o mode=0755 vmb-run /run",
    "mkdir /run/vm-bridge",
    `mount --bind ${svc.dir} /run/vm-bridge`,
  ].join("\n");
}
