// Builds the 32-bit Linux guest that v86 boots: Debian's 686 kernel and busybox-static for i386,
// fetched with apt into private directories (the machine's dpkg architectures are never changed),
// and a cpio initramfs written here in TypeScript. Nothing is committed: everything lands
// in build/v86-guest/. Run `deno run -A examples/v86/build-guest.ts` to build (or check) it.

import { CpioWriter, exists, sha256Hex } from "../../tests/_support/guest.ts";
import { type LoadableModule, readModulesInLoadOrder } from "../../tests/_support/kmod.ts";

/** Bump when /init or the initramfs layout changes in a way the cache key does not see. */
const FORMAT = "vmb-v86-guest-v2";

/** Where the guest and its ingredients are kept: `<repo>/build/v86-guest`. */
export const V86_GUEST_DIR: string = new URL("../../build/v86-guest", import.meta.url).pathname;

/** Debian's SeaBIOS image (package `seabios`); the npm package `v86` ships no BIOS. */
export const SEABIOS = "/usr/share/seabios/bios-256k.bin";

/** The guest's fixed MAC unless told otherwise (v86 would pick a random one at every boot). */
export const GUEST_MAC = "52:54:00:00:77:02";
/** The guest's address and prefix length unless told otherwise. */
export const GUEST_IP = "10.0.77.2/24";
/** The port of the guest's HTTP server (busybox httpd serving /srv). */
export const GUEST_HTTP_PORT = 8080;

/** Serial console markers printed by the guest's /init, one per line. */
export const MARKERS = {
  /** `VMB-INIT uptime=<s>`: /init started. */
  init: "VMB-INIT",
  /** `VMB-INSMOD-FAIL <module>`: a module did not load (boot goes on). */
  insmodFail: "VMB-INSMOD-FAIL",
  /** `VMB-NO-ETH0`: no NIC appeared. */
  noEth0: "VMB-NO-ETH0",
  /** `VMB-READY ip=<ip> mac=<mac> uptime=<s>`: addressed, announced, serving; ping it now. */
  ready: "VMB-READY",
  /** `VMB-POWEROFF`: the guest got {@linkcode POWEROFF_COMMAND} and powers off. */
  poweroff: "VMB-POWEROFF",
} as const;

/** Line to type on the guest's serial console to power it off. */
export const POWEROFF_COMMAND = "vmb-poweroff";

/**
 * The NIC models v86 emulates, and the driver each needs. What those drivers depend on, and the
 * order to load them in, comes from the kernel package's modules themselves (their `depends=`,
 * see {@linkcode v86GuestModules}): a hand-written list drifts with Debian's kernel updates.
 */
export const NIC_DRIVERS = {
  virtio: ["virtio_pci", "virtio_net"],
  ne2k: ["ne2k_pci"],
} as const;

/** A NIC model v86 emulates. */
export type V86Nic = keyof typeof NIC_DRIVERS;

/** A built guest. */
export interface V86Guest {
  /** The i386 kernel (bzImage). */
  kernel: string;
  /** The newc initramfs (not compressed). */
  initrd: string;
  /** The kernel release, for example `"6.1.0-50-686"`. */
  release: string;
  /** The file the guest serves on {@linkcode GUEST_HTTP_PORT}: URL path, size and SHA-256. */
  blob: { path: string; size: number; sha256: string };
}

/** Options for {@linkcode buildV86Guest}. */
export interface BuildV86GuestOptions {
  /** Cache directory (default {@linkcode V86_GUEST_DIR}). */
  dir?: string;
  /** Progress messages (default: none). */
  log?: (line: string) => void;
}

/**
 * Returns the guest, building it first if it is not in the cache. The two Debian packages are
 * downloaded once (this needs the package mirror: do it before entering a network namespace);
 * after that everything works offline and a cached guest costs two `stat`s.
 *
 * Requires `--allow-read`, `--allow-write` and `--allow-run` (apt-get, apt-cache, dpkg-deb).
 *
 * @throws {Error} when a package cannot be fetched or unpacked; the message carries apt's output.
 */
