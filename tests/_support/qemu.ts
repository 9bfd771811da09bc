/**
 * Boot the test guest (see `guest.ts`) under QEMU inside an existing network
 * namespace, ping it from the namespace, and collect timings
 * ({@linkcode runQemuPing}); or start guests, drive their consoles and stop
 * them yourself ({@linkcode QemuGuest}, e.g. two guests pinging each other).
 *
 * Also small helpers for privileged tests: throwaway namespaces with a bridge,
 * and a command prefix that gives QEMU a private `/etc/qemu/bridge.conf`
 * without touching the real /etc.
 *
 * @module
 */

import {
  buildGuest,
  DEFAULT_GUEST_IP,
  DEFAULT_GUEST_MAC,
  DEFAULT_PEER_IP,
  guestCommandLine,
  type GuestImage,
  MARKERS,
  POWEROFF_COMMAND,
} from "./guest.ts";

/** Path of QEMU's own (C) bridge helper on Debian. */
export const C_BRIDGE_HELPER = "/usr/lib/qemu/qemu-bridge-helper";

/** Options for {@linkcode QemuGuest.start}: the guest, its NIC and how QEMU is started. */
export interface QemuGuestOptions {
  /** `-netdev` value; must use `id=n0`. E.g. `bridge,id=n0,br=br0,helper=/usr/lib/qemu/qemu-bridge-helper`. */
  netdev: string;
  /**
   * argv placed before the QEMU argv, e.g. `["ip", "netns", "exec", ns, ...]`.
   * Needed to put QEMU into the namespace; may also change uid, mounts, etc.
   * Prefix commands should `exec` (not fork) so signals reach QEMU; the whole
   * process group is signalled anyway.
   */
  prefix: string[];
  /** The guest powers itself off after this many ms plus 30 s (a watchdog: QEMU cannot outlive us). */
  timeoutMs: number;
  /** Guest address with prefix length (default 10.0.77.2/24). */
  guestIp?: string;
  /** Address the guest pings at boot, or `"none"` (default 10.0.77.1). */
  peerIp?: string;
  /** Guest MAC (default 52:54:00:12:34:56). */
  mac?: string;
  /** Pings the guest sends at boot (default 3). */
  pingCount?: number;
  /** Prebuilt guest (default: {@linkcode buildGuest}()). */
  guest?: GuestImage;
  /** QEMU binary (default `qemu-system-x86_64`). */
  qemu?: string;
  /** Extra QEMU arguments. */
  extraQemuArgs?: string[];
  /** Environment for the spawned prefix/QEMU (added to the inherited environment). */
  env?: Record<string, string>;
}

/** Options for {@linkcode runQemuPing}. */
export interface RunQemuPingOptions extends QemuGuestOptions {
  /** Existing network namespace to ping the guest from (`ip netns exec <netns> ping ...`). */
  netns: string;
  /** Deadline for the whole run (boot, both pings); QEMU is killed when it passes. */
  timeoutMs: number;
  /** Pings in each direction (default 3). */
  pingCount?: number;
  /**
   * Runs once both pings are done and the guest is idle, before it is powered off: drives the
   * guest's console commands (e.g. `vmb-tcp-recv PORT`, see guest.ts). A throw fails the run
   * (QEMU is still stopped and reaped).
   */
  whileIdle?: (guest: GuestConsole) => Promise<void>;
}

/** The guest's serial console, for {@linkcode RunQemuPingOptions.whileIdle} and {@linkcode QemuGuest}. */
export interface GuestConsole {
  /** Writes one line to the console. */
  send(line: string): Promise<void>;
  /**
   * The first match of `re` in the serial output from offset `from` (default 0: all of it) so
   * far or within `ms`, else undefined.
   */
  wait(re: RegExp, ms: number, from?: number): Promise<RegExpMatchArray | undefined>;
  /** Everything the guest wrote to its console so far (take its length as a `from` offset). */
  readonly serial: string;
}

