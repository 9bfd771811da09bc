/**
 * Tiny Linux guest for network tests: the host's Debian kernel plus a
 * gzip'd cpio (newc) initramfs containing /bin/busybox (busybox-static), the
 * virtio-net driver stack taken from /lib/modules, and a busybox `sh` /init.
 *
 * Everything is built in TypeScript (cpio writer + `CompressionStream`), so no
 * tool beyond Debian 12 + qemu-system-x86 + linux-image-amd64 + busybox-static
 * is needed. Results are cached by a content key under `build/guest/`.
 *
 * Guest protocol (serial console, one marker per line):
 *
 * | marker                         | meaning                                        |
 * | ------------------------------ | ---------------------------------------------- |
 * | `VMB-INIT uptime=<s>`          | /init started                                  |
 * | `VMB-INSMOD-FAIL <module>`     | a module failed to load (boot continues)       |
 * | `VMB-NO-ETH0`                  | no NIC appeared within ~5 s                    |
 * | `VMB-READY <ip> iface=.. ...`  | NIC up and addressed; host may ping `<ip>` now |
 * | `VMB-GUEST-PING-OK`            | `ping -c N -W 2 <peer>` from the guest worked  |
 * | `VMB-GUEST-PING-FAIL`          | ... it did not                                 |
 * | `VMB-GUEST-PING-SKIP`          | `vmb.peer=none`                                |
 * | `VMB-IDLE`                     | guest waits for `vmb-poweroff` on the console  |
 * | `VMB-POWEROFF`                 | guest got `vmb-poweroff` and powers off        |
 * | `VMB-WATCHDOG-POWEROFF`        | `vmb.timeout` seconds elapsed; powering off    |
 * | `VMB-TCP-LISTEN <port>`        | `vmb-tcp-recv PORT` on the console: listening  |
 * | `VMB-TCP-RECV bytes=N sha256=H` | ... one connection read to EOF into /tmp/rx  |
 * | `VMB-TCP-SENT rc=N t0= t1=`    | `vmb-tcp-send IP PORT`: /tmp/rx sent (uptimes) |
 * | `VMB-TCP-MADE bytes=N sha256=H` | `vmb-tcp-make N`: N random bytes in /tmp/rx   |
 * | `VMB-PING-DONE <ip> rc=N`      | `vmb-ping IP N`: `ping -c N -W 2 IP` ended     |
 *
 * Kernel command line parameters read by /init (all optional):
 * `vmb.ip=10.0.77.2/24`, `vmb.peer=10.0.77.1` (or `none`), `vmb.mac=<mac>`
 * (pick the NIC with this MAC instead of eth0), `vmb.pingcount=3`,
 * `vmb.timeout=<seconds>` (self power-off watchdog, 0 = off).
 *
 * @module
 */

import { readModulesInLoadOrder } from "./kmod.ts";

/** Bump when the initramfs layout or /init changes in a way not covered by the key. */
const GUEST_FORMAT = "vmb-guest-v2";

/** Guest MAC used by {@linkcode guestCommandLine} unless overridden. */
export const DEFAULT_GUEST_MAC = "52:54:00:12:34:56";
/** Guest address (with prefix length) used unless overridden. */
export const DEFAULT_GUEST_IP = "10.0.77.2/24";
/** Address the guest pings (the bridge's address in the test namespace). */
export const DEFAULT_PEER_IP = "10.0.77.1";

/** Serial console markers printed by the guest's /init. */
export const MARKERS = {
  init: "VMB-INIT",
  insmodFail: "VMB-INSMOD-FAIL",
  noEth0: "VMB-NO-ETH0",
  ready: "VMB-READY",
  guestPingOk: "VMB-GUEST-PING-OK",
  guestPingFail: "VMB-GUEST-PING-FAIL",
  guestPingSkip: "VMB-GUEST-PING-SKIP",
  idle: "VMB-IDLE",
  poweroff: "VMB-POWEROFF",
  watchdog: "VMB-WATCHDOG-POWEROFF",
} as const;

/** Line to write to QEMU's stdin (the guest console) to power the guest off. */
export const POWEROFF_COMMAND = "vmb-poweroff";

/**
 * Modules (by name) the guest needs; what they depend on, and the load order, come from the
 * modules' own `depends=` metadata (tests/_support/kmod.ts).
 */