export async function buildV86Guest(options: BuildV86GuestOptions = {}): Promise<V86Guest> {
  const dir = options.dir ?? V86_GUEST_DIR;
  const log = options.log ?? (() => {});
  const debs = await fetchDebs(dir, log);
  // The load order is a function of the kernel package (named by its file), so the key sees
  // /init's template and the package, not the order itself (which needs the package unpacked).
  const template = initScript({ virtio: ["@virtio"], ne2k: ["@ne2k"] });
  const key = (await sha256Hex(
    new TextEncoder().encode(
      [FORMAT, basename(debs.kernel), basename(debs.busybox), template].join("\n"),
    ),
  )).slice(0, 16);
  const release = kernelRelease(debs.kernel);
  const out = `${dir}/${release}-${key}`;
  const guest = { kernel: `${out}/vmlinuz`, initrd: `${out}/initrd.img`, release };
  if (await exists(`${out}/manifest.json`)) return await withBlob(guest, out);

  log(`building the initramfs in ${out}`);
  const tmp = await Deno.makeTempDir({ dir, prefix: ".unpack-" });
  try {
    await must(["dpkg-deb", "-x", debs.kernel, `${tmp}/k`]);
    await must(["dpkg-deb", "-x", debs.busybox, `${tmp}/b`]);
    const nics = await v86GuestModules(`${tmp}/k/lib/modules/${release}`);
    const cpio = new CpioWriter();
    for (const d of ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp"]) {
      cpio.dir(d);
    }
    for (const d of ["etc", "root", "srv", "lib", "lib/modules"]) cpio.dir(d);
    cpio.charDev("dev/console", 5, 1, 0o600);
    cpio.charDev("dev/null", 1, 3, 0o666);
    cpio.file("bin/busybox", await Deno.readFile(`${tmp}/b/bin/busybox`), 0o755);
    cpio.symlink("bin/sh", "busybox");
    const files = new Map<string, Uint8Array>();
    for (const m of [...nics.virtio, ...nics.ne2k]) files.set(m.name, m.bytes);
    for (const [name, bytes] of files) cpio.file(`lib/modules/${name}.ko`, bytes);
    const order = {
      virtio: nics.virtio.map((m) => m.name),
      ne2k: nics.ne2k.map((m) => m.name),
    };
    cpio.file("init", new TextEncoder().encode(initScript(order)), 0o755);
    // Random bytes for the host to download, made here: generating them in the guest took
    // 9 s of emulated CPU.
    const blob = randomBytes(BLOB_BYTES);
    cpio.file("srv/blob", blob);
    // Not compressed: the guest kernel needed 3 s of emulated CPU to inflate a 1.2 MB gzip'd
    // initramfs, and copying the plain archive is almost free.
    const initrd = cpio.finish();

    const stage = `${tmp}/out`;
    await Deno.mkdir(stage);
    await Deno.chmod(stage, 0o755);
    await Deno.copyFile(`${tmp}/k/boot/vmlinuz-${release}`, `${stage}/vmlinuz`);
    await Deno.writeFile(`${stage}/initrd.img`, initrd, { mode: 0o644 });
    const manifest: Manifest = {
      format: FORMAT,
      key,
      release,
      debs,
      modules: order,
      blob: { path: "/blob", size: blob.length, sha256: await sha256Hex(blob) },
    };
    await Deno.writeTextFile(`${stage}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
    try {
      await Deno.rename(stage, out);
    } catch (e) {
      // A concurrent builder won the race; its result is the same by construction.
      if (!(await exists(`${out}/manifest.json`))) throw e;
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return await withBlob(guest, out);
}

interface Manifest {
  format: string;
  key: string;
  release: string;
  debs: Debs;
  /** Per NIC model, the modules /init loads, in that order. */
  modules: Record<V86Nic, string[]>;
  blob: V86Guest["blob"];
}

async function withBlob(guest: Omit<V86Guest, "blob">, out: string): Promise<V86Guest> {
  const m = JSON.parse(await Deno.readTextFile(`${out}/manifest.json`)) as Manifest;
  return { ...guest, blob: m.blob };
}

/** Size of the file the guest serves over HTTP. */
const BLOB_BYTES = 4 * 1024 * 1024;

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  // getRandomValues fills at most 65536 bytes per call.
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** The guest's parameters on the kernel command line. */
export interface V86GuestParams {
  /** Address with prefix length (default {@linkcode GUEST_IP}). */
  ip?: string;
  /** MAC (default {@linkcode GUEST_MAC}). */
  mac?: string;
  /** NIC model whose driver /init loads (default `"virtio"`). */
  nic?: V86Nic;
}

/**
 * The kernel command line: the console on the first serial port, and the options found to boot
 * fastest under v86 (`cryptomgr.notests`: no self-tests; `noisapnp pnpbios=off`: no ISA PnP
 * probing; `ipv6.disable=1`: no DAD and router solicitations on the bridge).
 */
export function guestCmdline(p: V86GuestParams = {}): string {
  return [
    "console=ttyS0",
    "quiet",
    "panic=-1",
    "cryptomgr.notests",
    "noisapnp",
    "pnpbios=off",
    "ipv6.disable=1",
    `vmb.ip=${p.ip ?? GUEST_IP}`,
    `vmb.mac=${(p.mac ?? GUEST_MAC).toLowerCase()}`,
    `vmb.nic=${p.nic ?? "virtio"}`,
  ].join(" ");
}

// ---------------------------------------------------------------------------------------------
// /init

/**
 * The modules each NIC model needs, read from a module tree (`lib/modules/<release>` of the
 * unpacked kernel package), each after every module it depends on.
 *
 * @throws {Error} when a module is missing or its metadata cannot be read.
 */
export async function v86GuestModules(
  modulesDir: string,
): Promise<Record<V86Nic, LoadableModule[]>> {
  // A driver built into the kernel needs no insmod: readModulesInLoadOrder() leaves it out.
  const read = async (nic: V86Nic) =>
    (await readModulesInLoadOrder(modulesDir, NIC_DRIVERS[nic])).modules;
  return { virtio: await read("virtio"), ne2k: await read("ne2k") };
}

function initScript(order: Readonly<Record<V86Nic, readonly string[]>>): string {
  const virtio = order.virtio.join(" ");
  const ne2k = order.ne2k.join(" ");
  return `#!/bin/busybox sh
# Generated by examples/v86/build-guest.ts (${FORMAT}). Do not edit.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "${MARKERS.init} uptime=$(cut -d' ' -f1 /proc/uptime)"

IP=${GUEST_IP}
MAC=${GUEST_MAC}
NIC=virtio
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmb.ip=*) IP="\${arg#vmb.ip=}" ;;
    vmb.mac=*) MAC="\${arg#vmb.mac=}" ;;
    vmb.nic=*) NIC="\${arg#vmb.nic=}" ;;
  esac