/** Result of {@linkcode runQemuPing}. */
export interface RunQemuPingResult {
  /** ms from spawning QEMU to the guest's `VMB-READY` line. */
  bootMs: number;
  /** Full output of the host-side `ping` run in the namespace. */
  hostPing: string;
  /** Host ping exited 0 with 0% packet loss. */
  hostPingOk: boolean;
  /** Packet loss reported by the host ping (100 if unparsable). */
  hostLossPercent: number;
  /** Per-reply RTTs of the host ping, in ms. */
  hostRttsMs: number[];
  /** Guest printed `VMB-GUEST-PING-OK`. */
  guestPingOk: boolean;
  /** Per-reply RTTs of the guest's ping, in ms (parsed from the serial console). */
  guestRttsMs: number[];
  /** The `VMB-READY ...` line. */
  readyLine: string;
  /** Everything QEMU wrote to stdout (the guest serial console). */
  serial: string;
  /** Everything QEMU (and the prefix) wrote to stderr. */
  stderr: string;
  /** How QEMU ended: `"poweroff"` (guest powered off on request), `"SIGTERM"`, `"SIGKILL"`, or `"exited"` by itself. */
  stoppedBy: "poweroff" | "SIGTERM" | "SIGKILL" | "exited";
  /** QEMU's exit status. */
  status: Deno.CommandStatus;
}

/** Thrown by {@linkcode runQemuPing}; carries QEMU's output. */
export class QemuRunError extends Error {
  /** Serial console (QEMU stdout) up to the failure. */
  readonly stdout: string;
  /** QEMU stderr up to the failure. */
  readonly stderr: string;
  /** QEMU's exit status, once reaped. */
  status: Deno.CommandStatus | undefined;
  /** `message` is extended with the tails of `stdout` and `stderr`. */
  constructor(message: string, stdout: string, stderr: string) {
    super(
      `${message}\n--- qemu stdout (serial) ---\n${tail(stdout)}\n--- qemu stderr ---\n${
        tail(stderr)
      }`,
    );
    this.name = "QemuRunError";
    this.stdout = stdout;
    this.stderr = stderr;
  }
}

function tail(s: string, max = 8000): string {
  return s.length > max ? `[... ${s.length - max} chars cut ...]\n${s.slice(-max)}` : s;
}

/** Accumulates a byte stream as text and lets callers wait for a pattern in it. */
class TextSink {
  text = "";
  closed = false;
  readonly done: Promise<void>;
  #wake = new Set<() => void>();

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      try {
        for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
          this.text += chunk;
          this.#notify();
        }
      } catch {
        // stream errors are treated like EOF
      } finally {
        this.closed = true;
        this.#notify();
      }
    })();
  }

  #notify(): void {
    for (const w of [...this.#wake]) w();
  }

  /**
   * Resolve with the first match of `re` (searched from offset `from`, default the start), or
   * with `undefined` on EOF or at `deadline` (epoch ms). The text may end mid-line (a chunk
   * boundary), so line patterns must require their `\n`, not `$`.
   */
  wait(re: RegExp, deadline: number, from = 0): Promise<RegExpMatchArray | undefined> {
    const found = () => this.text.slice(from).match(re) ?? undefined;
    if (found() || this.closed || Date.now() >= deadline) return Promise.resolve(found());
    return new Promise((resolve) => {
      const finish = () => {
        this.#wake.delete(check);
        clearTimeout(timer);
        resolve(found());
      };
      const check = () => {
        if (found() || this.closed) finish();
      };
      const timer = setTimeout(finish, Math.max(0, deadline - Date.now()));
      this.#wake.add(check);
    });
  }
}

/** Await `p` for at most `ms`; `true` if it settled in time. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<false>((r) => timer = setTimeout(() => r(false), ms));
  try {
    return await Promise.race([p.then(() => true, () => true), t]);
  } finally {
    clearTimeout(timer);
  }
}

function killGroup(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(-pid, sig); // detached => own process group (setsid)
  } catch {
    try {
      Deno.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

/** RTTs from `time=1.23 ms` lines (iputils and busybox formats). */
export function parsePingRtts(out: string): number[] {
  return [...out.matchAll(/time[=<]([\d.]+) ?ms/g)].map((m) => Number(m[1]));
}

/** Packet loss percentage from ping output (100 if not found). */
export function parsePingLoss(out: string): number {
  const m = out.match(/([\d.]+)% packet loss/);
  return m ? Number(m[1]) : 100;
}

/** A booted guest's `VMB-READY` line: see {@linkcode QemuGuest.ready}. */
export interface GuestReady {
  /** ms from spawning QEMU to the guest's `VMB-READY` line. */
  bootMs: number;
  /** The `VMB-READY ...` line. */
  readyLine: string;
  /** The guest's address, from that line. */
  ip: string;
}