export const ROOT_MODULES = ["virtio_pci", "virtio_net"] as const;

/** Paths of a built guest. */
export interface GuestImage {
  /** Kernel image (copy of /boot/vmlinuz-<version>). */
  kernel: string;
  /** gzip'd newc cpio initramfs. */
  initrd: string;
}

/** Where to take the guest's ingredients from (defaults: newest host kernel). */
export interface BuildGuestOptions {
  /** Kernel image; default: newest `/boot/vmlinuz-*` that has a `/lib/modules/<ver>`. */
  kernel?: string;
  /** Module tree; default: `/lib/modules/<version of kernel>`. */
  modulesDir?: string;
  /** Static busybox; default: `/bin/busybox` (falls back to `/bin/busybox-static`). */
  busybox?: string;
}

const REPO_ROOT = new URL("../../", import.meta.url);

/** Default cache root: `<repo>/build/guest`. */
export function defaultGuestDir(): string {
  return new URL("build/guest", REPO_ROOT).pathname;
}

/**
 * Build (or reuse from cache) the test guest.
 *
 * The cache entry lives in `<outDir>/<kernel-version>-<key>/` where `key` is a
 * SHA-256 over the kernel, busybox, each module's bytes and the /init script.
 */
export async function buildGuest(
  outDir: string = defaultGuestDir(),
  options: BuildGuestOptions = {},
): Promise<GuestImage> {
  const { kernel, version } = await locateKernel(options.kernel);
  const modulesDir = options.modulesDir ?? `/lib/modules/${version}`;
  const busybox = options.busybox ?? await firstExisting(["/bin/busybox", "/bin/busybox-static"]);
  const { modules, builtin } = await readModulesInLoadOrder(modulesDir, ROOT_MODULES);
  const init = initScript(modules.map((m) => m.name));

  const kernelBytes = await Deno.readFile(kernel);
  const busyboxBytes = await Deno.readFile(busybox);
  const moduleBytes = modules.map((m) => m.bytes);

  const keyParts: string[] = [
    GUEST_FORMAT,
    await sha256Hex(kernelBytes),
    await sha256Hex(busyboxBytes),
    await sha256Hex(new TextEncoder().encode(init)),
  ];
  for (const [i, m] of modules.entries()) keyParts.push(m.name, await sha256Hex(moduleBytes[i]!));
  const key = (await sha256Hex(new TextEncoder().encode(keyParts.join("\n")))).slice(0, 16);

  const dir = `${outDir}/${version}-${key}`;
  const image: GuestImage = { kernel: `${dir}/vmlinuz`, initrd: `${dir}/initrd.img` };
  if (await exists(`${dir}/manifest.json`)) return image;

  const cpio = new CpioWriter();
  for (const d of ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp"]) {
    cpio.dir(d);
  }
  for (const d of ["etc", "root", "lib", "lib/modules"]) cpio.dir(d);
  cpio.charDev("dev/console", 5, 1, 0o600);
  cpio.charDev("dev/null", 1, 3, 0o666);
  cpio.file("bin/busybox", busyboxBytes, 0o755);
  cpio.symlink("bin/sh", "busybox");
  for (const [i, m] of modules.entries()) cpio.file(`lib/modules/${m.name}.ko`, moduleBytes[i]!);
  cpio.file("init", new TextEncoder().encode(init), 0o755);
  const initrd = await gzip(cpio.finish());

  await Deno.mkdir(outDir, { recursive: true });
  const tmp = `${outDir}/.tmp-${key}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.mkdir(tmp, { mode: 0o755 });
  try {
    await Deno.chmod(tmp, 0o755);
    await Deno.writeFile(`${tmp}/vmlinuz`, kernelBytes, { mode: 0o644 });
    await Deno.writeFile(`${tmp}/initrd.img`, initrd, { mode: 0o644 });
    await Deno.writeTextFile(`${tmp}/init`, init, { mode: 0o644 });
    const manifest = {
      format: GUEST_FORMAT,
      key,
      kernel,
      version,
      busybox,
      modules: modules.map((m) => ({ name: m.name, path: m.path })),
      builtin,
    };
    await Deno.writeTextFile(`${tmp}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n", {
      mode: 0o644,
    });
    try {
      await Deno.rename(tmp, dir);
    } catch (e) {
      // A concurrent builder won the race; its result is identical by construction.
      if (!(await exists(`${dir}/manifest.json`))) throw e;
      await Deno.remove(tmp, { recursive: true });
    }
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  return image;
}

