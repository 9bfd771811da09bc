// Test support: a real systemd (Debian's /lib/systemd/systemd) as PID 1 of a throwaway container,
// to run the shipped units as a host would, with nothing of the machine touched:
//
// - its own network namespace (the caller's NetNs), PID, mount, cgroup, UTS and IPC namespaces;
// - a cgroup of its own on the cgroup2 hierarchy, made here and removed on dispose;
// - private /run, /tmp, /var/tmp and /dev (null, zero, full, random, urandom, tty, net/tun 0600),
//   an overlay over /etc with a private /etc/qemu, an overlay over /usr/local, /proc/sys
//   read-only, and this checkout read-only at /mnt/repo (REPO);
// - only the units it is given ($SYSTEMD_UNIT_PATH): the minimal targets systemd's default
//   dependencies name, and whatever the test adds. No unit of the machine's is ever started.
//
// Commands run inside with nsenter (mount, network and PID namespaces). exit() asks systemd to
// exit (`systemctl exit`: every unit stopped as on a shutdown); dispose kills whatever is left in
// the cgroup and removes the cgroup and the staging directory.

import { ROOT, run } from "../../scripts/_netns.ts";
import type { NetNs, Output } from "../../scripts/_netns.ts";

/** Debian's systemd binary (package systemd). */
export const SYSTEMD = "/lib/systemd/systemd";

/**
 * This checkout, read-only, as the container sees it: the same path whatever the checkout's own
 * (a clone under /tmp would be hidden by the container's /tmp, and by a service's PrivateTmp=).
 */
export const REPO = "/mnt/repo";

/** Units every container has: what systemd's default dependencies name, and the exit path. */
const BASE_UNITS: Readonly<Record<string, string>> = {
  "sysinit.target": target("System Initialization"),
  "basic.target": target("Basic System"),
  "sockets.target": target("Sockets"),
  "shutdown.target": target("System Shutdown"),
  "system.slice": "[Unit]\nDescription=System Slice\nDefaultDependencies=no\n",
  // `systemctl exit`: exit.target pulls a service whose success ends the manager, after
  // shutdown.target has stopped every unit with default dependencies (as Debian's units do).
  "exit.target": target("Exit the Container", "Requires=vmb-exit.service\nAfter=vmb-exit.service"),
  "vmb-exit.service": "[Unit]\nDescription=Exit the Container\nDefaultDependencies=no\n" +
    "Requires=shutdown.target\nAfter=shutdown.target\nSuccessAction=exit-force\n",
};

function target(description: string, more = ""): string {
  return `[Unit]\nDescription=${description} (test container)\nDefaultDependencies=no\n${more}\n`;
}

/** What the container holds. */
export interface SystemdOptions {
  /** Unit files (name → text) besides the base ones; drop-ins as "x.service.d/y.conf". */
  units: Record<string, string>;
  /** Units the boot target wants (started at boot). */
  start: string[];
  /** Files of the private /etc/qemu (name → text, mode 0644, root's). */
  etcQemu: Record<string, string>;
  /** Symlinks in the private /usr/local (path below /usr/local → target). */
  usrLocal?: Record<string, string>;
  /** Directories of this machine bind-mounted into the private /run (name below /run → path). */
  run?: Record<string, string>;
}

/** The mount point of the cgroup2 hierarchy in this mount namespace. */
async function cgroup2Root(): Promise<string> {
  const lines = (await Deno.readTextFile("/proc/self/mountinfo")).split("\n");
  for (const line of lines) {
    const [before, after] = line.split(" - ");
    if (after?.split(" ")[0] === "cgroup2") return before!.split(" ")[4]!;
  }
  throw new Error("no cgroup2 hierarchy is mounted (/proc/self/mountinfo): systemd needs one");
}