/** How a {@linkcode QemuGuest} ended. */
export interface GuestStopped {
  /** `"poweroff"` (the idle guest powered off on request), `"SIGTERM"`, `"SIGKILL"`, or `"exited"` by itself. */
  stoppedBy: "poweroff" | "SIGTERM" | "SIGKILL" | "exited";
  /** QEMU's exit status. */
  status: Deno.CommandStatus;
}

/**
 * One QEMU running the test guest (guest.ts), its serial console on QEMU's stdio: start it, wait
 * for its boot, drive its console, stop it. Several may run at once (give each its own `mac` and
 * `guestIp`). {@linkcode QemuGuest.stop} (or `await using`) always stops and reaps QEMU: a
 * powered-off request when the guest is idle, then SIGTERM, then SIGKILL to its process group.
 */
export class QemuGuest implements AsyncDisposable {
  /** QEMU's (or the prefix's) pid; it leads its own process group. */
  readonly pid: number;
  /** `Date.now()` when QEMU was spawned. */
  readonly startedAt: number;
  /** The serial console (waits have no deadline beyond their own `ms`). */
  readonly console: GuestConsole;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #out: TextSink;
  #err: TextSink;
  #exited = false;
  #status: Promise<Deno.CommandStatus>;
  #stopped: Promise<GuestStopped> | undefined;

  private constructor(child: Deno.ChildProcess) {
    this.pid = child.pid;
    this.startedAt = Date.now();
    this.#stdin = child.stdin.getWriter();
    this.#out = new TextSink(child.stdout);
    this.#err = new TextSink(child.stderr);
    this.#status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
    const out = this.#out;
    const send = this.send.bind(this);
    this.console = {
      send,
      wait: (re, ms, from) => out.wait(re, Date.now() + ms, from),
      get serial() {
        return out.text;
      },
    };
  }

  /** Builds the guest unless given, spawns QEMU (detached, own process group) and returns. */
  static async start(opts: QemuGuestOptions): Promise<QemuGuest> {
    const guest = opts.guest ?? await buildGuest();
    const argv = [
      ...opts.prefix,
      ...guestCommandLine({
        guest,
        netdev: opts.netdev,
        ip: opts.guestIp ?? DEFAULT_GUEST_IP,
        peer: opts.peerIp ?? DEFAULT_PEER_IP,
        mac: opts.mac ?? DEFAULT_GUEST_MAC,
        pingCount: opts.pingCount ?? 3,
        // Guest-side watchdog: QEMU cannot outlive us by much even if we are killed.
        timeoutS: Math.ceil(opts.timeoutMs / 1000) + 30,
        ...(opts.qemu ? { qemu: opts.qemu } : {}),
        ...(opts.extraQemuArgs ? { extraArgs: opts.extraQemuArgs } : {}),
      }),
    ];
    const [cmd, ...args] = argv;
    return new QemuGuest(
      new Deno.Command(cmd!, {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
        detached: true,
        ...(opts.env ? { env: opts.env } : {}),
      }).spawn(),
    );
  }

  /** Everything QEMU wrote to stdout (the guest's serial console) so far. */
  get serial(): string {
    return this.#out.text;
  }

  /** Everything QEMU (and the prefix) wrote to stderr so far. */
  get stderr(): string {
    return this.#err.text;
  }

  /** QEMU has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** A {@linkcode QemuRunError} saying `message`, with QEMU's output so far. */
  fail(message: string): QemuRunError {
    return new QemuRunError(message, this.#out.text, this.#err.text);
  }

  /** Writes one line to the guest's console. */
  async send(line: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(`${line}\n`));
  }

  /** The first match of `re` in the serial output (from offset `from`) by `deadline` (epoch ms). */
  wait(re: RegExp, deadline: number, from = 0): Promise<RegExpMatchArray | undefined> {
    return this.#out.wait(re, deadline, from);
  }