/** Options for {@linkcode guestAppend} / {@linkcode guestCommandLine}. */
export interface GuestParams {
  /** Guest address with prefix length (default {@linkcode DEFAULT_GUEST_IP}). */
  ip?: string;
  /** Address the guest pings, or `"none"` (default {@linkcode DEFAULT_PEER_IP}). */
  peer?: string;
  /** Guest NIC MAC (default {@linkcode DEFAULT_GUEST_MAC}). */
  mac?: string;
  /** Pings sent by the guest (default 3). */
  pingCount?: number;
  /** Guest powers itself off after this many seconds (0/undefined = never). */
  timeoutS?: number;
}

/** Kernel command line for the guest. */
export function guestAppend(p: GuestParams = {}): string {
  const parts = [
    "console=ttyS0",
    "panic=-1",
    "quiet",
    `vmb.ip=${p.ip ?? DEFAULT_GUEST_IP}`,
    `vmb.peer=${p.peer ?? DEFAULT_PEER_IP}`,
    `vmb.mac=${(p.mac ?? DEFAULT_GUEST_MAC).toLowerCase()}`,
    `vmb.pingcount=${p.pingCount ?? 3}`,
  ];
  if (p.timeoutS) parts.push(`vmb.timeout=${Math.ceil(p.timeoutS)}`);
  return parts.join(" ");
}

/** Options for {@linkcode guestCommandLine}. */
export interface GuestCommandLineOptions extends GuestParams {
  /**
   * Value for `-netdev`, e.g. `bridge,id=n0,br=br0,helper=/usr/lib/qemu/qemu-bridge-helper`
   * (must use `id=n0`), or a whole `-nic VALUE` / `-net VALUE` spelling.
   */
  netdev: string;
  /** Kernel + initrd from {@linkcode buildGuest}. */
  guest: GuestImage;
  /** QEMU binary (default `qemu-system-x86_64`). */
  qemu?: string;
  /** Guest RAM in MiB (default 256). */
  memoryMb?: number;
  /** Extra arguments appended at the end. */
  extraArgs?: string[];
}

/**
 * QEMU argv (binary first) booting the guest with one virtio-net NIC on `-netdev`.
 * TCG only, no display, serial console on stdio, exits instead of rebooting.
 */
export function guestCommandLine(o: GuestCommandLineOptions): string[] {
  const mac = o.mac ?? DEFAULT_GUEST_MAC;
  return [
    o.qemu ?? "qemu-system-x86_64",
    "-nodefaults",
    "-accel",
    "tcg",
    "-m",
    String(o.memoryMb ?? 256),
    "-display",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-kernel",
    o.guest.kernel,
    "-initrd",
    o.guest.initrd,
    "-append",
    guestAppend(o),
    ...nicArgs(o.netdev, mac),
    ...(o.extraArgs ?? []),
  ];
}

/**
 * The NIC options for `netdev`: a `-netdev` value (with a virtio-net-pci device on it), or the
 * whole `-nic VALUE` / `-net VALUE` spelling, for which the NIC model and MAC are added.
 * `romfile=` (or the global property) skips the iPXE option ROM: faster, and no ipxe-qemu needed.
 */
function nicArgs(netdev: string, mac: string): string[] {
  if (netdev.startsWith("-nic ")) {
    return [
      "-nic",
      `${netdev.slice(5)},model=virtio-net-pci,mac=${mac}`,
      "-global",
      "virtio-net-pci.romfile=",
    ];
  }
  if (netdev.startsWith("-net ")) {
    return [
      "-net",
      `nic,model=virtio-net-pci,macaddr=${mac}`,
      "-net",
      netdev.slice(5),
      "-global",
      "virtio-net-pci.romfile=",
    ];
  }
  return ["-netdev", netdev, "-device", `virtio-net-pci,netdev=n0,mac=${mac},romfile=`];
}

// ---------------------------------------------------------------------------
// /init