done

case "$NIC" in
  ne2k) MODULES="${ne2k}" ;;
  *) MODULES="${virtio}" ;;
esac
for m in $MODULES; do
  insmod "/lib/modules/$m.ko" || echo "${MARKERS.insmodFail} $m"
done

ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done
if [ ! -e /sys/class/net/eth0 ]; then
  echo "${MARKERS.noEth0} $(ls /sys/class/net)"
else
  # A fixed MAC before the link is up: v86 draws a random one at every boot, and a host that
  # kept the last boot's neighbour entry would send to the old MAC.
  ip link set eth0 address "$MAC"
  ip addr add "$IP" dev eth0
  ip link set eth0 up
  i=0
  while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 50 ]; do
    usleep 100000
    i=$((i + 1))
  done
  # Gratuitous ARP: every neighbour table on the bridge learns the (new) MAC at once.
  arping -U -c 1 -I eth0 "\${IP%/*}" >/dev/null 2>&1 &
  httpd -p ${GUEST_HTTP_PORT} -h /srv
  echo "${MARKERS.ready} ip=\${IP%/*} mac=$(cat /sys/class/net/eth0/address) uptime=$(cut -d' ' -f1 /proc/uptime)"
fi

while :; do
  if read -r cmd; then
    case "$cmd" in
      *${POWEROFF_COMMAND}*) echo "${MARKERS.poweroff}"; poweroff -f ;;
      *) sh -c "$cmd" ;;
    esac
  else
    sleep 3600
  fi