  /**
   * Waits for the guest's `VMB-READY` line until `deadline` (epoch ms). Throws
   * {@linkcode QemuRunError} when QEMU exits first, the guest reports `VMB-NO-ETH0`, or the
   * deadline passes.
   */
  async ready(deadline: number): Promise<GuestReady> {
    const ready = await this.#out.wait(
      new RegExp(`^(${MARKERS.ready} (\\S+)[^\\r\\n]*|${MARKERS.noEth0})\\r?\\n`, "m"),
      deadline,
    );
    if (!ready) {
      throw this.fail(
        this.#exited || this.#out.closed
          ? `QEMU exited before ${MARKERS.ready}`
          : `no ${MARKERS.ready} within ${deadline - this.startedAt} ms of starting QEMU`,
      );
    }
    if (ready[1] === MARKERS.noEth0) throw this.fail(`guest reported ${MARKERS.noEth0}`);
    const bootMs = Date.now() - this.startedAt;
    const readyLine = ready[1]!.trimEnd();
    const ip = ready[2]!;
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) {
      throw this.fail(`bad address in ready line: ${readyLine}`);
    }
    return { bootMs, readyLine, ip };
  }

  /** Stops QEMU (see the class) and reaps it; the same answer on every call. */
  stop(): Promise<GuestStopped> {
    return this.#stopped ??= this.#stop();
  }

  async #stop(): Promise<GuestStopped> {
    let stoppedBy: GuestStopped["stoppedBy"] = "exited";
    const idle = new RegExp(`^${MARKERS.idle}\\r?\\n`, "m").test(this.#out.text);
    if (!this.#exited && idle) {
      await this.#stdin.write(new TextEncoder().encode(`\n${POWEROFF_COMMAND}\n`)).catch(() => {});
      if (await within(this.#status, 5000)) stoppedBy = "poweroff";
    }
    if (!this.#exited) {
      killGroup(this.pid, "SIGTERM");
      if (await within(this.#status, 5000)) stoppedBy = "SIGTERM";
    }
    if (!this.#exited) {
      killGroup(this.pid, "SIGKILL");
      stoppedBy = "SIGKILL";
    }
    const status = await this.#status;
    await this.#stdin.close().catch(() => {});
    // Pipes may be held open by stray grandchildren; don't hang on them forever.
    if (!(await within(Promise.all([this.#out.done, this.#err.done]), 5000))) {
      killGroup(this.pid, "SIGKILL");
      await Promise.all([this.#out.done, this.#err.done]);
    }
    return { stoppedBy, status };
  }

  /** {@linkcode QemuGuest.stop}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/**
 * Boot the guest with `opts.netdev`, wait for `VMB-READY`, ping it from
 * `opts.netns`, wait for the guest's own ping verdict, then stop QEMU
 * (guest poweroff, then SIGTERM, then SIGKILL to its process group) and reap
 * it. QEMU is always stopped and reaped, also on error or timeout.
 *
 * Throws {@linkcode QemuRunError} (with QEMU's stdout/stderr) when QEMU exits
 * early, the guest reports `VMB-NO-ETH0`, or a marker misses the deadline.
 * Ping failures are reported in the result, not thrown.
 */
export async function runQemuPing(opts: RunQemuPingOptions): Promise<RunQemuPingResult> {
  const guest = opts.guest ?? await buildGuest();
  const deadline = Date.now() + opts.timeoutMs;
  const pingCount = opts.pingCount ?? 3;
  const g = await QemuGuest.start({ ...opts, guest, pingCount });
  let result: Omit<RunQemuPingResult, "serial" | "stderr" | "stoppedBy" | "status">;
  try {
    const { bootMs, readyLine, ip } = await g.ready(deadline);

    const pingAbort = new AbortController();
    const pingTimer = setTimeout(() => pingAbort.abort(), Math.max(1000, deadline - Date.now()));
    let hostPing: string;
    let pingSuccess = false;
    try {
      const r = await new Deno.Command("ip", {
        args: ["netns", "exec", opts.netns, "ping", "-c", String(pingCount), "-W", "2", ip],
        stdout: "piped",
        stderr: "piped",
        signal: pingAbort.signal,
      }).output();
      hostPing = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
      pingSuccess = r.success;
    } catch (e) {
      hostPing = `host ping failed to run: ${e}`;
    } finally {
      clearTimeout(pingTimer);
    }
    const hostLossPercent = parsePingLoss(hostPing);

    const verdict = await g.wait(
      new RegExp(
        `^(${MARKERS.guestPingOk}|${MARKERS.guestPingFail}|${MARKERS.guestPingSkip})\\r?\\n`,
        "m",
      ),
      deadline,
    );
    if (!verdict) {
      throw g.fail(
        `no guest ping verdict (${MARKERS.guestPingOk}/${MARKERS.guestPingFail}) ` +
          (g.exited ? "before QEMU exited" : `within ${opts.timeoutMs} ms`) +
          `\n--- host ping ---\n${hostPing}`,
      );
    }
    const idle = !!(await g.wait(new RegExp(`^${MARKERS.idle}\\r?\\n`, "m"), Date.now() + 2000));
    if (opts.whileIdle) {
      if (!idle) throw g.fail(`no ${MARKERS.idle} after the pings`);
      await opts.whileIdle({
        send: (line) => g.send(line),
        wait: (re, ms, from) => g.wait(re, Math.min(deadline, Date.now() + ms), from),
        get serial() {
          return g.serial;
        },
      });
    }
    const serial = g.serial;
    const readyAt = serial.indexOf(readyLine);
    const guestPingText = serial.slice(readyAt, serial.indexOf(verdict[1]!, readyAt));
    result = {
      bootMs,
      hostPing,
      hostPingOk: pingSuccess && hostLossPercent === 0,
      hostLossPercent,
      hostRttsMs: parsePingRtts(hostPing),
      guestPingOk: verdict[1] === MARKERS.guestPingOk,
      guestRttsMs: parsePingRtts(guestPingText),
      readyLine,
    };
  } catch (e) {
    const { status } = await g.stop();
    if (e instanceof QemuRunError) {
      e.status = status;
      throw e;
    }
    throw new QemuRunError(`runQemuPing failed: ${e}`, g.serial, g.stderr);
  }
  const { stoppedBy, status } = await g.stop();
  return { ...result, serial: g.serial, stderr: g.stderr, stoppedBy, status };
}

// ---------------------------------------------------------------------------
// namespace helpers for privileged tests

async function run(cmd: string, ...args: string[]): Promise<string> {
  const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${text}`);
  return text;
}

/** A throwaway network namespace holding bridge `br0` with an address. */
export interface TestNetns {
  /** Namespace name (`vmbguest-<pid>-<random>`). */
  name: string;
  /** Bridge name inside it. */
  bridge: string;
  /** Delete the namespace (idempotent; kills nothing: stop QEMU first). */
  remove(): Promise<void>;
}

/**
 * Create a fresh namespace `vmbguest-<pid>-<rand>` with `lo` up and bridge
 * `bridge` (default br0, STP off) holding `address` (default 10.0.77.1/24).
 * Call `remove()` in a `finally`.
 */
export async function createTestNetns(
  opts: { bridge?: string; address?: string } = {},
): Promise<TestNetns> {
  const name = `vmbguest-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const bridge = opts.bridge ?? "br0";
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    await run("ip", "netns", "delete", name);
  };
  await run("ip", "netns", "add", name);
  try {
    await run("ip", "-n", name, "link", "set", "lo", "up");
    await run("ip", "-n", name, "link", "add", bridge, "type", "bridge", "stp_state", "0");
    await run("ip", "-n", name, "addr", "add", opts.address ?? "10.0.77.1/24", "dev", bridge);
    await run("ip", "-n", name, "link", "set", bridge, "up");
  } catch (e) {
    await remove().catch(() => {});
    throw e;
  }
  return { name, bridge, remove };
}

/**
 * Prefix argv running the rest of the command inside `netns` with a private
 * `/etc/qemu/bridge.conf` containing `bridgeConf`: a tmpfs is mounted on
 * `scratchDir` (an existing, empty directory; the caller removes it) and an
 * overlay of /etc is mounted in a private mount namespace, so the real /etc is
 * never written. The last element of the prefix is followed by the QEMU argv.
 */
export function privateEtcQemuPrefix(
  netns: string,
  scratchDir: string,
  bridgeConf: string,
): string[] {
  const script = [
    "set -e",
    'T="$1"; CONF="$2"; shift 2',
    'mount -t tmpfs -o mode=0755 vmb-etc-qemu "$T"',
    'mkdir "$T/u" "$T/w"',
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$T/u,workdir=$T/w" /etc',
    "mkdir -p /etc/qemu",
    'printf "%s" "$CONF" > /etc/qemu/bridge.conf',
    "chmod 0644 /etc/qemu/bridge.conf",
    'exec "$@"',
  ].join("\n");
  return [
    "ip",
    "netns",
    "exec",
    netns,
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    script,
    "vmb-etc-qemu",
    scratchDir,
    bridgeConf,
  ];
}