function initScript(modules: string[]): string {
  return `#!/bin/busybox sh
# Generated by tests/_support/guest.ts (${GUEST_FORMAT}). Do not edit.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "VMB-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

for m in ${modules.join(" ")}; do
  insmod "/lib/modules/$m.ko" || echo "VMB-INSMOD-FAIL $m"
done

IP=${DEFAULT_GUEST_IP}
PEER=${DEFAULT_PEER_IP}
MAC=
PINGCOUNT=3
TIMEOUT=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmb.ip=*) IP="\${arg#vmb.ip=}" ;;
    vmb.peer=*) PEER="\${arg#vmb.peer=}" ;;
    vmb.mac=*) MAC="\${arg#vmb.mac=}" ;;
    vmb.pingcount=*) PINGCOUNT="\${arg#vmb.pingcount=}" ;;
    vmb.timeout=*) TIMEOUT="\${arg#vmb.timeout=}" ;;
  esac
done

if [ "$TIMEOUT" -gt 0 ] 2>/dev/null; then
  ( sleep "$TIMEOUT"; echo "VMB-WATCHDOG-POWEROFF"; poweroff -f ) &
fi

ip link set lo up

IFACE=
i=0
while [ $i -lt 50 ]; do
  if [ -n "$MAC" ]; then
    for d in /sys/class/net/*; do
      [ "$(cat "$d/address" 2>/dev/null)" = "$MAC" ] && IFACE="\${d##*/}" && break
    done
  elif [ -e /sys/class/net/eth0 ]; then
    IFACE=eth0
  fi
  [ -n "$IFACE" ] && break
  usleep 100000
  i=$((i + 1))
done

if [ -z "$IFACE" ]; then
  echo "VMB-NO-ETH0"
  ls /sys/class/net
else
  ip link set "$IFACE" up
  ip addr add "$IP" dev "$IFACE"
  i=0
  while [ $i -lt 50 ] && [ "$(cat /sys/class/net/$IFACE/carrier 2>/dev/null)" != 1 ]; do
    usleep 100000
    i=$((i + 1))
  done
  echo "VMB-READY \${IP%/*} iface=$IFACE mac=$(cat /sys/class/net/$IFACE/address) carrier=$(cat /sys/class/net/$IFACE/carrier 2>/dev/null) uptime=$(cut -d' ' -f1 /proc/uptime)"
  if [ "$PEER" = none ]; then
    echo "VMB-GUEST-PING-SKIP"
  elif ping -c "$PINGCOUNT" -W 2 "$PEER"; then
    echo "VMB-GUEST-PING-OK"
  else
    echo "VMB-GUEST-PING-FAIL"
  fi
fi

# TCP over busybox nc, driven from the console: receive one connection into /tmp/rx, or send
# /tmp/rx; the listener's stdin is a FIFO held open, since nc stops at stdin's EOF.
tcp_recv() {
  case "$1" in ''|*[!0-9]*) echo "VMB-TCP-FAIL bad port"; return ;; esac
  rm -f /tmp/rx /tmp/rxin; mkfifo /tmp/rxin
  ( exec 3<>/tmp/rxin; nc -l -p "$1" <&3 >/tmp/rx
    echo "VMB-TCP-RECV bytes=$(wc -c </tmp/rx) sha256=$(sha256sum /tmp/rx | cut -d' ' -f1)" ) &
  i=0
  while [ $i -lt 50 ] && ! netstat -ltn 2>/dev/null | grep -q ":$1 "; do
    usleep 100000; i=$((i + 1))
  done
  echo "VMB-TCP-LISTEN $1"
}
tcp_make() {
  case "$1" in ''|*[!0-9]*) echo "VMB-TCP-FAIL bad size"; return ;; esac
  head -c "$1" /dev/urandom >/tmp/rx
  echo "VMB-TCP-MADE bytes=$(wc -c </tmp/rx) sha256=$(sha256sum /tmp/rx | cut -d' ' -f1)"
}
guest_ping() {
  case "$1" in ''|*[!0-9.]*) echo "VMB-PING-DONE bad-address rc=2"; return ;; esac
  case "$2" in ''|*[!0-9]*) echo "VMB-PING-DONE $1 rc=2"; return ;; esac
  ping -c "$2" -W 2 "$1"
  echo "VMB-PING-DONE $1 rc=$?"
}
tcp_send() {
  case "$2" in ''|*[!0-9]*) echo "VMB-TCP-FAIL bad port"; return ;; esac
  ( t0=$(cut -d' ' -f1 /proc/uptime); nc -w 10 "$1" "$2" </tmp/rx; rc=$?
    echo "VMB-TCP-SENT rc=$rc t0=$t0 t1=$(cut -d' ' -f1 /proc/uptime)" ) &
}

echo "VMB-IDLE"
while :; do
  if read -r cmd; then
    case "$cmd" in
      *${POWEROFF_COMMAND}*) echo "VMB-POWEROFF"; sync; poweroff -f ;;
      *"vmb-tcp-recv "*) tcp_recv \${cmd#*vmb-tcp-recv} ;;
      *"vmb-tcp-send "*) tcp_send \${cmd#*vmb-tcp-send} ;;
      *"vmb-tcp-make "*) tcp_make \${cmd#*vmb-tcp-make} ;;
      *"vmb-ping "*) guest_ping \${cmd#*vmb-ping} ;;
    esac
  else
    sleep 3600
  fi
done
`;
}