/** The script that becomes PID 1: mounts, then exec systemd. $1 is the stage, $2 ROOT. */
const INIT = `set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 vmbsd-private /mnt
mkdir /mnt/stage /mnt/repo /mnt/etc-u /mnt/etc-w /mnt/local-u /mnt/local-w
mount --bind "$1" /mnt/stage
mount --bind "$2" /mnt/repo
mount -o remount,bind,ro /mnt/repo
mount -t overlay vmbsd-etc -o lowerdir=/etc,upperdir=/mnt/etc-u,workdir=/mnt/etc-w /etc
mkdir -p /etc/qemu
mount -t tmpfs -o mode=0755 vmbsd-etc-qemu /etc/qemu
cp -a /mnt/stage/etc-qemu/. /etc/qemu/
mount -t overlay vmbsd-usr-local -o lowerdir=/usr/local,upperdir=/mnt/local-u,workdir=/mnt/local-w /usr/local
cp -a /mnt/stage/usr-local/. /usr/local/
mount -t tmpfs -o mode=0755 vmbsd-run /run
while read -r name path; do mkdir -p "/run/$name" && mount --bind "$path" "/run/$name"; done < /mnt/stage/run-binds
mount -t tmpfs -o mode=1777 vmbsd-tmp /tmp
mount -t tmpfs -o mode=1777 vmbsd-var-tmp /var/tmp
mount -t proc proc /proc
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 vmbsd-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
mknod -m 666 /dev/tty c 5 0
mkdir /dev/net /dev/shm
mknod -m 600 /dev/net/tun c 10 200
mount -t tmpfs -o mode=1777 vmbsd-shm /dev/shm
export container=vmb-test SYSTEMD_UNIT_PATH=/mnt/stage/units
exec ${SYSTEMD} --system --unit=vmb-boot.target
`;

let counter = 0;

/** A running container; `await using` stops it and removes everything it made. */
export class SystemdContainer implements AsyncDisposable {
  /** systemd's pid, as this process sees it. */
  readonly pid: number;
  /** The staging directory (units, init.log), also /mnt/stage inside. */
  readonly stage: string;
  #cgroup: string;
  #child: Deno.ChildProcess;

  private constructor(pid: number, stage: string, cgroup: string, child: Deno.ChildProcess) {
    this.pid = pid;
    this.stage = stage;
    this.#cgroup = cgroup;
    this.#child = child;
  }

