// A real libvirt in session mode (qemu:///session, the mode that runs qemu-bridge-helper) as an
// unprivileged user, inside a test's network namespace: libvirtd from Debian's libvirt-daemon,
// a private $HOME and XDG directories, `bridge_helper` pointing at the helper under test in its
// session qemu.conf, and one transient domain booting the test guest with
// `<interface type='bridge'>`. libvirt, not QEMU, then runs the helper (`--use-vnet --br=BR
// --fd=N`), receives the tap and hands it to QEMU as `-netdev tap,fd=N`. Needs root (to enter
// the namespace and become the user).

import { NetNs } from "./ns.ts";
import type { GuestImage } from "./guest.ts";
import { guestAppend } from "./guest.ts";

/** The libvirt programs the test runs. */
export const LIBVIRT_PROGRAMS = ["libvirtd", "virsh"] as const;

/** How to run the session. */
export interface LibvirtSessionOptions {
  /** The namespace the session (and so the bridge) lives in. */
  ns: NetNs;
  /** argv prefix that becomes the unprivileged user in `ns` (from sandbox()). */
  prefix: string[];
  /** A directory the user owns: $HOME and the XDG directories go there. */
  home: string;
  /** The `bridge_helper` of the session's qemu.conf. */
  helper: string;
  /** The domain's `<source bridge=.../>`. */
  bridge: string;
  /** Guest kernel and initrd, readable by the user. */
  guest: GuestImage;
  /** Guest MAC. */
  mac?: string;
  /** Called once the guest printed its idle marker (the VM is up), before it is destroyed. */
  whileRunning?: () => Promise<void>;
  /** Overall bound (ms). */
  timeoutMs?: number;
}

/** What a session run saw. */
export interface LibvirtSessionRun {
  /** `virsh create`'s exit status. */
  created: boolean;
  /** What virsh printed (stdout and stderr) for the create. */
  createOutput: string;
  /** The guest's serial console (a file libvirt wrote). */
  serial: string;
  /** The guest printed its idle marker. */
  booted: boolean;
  /** libvirtd's log, for failure messages. */
  libvirtdLog: string;
  /** Processes still in the namespace after the session was stopped (should be none). */
  leftover: string[];
}

const NAME = "vmbtest";