// ---------------------------------------------------------------------------
// kernel + modules

async function locateKernel(explicit?: string): Promise<{ kernel: string; version: string }> {
  if (explicit) {
    const base = explicit.slice(explicit.lastIndexOf("/") + 1);
    return { kernel: explicit, version: base.replace(/^vmlinuz-/, "") };
  }
  const candidates: string[] = [];
  for await (const e of Deno.readDir("/boot")) {
    if (!e.name.startsWith("vmlinuz-")) continue;
    const version = e.name.slice("vmlinuz-".length);
    if (await exists(`/lib/modules/${version}/kernel`)) candidates.push(version);
  }
  candidates.sort(compareVersions);
  const version = candidates.at(-1);
  if (!version) {
    throw new Error(
      "no /boot/vmlinuz-* with a matching /lib/modules/<version>/kernel (install linux-image-amd64)",
    );
  }
  return { kernel: `/boot/vmlinuz-${version}`, version };
}

/** `sort -V`-like comparison. */
export function compareVersions(a: string, b: string): number {
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d/.test(x);
    const ny = /^\d/.test(y);
    if (nx && ny) {
      const d = Number(x) - Number(y);
      if (d !== 0) return d;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------
// cpio "newc" writer

/** Minimal writer for the SVR4 "newc" cpio format (what the kernel's initramfs unpacker reads). */
export class CpioWriter {
  #chunks: Uint8Array[] = [];
  #ino = 1;
  #enc = new TextEncoder();

  /** Directory entry. */
  dir(name: string, mode = 0o755): void {
    this.#entry(name, 0o040000 | mode, new Uint8Array(0), 2);
  }

  /** Regular file. */
  file(name: string, data: Uint8Array, mode = 0o644): void {
    this.#entry(name, 0o100000 | mode, data);
  }

  /** Symbolic link `name -> target`. */
  symlink(name: string, target: string): void {
    this.#entry(name, 0o120000 | 0o777, this.#enc.encode(target));
  }

  /** Character device node. */
  charDev(name: string, major: number, minor: number, mode = 0o600): void {
    this.#entry(name, 0o020000 | mode, new Uint8Array(0), 1, major, minor);
  }

  /** Append the trailer and return the archive. */
  finish(): Uint8Array {
    this.#entry("TRAILER!!!", 0, new Uint8Array(0), 1, 0, 0, 0);
    const total = this.#chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.length;
    }
    this.#chunks = [];
    return out;
  }

  #entry(
    name: string,
    mode: number,
    data: Uint8Array,
    nlink = 1,
    rdevMajor = 0,
    rdevMinor = 0,
    ino = this.#ino++,
  ): void {
    const nameBytes = this.#enc.encode(name + "\0");
    const hex = (n: number) => n.toString(16).padStart(8, "0");
    const header = "070701" +
      [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0]
        .map(hex).join("");
    this.#chunks.push(this.#enc.encode(header), nameBytes, pad(110 + nameBytes.length));
    this.#chunks.push(data, pad(data.length));
  }
}

function pad(len: number): Uint8Array {
  return new Uint8Array((4 - (len % 4)) % 4);
}

// ---------------------------------------------------------------------------
// helpers

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** The SHA-256 of `data` as lower-case hex. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** True when `path` exists (false only for NotFound; other errors throw). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function firstExisting(paths: string[]): Promise<string> {
  for (const p of paths) if (await exists(p)) return p;
  throw new Error(`none of ${paths.join(", ")} exists (install busybox-static)`);
}