  /** Boots systemd in `ns` with `opts`; resolves once it runs and its boot job is done. */
  static async start(ns: NetNs, opts: SystemdOptions): Promise<SystemdContainer> {
    const stage = await Deno.makeTempDir({ prefix: "vmb-systemd-" });
    const cgroup = `${await cgroup2Root()}/vmb-systemd-${Deno.pid}-${++counter}`;
    let child: Deno.ChildProcess | undefined;
    try {
      await Deno.chmod(stage, 0o755);
      const units: Record<string, string> = {
        ...BASE_UNITS,
        "vmb-boot.target": target("Test boot", `Wants=${opts.start.join(" ")}`),
        ...opts.units,
      };
      for (const [name, text] of Object.entries(units)) await write(`${stage}/units/${name}`, text);
      await Deno.mkdir(`${stage}/etc-qemu`, { recursive: true });
      for (const [name, text] of Object.entries(opts.etcQemu)) {
        await write(`${stage}/etc-qemu/${name}`, text);
      }
      await Deno.mkdir(`${stage}/usr-local`, { recursive: true });
      for (const [path, to] of Object.entries(opts.usrLocal ?? {})) {
        const link = `${stage}/usr-local/${path}`;
        await Deno.mkdir(link.slice(0, link.lastIndexOf("/")), { recursive: true });
        await Deno.symlink(to, link);
      }
      const binds = Object.entries(opts.run ?? {}).map(([name, path]) => {
        if (/\s/.test(name + path)) throw new Error(`no white space in run binds: ${name} ${path}`);
        return `${name} ${path}\n`;
      });
      await write(`${stage}/run-binds`, binds.join(""));
      await Deno.mkdir(cgroup);
      // The shell logs to init.log and joins the cgroup, then becomes unshare, whose child
      // (PID 1 inside) runs INIT and becomes systemd.
      child = new Deno.Command("sh", {
        args: [
          "-c",
          'exec >>"$1/init.log" 2>&1 && echo $$ > "$2/cgroup.procs" && shift 2 && exec "$@"',
          "vmb-systemd",
          stage,
          cgroup,
          ...ns.exec([
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--cgroup",
            "--uts",
            "--ipc",
            "--propagation",
            "private",
            "sh",
            "-c",
            INIT,
            "vmb-init",
            stage,
            ROOT,
          ]),
        ],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      const pid = await initPid(child.pid, stage);
      const c = new SystemdContainer(pid, stage, cgroup, child);
      await c.#booted();
      return c;
    } catch (e) {
      await teardown(child, cgroup, stage);
      throw e;
    }
  }

  /** argv prefix that runs a command inside (its mount, network and PID namespaces). */
  exec(argv: readonly string[]): string[] {
    return ["nsenter", "-t", String(this.pid), "-m", "-n", "-p", "--", ...argv];
  }

  /** `systemctl ARGS` inside. */
  systemctl(...args: string[]): Promise<Output> {
    return run(this.exec(["systemctl", "--no-pager", ...args]));
  }

  /** A unit's property (`systemctl show -p NAME --value`). */
  async property(unit: string, name: string): Promise<string> {
    return (await this.systemctl("show", "-p", name, "--value", unit)).stdout.trim();
  }

  /** A file as the container sees it (its mount namespace, through /proc/PID/root). */
  readFile(path: string): Promise<string> {
    return Deno.readTextFile(`/proc/${this.pid}/root${path}`);
  }

  /** The units' states (`systemctl status --all`), for assertion messages. */
  async context(): Promise<string> {
    const status = await this.systemctl("status", "--all", "--lines=20");
    return `--- systemctl status ---\n${status.stdout}${status.stderr}`;
  }

  /** Waits until systemd has no job left (the boot target reached, or its failure). */
  async #booted(ms = 30_000): Promise<void> {
    const end = Date.now() + ms;
    for (;;) {
      const r = await this.systemctl("is-system-running");
      const state = r.stdout.trim();
      if (state === "running" || state === "degraded") return;
      if (Date.now() > end) {
        throw new Error(`systemd is "${state}" after ${ms} ms:\n${await this.context()}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * `systemctl exit` (every unit stopped as on a shutdown) and the manager's exit; returns its
   * exit status, or undefined when it had to be killed after `ms`.
   */
  async exit(ms = 20_000): Promise<number | undefined> {
    await this.systemctl("exit");
    const timer = setTimeout(() => {
      try {
        Deno.kill(this.pid, "SIGKILL");
      } catch { /* gone */ }
    }, ms);
    try {
      const status = await this.#child.status;
      return status.signal === null ? status.code : undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await teardown(this.#child, this.#cgroup, this.stage);
  }
}

async function write(path: string, text: string): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeTextFile(path, text, { mode: 0o644 });
}

/** The pid of unshare's child (PID 1 inside), once it has exec'd systemd. */
async function initPid(unsharePid: number, stage: string): Promise<number> {
  const end = Date.now() + 10_000;
  const systemd = await Deno.realPath(SYSTEMD);
  for (;;) {
    const kids = await Deno.readTextFile(`/proc/${unsharePid}/task/${unsharePid}/children`)
      .catch(() => "");
    const pid = Number(kids.trim().split(/\s+/)[0]);
    if (pid > 0) {
      const exe = await Deno.readLink(`/proc/${pid}/exe`).catch(() => "");
      if (exe === systemd) return pid;
    }
    if (Date.now() > end) {
      const log = await Deno.readTextFile(`${stage}/init.log`).catch(() => "");
      throw new Error(`systemd did not start within 10 s: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Kills what is left in the cgroup, waits for the child, removes the cgroup tree and stage. */
async function teardown(
  child: Deno.ChildProcess | undefined,
  cgroup: string,
  stage: string,
): Promise<void> {
  try {
    await Deno.writeTextFile(`${cgroup}/cgroup.kill`, "1");
  } catch { /* not made, or already empty and gone */ }
  if (child) {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
  }
  await removeCgroup(cgroup);
  await Deno.remove(stage, { recursive: true }).catch(() => {});
}

/** Removes a cgroup and the ones systemd made below it, deepest first, once they are empty. */
async function removeCgroup(path: string): Promise<void> {
  const end = Date.now() + 10_000;
  for (;;) {
    try {
      for await (const e of Deno.readDir(path)) {
        if (e.isDirectory) await removeCgroup(`${path}/${e.name}`);
      }
      await Deno.remove(path);
      return;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      if (Date.now() > end) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}