done
`;
}

// ---------------------------------------------------------------------------------------------
// Debian packages for i386, fetched without touching the machine's apt or dpkg state

interface Debs {
  kernel: string;
  busybox: string;
}

async function fetchDebs(dir: string, log: (line: string) => void): Promise<Debs> {
  const debDir = `${dir}/debs`;
  const found = await findDebs(debDir);
  if (found) return found;

  await Deno.mkdir(`${dir}/apt/lists/partial`, { recursive: true });
  await Deno.mkdir(`${dir}/apt/cache/archives/partial`, { recursive: true });
  // Own lists and cache, and the architecture set for these commands only: adding i386 to dpkg
  // (dpkg --add-architecture) would change the machine for everyone, and broke apt-get update
  // on our machines. An empty status file keeps the host's installed packages out of it.
  const apt = [
    "-q",
    "-o",
    "APT::Architecture=i386",
    "-o",
    "APT::Architectures=i386",
    "-o",
    `Dir::State::Lists=${dir}/apt/lists`,
    "-o",
    `Dir::Cache=${dir}/apt/cache`,
    "-o",
    "Dir::State::status=/dev/null",
    "-o",
    "Acquire::Languages=none",
    "-o",
    "APT::Sandbox::User=root",
  ];
  log("apt-get update (i386 index, private lists)");
  // It exits non-zero when the security mirror's i386 index is mid-sync; the main index is all
  // we need, and apt-cache below fails clearly if it is missing.
  const update = await run(["apt-get", ...apt, "update"]);
  const depends = await run(["apt-cache", ...apt, "depends", "linux-image-686"]);
  const kernelPkg = /Depends: (linux-image-[0-9][^\s]*-686)\b/.exec(depends.stdout)?.[1];
  if (depends.code !== 0 || kernelPkg === undefined) {
    throw new Error(
      `Cannot resolve linux-image-686 for i386: apt-get update said: ${update.stderr.trim()}` +
        ` ${depends.stderr.trim()}`,
    );
  }
  const stage = `${dir}/debs.tmp-${Deno.pid}`;
  await Deno.remove(stage, { recursive: true }).catch(() => {});
  await Deno.mkdir(stage, { recursive: true });
  log(`apt-get download ${kernelPkg} busybox-static (i386)`);
  const dl = await run(["apt-get", ...apt, "download", kernelPkg, "busybox-static"], stage);
  if (dl.code !== 0) {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
    throw new Error(`apt-get download ${kernelPkg} busybox-static failed: ${dl.stderr.trim()}`);
  }
  await Deno.remove(debDir, { recursive: true }).catch(() => {});
  await Deno.rename(stage, debDir);
  const got = await findDebs(debDir);
  if (!got) throw new Error(`apt-get download left no usable packages in ${debDir}`);
  return got;
}

async function findDebs(debDir: string): Promise<Debs | undefined> {
  let kernel: string | undefined;
  let busybox: string | undefined;
  try {
    for await (const e of Deno.readDir(debDir)) {
      if (/^linux-image-[0-9].*-686_.*_i386\.deb$/.test(e.name)) kernel = `${debDir}/${e.name}`;
      if (/^busybox-static_.*_i386\.deb$/.test(e.name)) busybox = `${debDir}/${e.name}`;
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  return kernel && busybox ? { kernel, busybox } : undefined;
}

/** `linux-image-6.1.0-50-686_6.1.176-1_i386.deb` → `6.1.0-50-686`. */
function kernelRelease(deb: string): string {
  const m = /^linux-image-(.+?)_/.exec(basename(deb));
  if (!m) throw new SyntaxError(`Not a kernel package name: "${basename(deb)}"`);
  return m[1]!;
}

// ---------------------------------------------------------------------------------------------
// small helpers

interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(argv: readonly string[], cwd?: string): Promise<Output> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(cwd ? { cwd } : {}),
    env: { LC_ALL: "C" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function must(argv: readonly string[]): Promise<void> {
  const r = await run(argv);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
}

function basename(p: string): string {
  return p.slice(p.lastIndexOf("/") + 1);
}

if (import.meta.main) {
  const guest = await buildV86Guest({ log: (l) => console.error(`build-guest: ${l}`) });
  console.log(`kernel ${guest.kernel}\ninitrd ${guest.initrd}`);
}