function domainXml(o: LibvirtSessionOptions, serial: string): string {
  const esc = (s: string) =>
    s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/'/g, "&apos;").replace(/"/g, "&quot;");
  const mac = o.mac ?? "52:54:00:12:34:56";
  return `<domain type='qemu'>
  <name>${NAME}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${esc(o.guest.kernel)}</kernel>
    <initrd>${esc(o.guest.initrd)}</initrd>
    <cmdline>${esc(guestAppend({ mac, timeoutS: 120 }))}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='bridge'>
      <source bridge='${esc(o.bridge)}'/>
      <mac address='${mac}'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'><source path='${esc(serial)}'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

/**
 * The user's part, a shell script: start libvirtd for the session (QEMU's own output to files,
 * so no virtlogd), create the domain, print `VMB-LV-CREATED rc=N`, wait until the test removes
 * the `hold` file, destroy the domain, stop libvirtd.
 */
function sessionScript(home: string): string {
  return `
export HOME=${home} XDG_RUNTIME_DIR=${home}/run XDG_CONFIG_HOME=${home}/config XDG_CACHE_HOME=${home}/cache
cd "$HOME"
libvirtd --timeout 300 >"$HOME/libvirtd.log" 2>&1 &
lv=$!
i=0
while [ ! -S "$XDG_RUNTIME_DIR/libvirt/libvirt-sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
virsh -q -c qemu:///session create "$HOME/domain.xml" >"$HOME/create.out" 2>&1
echo "VMB-LV-CREATED rc=$?"
while [ -e "$HOME/hold" ]; do sleep 0.1; done
virsh -q -c qemu:///session destroy ${NAME} >/dev/null 2>&1
kill $lv
wait $lv
echo VMB-LV-DONE
`;
}

async function readOr(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

/** The user's processes in the namespace, as `pid comm`. */
async function userPidsIn(ns: NetNs, uid: number): Promise<string[]> {
  const out = await new Deno.Command("ip", { args: ["netns", "pids", ns.name], stderr: "null" })
    .output();
  const pids = new TextDecoder().decode(out.stdout).split(/\s+/).filter((p) => /^\d+$/.test(p));
  const found: string[] = [];
  for (const p of pids) {
    try {
      if ((await Deno.stat(`/proc/${p}`)).uid !== uid) continue;
    } catch {
      continue; // gone
    }
    found.push(`${p} ${(await readOr(`/proc/${p}/comm`)).trim()}`);
  }
  return found;
}

/**
 * Runs the session: creates the domain, waits for the guest to come up (or for the create to
 * fail), calls `whileRunning`, then destroys the domain and stops libvirtd. Whatever of the
 * user's is still running in the namespace afterwards is reported in `leftover` and killed.
 */
export async function runLibvirtSession(o: LibvirtSessionOptions): Promise<LibvirtSessionRun> {
  const home = o.home;
  for (const d of ["run", "config/libvirt", "cache"]) {
    await Deno.mkdir(`${home}/${d}`, { recursive: true, mode: 0o700 });
  }
  // The session's qemu.conf: our helper, and QEMU's output straight to files (no virtlogd, a
  // daemon that would outlive the test).
  await Deno.writeTextFile(
    `${home}/config/libvirt/qemu.conf`,
    `bridge_helper = "${o.helper}"\nstdio_handler = "file"\n`,
  );
  const serial = `${home}/serial.log`;
  await Deno.writeTextFile(`${home}/domain.xml`, domainXml(o, serial));
  await Deno.writeTextFile(`${home}/hold`, "");
  const uid = (await Deno.stat(home)).uid!;
  await chownTree(home, uid);

  const deadline = Date.now() + (o.timeoutMs ?? 180_000);
  const child = new Deno.Command(o.prefix[0]!, {
    args: [...o.prefix.slice(1), "sh", "-c", sessionScript(home)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const reading = (async () => {
    for await (const c of child.stdout.pipeThrough(new TextDecoderStream())) out += c;
  })();
  const errText = new Response(child.stderr).text();
  const until = async (done: () => boolean | Promise<boolean>) => {
    while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  };
  let created = false;
  let booted = false;
  try {
    await until(() => /VMB-LV-CREATED rc=\d+/.test(out));
    created = /VMB-LV-CREATED rc=0\b/.test(out);
    if (created) {
      await until(async () => /^VMB-IDLE/m.test(await readOr(serial)));
      booted = /^VMB-IDLE/m.test(await readOr(serial));
      if (booted) await o.whileRunning?.();
    }
  } finally {
    await Deno.remove(`${home}/hold`).catch(() => {});
    const stopped = await Promise.race([
      child.status.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 30_000)),
    ]);
    if (!stopped) child.kill("SIGKILL");
    await child.status;
    await reading;
  }
  // Give the kernel a moment to reap, then report and kill what is left in the namespace.
  await new Promise((r) => setTimeout(r, 200));
  const leftover = await userPidsIn(o.ns, uid);
  for (const l of leftover) {
    try {
      Deno.kill(Number(l.split(" ")[0]), "SIGKILL");
    } catch { /* gone */ }
  }
  return {
    created,
    createOutput: await readOr(`${home}/create.out`) + (await errText),
    serial: await readOr(serial),
    booted,
    libvirtdLog: await readOr(`${home}/libvirtd.log`),
    leftover,
  };
}

async function chownTree(path: string, uid: number): Promise<void> {
  await Deno.chown(path, uid, uid);
  const st = await Deno.lstat(path);
  if (!st.isDirectory) return;
  for await (const e of Deno.readDir(path)) await chownTree(`${path}/${e.name}`, uid);
}
