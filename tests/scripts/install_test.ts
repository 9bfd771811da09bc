// The installer end to end (`deno task install-suid`, run with the task's own permissions):
// into a --destdir with --binary (deno compile cannot run here), and once for real inside a
// private mount namespace (tmpfs /usr/local, private /etc/qemu) where setcap and getcap run.
// Needs root: it chowns to root and a group, and makes namespaces.

import assert from "node:assert/strict";
import { DEFAULT_BRIDGE_CONF, SETUID_REFUSAL, USAGE } from "../../scripts/_install_plan.ts";
import { listTree } from "../_support/deno_copy.ts";
import {
  denoSection,
  fakeCompiledHelper,
  helperMetadata,
  storedZip,
  suiNote,
  tinyElf,
} from "../_support/fake_denort.ts";
import { judgeHelperMetadata, readStandaloneMetadata } from "../../scripts/_denort_meta.ts";
import { createHash } from "node:crypto";
import { NetNs, ROOT, rootTest, run, sandbox } from "../_support/ns.ts";
import { rootTempDir } from "../_support/root_tmp.ts";
import { sourceForOthers } from "../_support/readable_source.ts";
import { testGroupFile } from "../_support/groups.ts";

// The installer's default group is kvm, which a fresh machine does not have: the installs below
// run in a mount namespace whose /etc/group has a kvm of the tests' own.
const GROUPS = await testGroupFile("kvm");

/**
 * `deno task install-suid` exactly, with the deno running the tests; the scripts from `root`
 * (default: this checkout).
 */
async function taskArgv(task: string, root = ROOT): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks[task]?.split(" ");
  assert.ok(words && words[0] === "deno", `no task ${task}`);
  return [
    Deno.execPath(),
    ...words.slice(1).map((w) => (w.startsWith("scripts/") ? `${root}/${w}` : w)),
  ];
}

const HELPER = "/usr/local/libexec/qemu-bridge-helper";
const MANIFEST = "/usr/local/share/vm-bridge/install-manifest.json";

/**
 * A stand-in for a compiled helper (deno compile cannot download a denort here): a tiny ELF that
 * answers every probe with the usage line and exit 1, carrying our build's deno compile metadata.
 */
const FAKE_HELPER = fakeCompiledHelper();

/** What a shell script can do: print the usage line. It has no deno compile metadata. */
const USAGE_SCRIPT = `#!/bin/sh\necho '${USAGE}' >&2\nexit 1\n`;

/** A bare Deno runtime in disguise: the usage line without arguments, a version otherwise. */
const FAKE_DENO = `#!/bin/sh
if [ "$1" = --version ]; then echo 'deno 2.9.6 (stable, release, x86_64-unknown-linux-gnu)'; exit 0; fi
echo '${USAGE}' >&2
exit 1
`;

interface Scratch extends AsyncDisposable {
  dir: string;
  destdir: string;
  fake: string;
  fakeDeno: string;
  script: string;
}

async function scratch(): Promise<Scratch> {
  // Under a root-only chain: the installer refuses a DESTDIR below the sticky /tmp.
  const { path: dir } = await rootTempDir("vmb-install-test-");
  const destdir = `${dir}/stage`;
  await Deno.mkdir(destdir);
  const fake = `${dir}/fake-helper`;
  const fakeDeno = `${dir}/fake-deno`;
  const script = `${dir}/usage-script`;
  await Deno.writeFile(fake, FAKE_HELPER, { mode: 0o755 });
  await Deno.writeTextFile(fakeDeno, FAKE_DENO, { mode: 0o755 });
  await Deno.writeTextFile(script, USAGE_SCRIPT, { mode: 0o755 });
  return {
    dir,
    destdir,
    fake,
    fakeDeno,
    script,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function install(...args: string[]) {
  return await withTestGroups([...(await taskArgv("install-suid")), ...args]);
}

/** Runs `argv` in a mount namespace whose /etc/group has the tests' own kvm. */
function withTestGroups(argv: readonly string[]) {
  return run([
    ...["unshare", "-m", "--propagation", "private", "sh", "-c"],
    `${GROUPS.mountLine} && exec "$@"`,
    "sh",
    ...argv,
  ]);
}

/** A group's gid as the installs above see it (kvm: the tests' own). */
function gid(name: string): number {
  return GROUPS.gidOf(name);
}

rootTest(
  "install-suid --destdir --binary: owner, group, mode, setcap line, bridge.conf, manifest",
  async () => {
    await using s = await scratch();
    const r = await install("--destdir", s.destdir, "--binary", s.fake);
    assert.equal(r.code, 0, r.stdout + r.stderr);

    const st = await Deno.stat(`${s.destdir}${HELPER}`);
    assert.equal(st.uid, 0);
    assert.equal(st.gid, gid("kvm"));
    assert.equal(st.mode! & 0o7777, 0o750, "mode 0750, never set-user-ID");
    assert.deepEqual(await Deno.readFile(`${s.destdir}${HELPER}`), FAKE_HELPER);

    const conf = await Deno.stat(`${s.destdir}/etc/qemu/bridge.conf`);
    assert.equal(conf.uid, 0);
    assert.equal(conf.gid, 0);
    assert.equal(conf.mode! & 0o7777, 0o644);
    assert.equal(await Deno.readTextFile(`${s.destdir}/etc/qemu/bridge.conf`), "allow br0\n");

    // Every step is printed; setcap is printed for the packager, last, never run on the stage.
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0]!, /^==> cp /);
    assert.ok(lines.some((l) => l.startsWith("==> verify ")));
    assert.ok(lines.some((l) => l.includes(`install -o root -g kvm -m 0750 `)));
    assert.equal(
      lines.at(-2),
      `==> not run with --destdir; run as root on the installed system: setcap cap_net_admin+ep ${HELPER}`,
    );
    assert.equal(lines.at(-1), "done");
    const getcap = await run(["getcap", `${s.destdir}${HELPER}`]);
    assert.equal(getcap.stdout, "", "setcap ran on the staging root");

    const manifest = JSON.parse(await Deno.readTextFile(`${s.destdir}${MANIFEST}`));
    assert.equal(manifest.helper.path, HELPER);
    assert.deepEqual(manifest.bridgeConf, {
      path: "/etc/qemu/bridge.conf",
      text: DEFAULT_BRIDGE_CONF,
    });
  },
);

rootTest(
  "install-suid never overwrites bridge.conf, and uninstall removes only what it installed",
  async () => {
    await using s = await scratch();
    // An ACL the administrator already had is kept and never recorded as ours.
    await Deno.mkdir(`${s.destdir}/etc/qemu`, { recursive: true });
    await Deno.writeTextFile(`${s.destdir}/etc/qemu/bridge.conf`, "allow lab0\n");
    // Something else of the administrator's next to the helper.
    await Deno.mkdir(`${s.destdir}/usr/local/libexec`, { recursive: true });
    await Deno.writeTextFile(`${s.destdir}/usr/local/libexec/other-tool`, "keep me\n");
    const before = await listTree(s.destdir);

    let r = await install("--destdir", s.destdir, "--binary", s.fake);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /==> keep .*bridge\.conf: it exists and is never overwritten/);
    assert.equal(await Deno.readTextFile(`${s.destdir}/etc/qemu/bridge.conf`), "allow lab0\n");
    // Again: still not overwritten.
    r = await install("--destdir", s.destdir, "--binary", s.fake);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(await Deno.readTextFile(`${s.destdir}/etc/qemu/bridge.conf`), "allow lab0\n");

    r = await install("--destdir", s.destdir, "--uninstall");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(await listTree(s.destdir), before, "uninstall left or took something else");
  },
);

rootTest("uninstall removes our bridge.conf only while it is exactly our default", async () => {
  await using s = await scratch();
  // Unchanged: everything goes, the stage is empty again.
  let r = await install("--destdir", s.destdir, "--binary", s.fake);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  r = await install("--destdir", s.destdir, "--uninstall");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(await listTree(s.destdir), []);

  // Edited by the administrator: kept (with its directory), the rest goes.
  r = await install("--destdir", s.destdir, "--binary", s.fake);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  await Deno.writeTextFile(`${s.destdir}/etc/qemu/bridge.conf`, "allow br0\nallow br1\n");
  r = await install("--destdir", s.destdir, "--uninstall");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /note: keeping .*bridge\.conf: it was edited since it was installed/);
  assert.deepEqual(await listTree(s.destdir), ["etc", "etc/qemu", "etc/qemu/bridge.conf"]);

  // A replaced helper is not ours any more: kept.
  await Deno.remove(`${s.destdir}/etc`, { recursive: true });
  r = await install("--destdir", s.destdir, "--binary", s.fake);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  await Deno.writeTextFile(`${s.destdir}${HELPER}`, "#!/bin/sh\nexit 0\n");
  r = await install("--destdir", s.destdir, "--uninstall");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /note: keeping .*qemu-bridge-helper: it changed since it was installed/);
  assert.ok((await listTree(s.destdir)).includes("usr/local/libexec/qemu-bridge-helper"));
});

rootTest("install-suid --dry-run changes nothing", async () => {
  await using s = await scratch();
  const before = await listTree(s.dir);
  const r = await install("--dry-run", "--destdir", s.destdir, "--binary", s.fake);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.ok(
    r.stdout.split("\n").filter((l) => l !== "").every((l) => /^(would: |dry run: )/.test(l)),
  );
  assert.match(r.stdout, /^would: not run with --destdir; .*setcap cap_net_admin\+ep /m);
  assert.deepEqual(await listTree(s.dir), before);
  // Also for the real system: nothing under /usr/local or /etc/qemu is touched.
  const real = await install("--dry-run", "--binary", s.fake);
  assert.equal(real.code, 0, real.stdout + real.stderr);
  assert.match(
    real.stdout,
    /^would: setcap cap_net_admin\+ep \/usr\/local\/libexec\/qemu-bridge-helper$/m,
  );
  assert.match(real.stdout, /^would: getcap /m);
  assert.equal((await run(["test", "-e", HELPER])).code, 1, "the dry run installed the helper");
});

rootTest("install-suid refuses set-user-ID with one line pointing at SECURITY.md", async () => {
  await using s = await scratch();
  for (const flag of ["--setuid", "--suid"]) {
    const r = await install(flag, "--destdir", s.destdir, "--binary", s.fake);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.equal(r.stderr, `install-suid: ${SETUID_REFUSAL}\n`);
    assert.match(r.stderr, /SECURITY\.md/);
  }
  assert.deepEqual(await listTree(s.destdir), []);
});

rootTest("install-suid refuses a bare Deno runtime, however it gets in", async () => {
  await using s = await scratch();
  // Our build's metadata, but it answers as a runtime does: the probes still catch it.
  const runtime = `${s.dir}/fake-runtime`;
  await Deno.writeFile(
    runtime,
    tinyElf({
      note: suiNote(denoSection(helperMetadata())),
      message: "deno 2.9.6 (stable, release, x86_64-unknown-linux-gnu)\n",
      status: 0,
    }),
    { mode: 0o755 },
  );
  let r = await install("--destdir", s.destdir, "--binary", runtime);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to install .*: `BINARY' printed a Deno version/);
  // The real Deno CLI: no deno compile metadata at all, so it is never even run.
  r = await install("--destdir", s.destdir, "--binary", Deno.execPath());
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /refusing to install .*: No d3n0l4nd note: not an executable built by deno compile$/m,
  );
  // A script that only imitates a runtime's first answer is refused the same way.
  r = await install("--destdir", s.destdir, "--binary", s.fakeDeno);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to install .*: Not an ELF executable$/m);
  // --denort pointing at the CLI: deno compile "succeeds" and embeds our metadata, but the
  // result is the full CLI.
  r = await install("--destdir", s.destdir, "--denort", Deno.execPath());
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stdout,
    /==> \(cd .* && env -i PATH=\S+ HOME=\S+ DENO_DIR=\S+ NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 DENORT_BIN=\S+ \S+ compile --no-code-cache --no-prompt --allow-ffi --v8-flags=--single-threaded,--jitless --preload \.\/guard\.ts --output /,
  );
  assert.match(r.stderr, /refusing to install .*bare Deno runtime/);
  assert.deepEqual(await listTree(s.destdir), [], "something was installed");
});

rootTest(
  "install-suid --binary refuses a script printing the usage line, and builds not exactly ours",
  async () => {
    await using s = await scratch();
    let r = await install("--destdir", s.destdir, "--binary", s.script);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /^install-suid: refusing to install .*: Not an ELF executable$/m);
    const cases: [string, (m: Record<string, unknown>) => void, RegExp][] = [
      ["entry point", (m) => (m.entrypoint_key = "evil.ts"), /the entry point is "evil\.ts"/],
      ["no guard", (m) => (m.preload_modules = []), /the preloaded modules are \[\]/],
      [
        "more permissions",
        (m) => ((m.permissions as Record<string, unknown>).allow_read = []),
        /allow_read is \[\]: only --allow-ffi may be granted/,
      ],
      [
        "prompt",
        (m) => ((m.permissions as Record<string, unknown>).prompt = true),
        /permission prompts are on/,
      ],
      ["code cache", (m) => (m.code_cache_key = 42), /the V8 code cache is on/],
      [
        "V8 flags",
        (m) => (m.v8_flags = ["UNUSED_BUT_NECESSARY_ARG0", "--prof"]),
        /lack --single-threaded; the V8 flags lack --jitless; unexpected V8 flags: \["--prof"\]/,
      ],
    ];
    for (const [what, change, message] of cases) {
      const meta = helperMetadata();
      change(meta);
      const path = `${s.dir}/variant`;
      await Deno.writeFile(path, fakeCompiledHelper(meta), { mode: 0o755 });
      r = await install("--destdir", s.destdir, "--binary", path);
      assert.equal(r.code, 1, `${what}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /refusing to install .*: it is not our helper's build: /, what);
      assert.match(r.stderr, message, what);
    }
    assert.deepEqual(await listTree(s.destdir), [], "something was installed");
  },
);

rootTest(
  "install-suid --denort: compiles in an allow-listed environment, prints and records the denort's sha256",
  async () => {
    await using s = await scratch();
    // A stand-in denort: real `deno compile` appends our real metadata to it.
    const denort = `${s.dir}/denort`;
    const bytes = tinyElf();
    await Deno.writeFile(denort, bytes, { mode: 0o755 });
    const sha = createHash("sha256").update(bytes).digest("hex");
    const caller = `${s.dir}/caller`;
    await Deno.mkdir(caller);
    const r = await withTestGroups([
      "env",
      `DENO_DIR=${caller}/deno-dir`,
      `HOME=${caller}`,
      `XDG_CACHE_HOME=${caller}/cache`,
      "DENO_CERT=/nonexistent.pem",
      "HTTPS_PROXY=http://127.0.0.1:9",
      ...(await taskArgv("install-suid")),
      "--destdir",
      s.destdir,
      "--denort",
      denort,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^    denort ${denort} sha256 ${sha}$`, "m"));
    assert.doesNotMatch(r.stdout, new RegExp(caller));
    const manifest = JSON.parse(await Deno.readTextFile(`${s.destdir}${MANIFEST}`));
    assert.deepEqual(manifest.denort, { source: denort, sha256: sha });
    const installed = await Deno.readFile(`${s.destdir}${HELPER}`);
    assert.deepEqual(judgeHelperMetadata(readStandaloneMetadata(installed)), []);
    // The deno running the installer itself keeps its module cache in the caller's DENO_DIR
    // (sudo's env_reset normally drops it); the compile's download cache must not be there.
    const compileLine = r.stdout.split("\n").find((l) => l.startsWith("==> (cd "));
    assert.match(
      compileLine ?? "",
      / HOME=\/tmp\/vmb-install-\S+\/compile-home DENO_DIR=\S+\/compile-home\/deno-dir /,
    );
    assert.ok(!(await listTree(caller)).some((p) => p.startsWith("deno-dir/dl")));
  },
);

rootTest("a denort planted in the caller's DENO_DIR is never used", async () => {
  await using s = await scratch();
  const caller = `${s.dir}/caller`;
  const zipDir = `${caller}/deno-dir/dl/release/v${Deno.version.deno}`;
  await Deno.mkdir(zipDir, { recursive: true });
  const zip = storedZip("denort", tinyElf());
  await Deno.writeFile(`${zipDir}/denort-x86_64-unknown-linux-gnu.zip`, zip);
  const planted = createHash("sha256").update(zip).digest("hex");
  const r = await withTestGroups([
    "env",
    `DENO_DIR=${caller}/deno-dir`,
    `HOME=${caller}`,
    ...(await taskArgv("install-suid")),
    "--destdir",
    s.destdir,
  ]);
  assert.doesNotMatch(r.stdout, new RegExp(planted), "the planted denort was used");
  if (r.code === 0) {
    // Only with network: a denort downloaded into the installer's private cache.
    const manifest = JSON.parse(await Deno.readTextFile(`${s.destdir}${MANIFEST}`));
    assert.match(manifest.denort.source, /^https:\/\/dl\.deno\.land\//);
    assert.notEqual(manifest.denort.sha256, planted);
  } else {
    assert.match(r.stderr, /^install-suid: deno compile failed .*pass --denort PATH/m);
    assert.deepEqual(await listTree(s.destdir), [], "something was installed");
  }
});

rootTest("install-suid without a kvm group stops and asks for --group", async () => {
  await using s = await scratch();
  const installer = (await taskArgv("install-suid")).join(" ");
  const script = (args: string) =>
    `set -e; grep -v '^kvm:' /etc/group > ${s.dir}/group; mount --bind ${s.dir}/group /etc/group; ` +
    `exec ${installer} --destdir ${s.destdir} --binary ${s.fake} ${args}`;
  let r = await run(["unshare", "-m", "--propagation", "private", "sh", "-c", script("")]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^install-suid: the group kvm does not exist: pass --group GROUP/);
  assert.deepEqual(await listTree(s.destdir), []);
  r = await run([
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    script("--group nogroup"),
  ]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal((await Deno.stat(`${s.destdir}${HELPER}`)).gid, gid("nogroup"));
});

rootTest(
  "install-suid for real (private mount namespace): setcap last, getcap verified; doctor agrees",
  async () => {
    await using s = await scratch();
    await Deno.chmod(s.dir, 0o755);
    await Deno.chmod(s.fake, 0o755);
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const installer = (await taskArgv("install-suid")).join(" ");
    // The doctor runs as uid 65534, who may not be able to enter the checkout: a readable copy.
    const doctor = (await taskArgv("doctor", (await sourceForOthers()).root)).join(" ");
    const sb = await sandbox(ns, {
      tun0666: true,
      setup: `mount -t tmpfs -o mode=0755 vmb-usr-local /usr/local\n${GROUPS.mountLine}`,
    });
    try {
      const kvm = gid("kvm");
      const r = await run([
        ...sb.argv,
        "sh",
        "-c",
        `${installer} --binary ${s.fake} && stat -c '%u %g %a' ${HELPER} && getcap ${HELPER} && ` +
        `cat /etc/qemu/bridge.conf && ` +
        // The doctor as an unprivileged member of the group: every line ok.
        `cd / && echo '--- member' && ` +
        `setpriv --reuid=65534 --regid=65534 --groups=${kvm} ${doctor} --br=br0; echo "doctor $?"; ` +
        // And as one who is not in the group.
        `echo '--- outsider'; ` +
        `setpriv --reuid=65534 --regid=65534 --clear-groups ${doctor} --br=br0; echo "doctor $?"`,
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const lines = r.stdout.trim().split("\n");
      const setcap = lines.findIndex((l) => l === `==> setcap cap_net_admin+ep ${HELPER}`);
      assert.ok(setcap > 0, r.stdout);
      // setcap is the last change; only the read-only getcap check follows it.
      assert.match(lines[setcap + 1]!, /^==> getcap /);
      assert.equal(lines[setcap + 2], `    ${HELPER} cap_net_admin=ep`);
      assert.equal(lines[setcap + 3], "done");
      assert.equal(lines[setcap + 4], `0 ${kvm} 750`);
      assert.equal(lines[setcap + 5], `${HELPER} cap_net_admin=ep`);
      assert.equal(lines[setcap + 6], "allow br0");
      const member = r.stdout.split("--- member\n")[1]!.split("--- outsider\n")[0]!;
      const outsider = r.stdout.split("--- outsider\n")[1]!;
      const memberLines = member.trim().split("\n");
      assert.equal(memberLines.pop(), "doctor 0", member);
      assert.ok(memberLines.every((l) => l.startsWith("ok   ")), member);
      assert.ok(
        memberLines.includes(`ok   ${HELPER} has exactly the file capability cap_net_admin=ep`),
        member,
      );
      assert.match(outsider, /^FAIL you \(uid 65534\) may not run .*; fix: sudo usermod -aG kvm/m);
      assert.match(outsider, /^doctor 1$/m);
    } finally {
      await sb.cleanup();
    }
  },
);

const NOBODY = 65534;

rootTest(
  "install-suid never writes through a symlink planted in a user-owned manifest directory",
  async () => {
    await using s = await scratch();
    const share = `${s.destdir}/usr/local/share/vm-bridge`;
    await Deno.mkdir(share, { recursive: true, mode: 0o755 });
    await Deno.chown(share, NOBODY, NOBODY);
    const victim = `${s.dir}/victim`;
    await Deno.writeTextFile(victim, "root's secret\n", { mode: 0o600 });
    // The installer used to write `<manifest>.vmb-new-<pid>`, then chown, chmod and rename it,
    // following symlinks; in a fresh PID namespace its pid is 1, so the user can predict it.
    await Deno.symlink(victim, `${share}/install-manifest.json.vmb-new-1`);
    const before = await listTree(s.destdir);
    const r = await run([
      "unshare",
      "--pid",
      "--fork",
      ...(await taskArgv("install-suid")),
      "--destdir",
      s.destdir,
      "--binary",
      s.fake,
    ]);
    assert.equal(await Deno.readTextFile(victim), "root's secret\n", "the victim was overwritten");
    assert.equal((await Deno.stat(victim)).mode! & 0o7777, 0o600, "the victim's mode changed");
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /^install-suid: `.*\/usr\/local\/share\/vm-bridge' is owned by uid 65534, not root: /,
    );
    assert.deepEqual(await listTree(s.destdir), before, "something was installed");
  },
);

rootTest("install-suid never creates bridge.conf in a user-owned /etc/qemu", async () => {
  await using s = await scratch();
  await Deno.mkdir(`${s.destdir}/etc/qemu`, { recursive: true, mode: 0o755 });
  await Deno.chown(`${s.destdir}/etc/qemu`, NOBODY, NOBODY);
  const before = await listTree(s.destdir);
  const r = await install("--destdir", s.destdir, "--binary", s.fake);
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /^install-suid: `.*\/etc\/qemu' is owned by uid 65534, not root: /);
  assert.deepEqual(await listTree(s.destdir), before, "something was installed");
});

rootTest(
  "uninstall refuses a manifest naming a path outside the install (/../victim)",
  async () => {
    await using s = await scratch();
    let r = await install("--destdir", s.destdir, "--binary", s.fake);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const victim = `${s.dir}/victim`;
    await Deno.writeTextFile(victim, "root's file\n", { mode: 0o600 });
    const sha = Array.from(
      new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(victim))),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    const manifestPath = `${s.destdir}${MANIFEST}`;
    const manifest = JSON.parse(await Deno.readTextFile(manifestPath));
    manifest.helper = { path: "/../victim", sha256: sha };
    await Deno.writeTextFile(manifestPath, JSON.stringify(manifest)); // root's, 0644 as before
    r = await install("--destdir", s.destdir, "--uninstall");
    assert.ok(await Deno.lstat(victim).then(() => true, () => false), "the victim was deleted");
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /^install-suid: .*install-manifest\.json is not a manifest of this installer: .*`\/\.\.\/victim'/,
    );
    assert.ok((await listTree(s.destdir)).includes("usr/local/libexec/qemu-bridge-helper"));
  },
);

rootTest("uninstall refuses a manifest that root does not own", async () => {
  await using s = await scratch();
  let r = await install("--destdir", s.destdir, "--binary", s.fake);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  await Deno.chown(`${s.destdir}${MANIFEST}`, NOBODY, NOBODY);
  const before = await listTree(s.destdir);
  r = await install("--destdir", s.destdir, "--uninstall");
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /^install-suid: `.*install-manifest\.json' is owned by uid 65534, not root/,
  );
  assert.deepEqual(await listTree(s.destdir), before, "uninstall removed something");
});

rootTest("install-suid --destdir creates a missing DESTDIR, root-owned 0755", async () => {
  await using s = await scratch();
  const destdir = `${s.dir}/new/stage`;
  const r = await install("--destdir", destdir, "--binary", s.fake);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  for (const dir of [`${s.dir}/new`, destdir]) {
    const st = await Deno.lstat(dir);
    assert.ok(st.isDirectory);
    assert.equal(st.uid, 0);
    assert.equal(st.gid, 0);
    assert.equal(st.mode! & 0o7777, 0o755, dir);
  }
  assert.ok((await listTree(destdir)).includes("usr/local/libexec/qemu-bridge-helper"));
});

rootTest(
  "install-suid refuses a DESTDIR below a world-writable directory, even sticky /tmp",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "vmb-install-tmp-" }); // under /tmp (1777)
    try {
      await Deno.chmod(dir, 0o755);
      await using s = await scratch();
      const r = await install("--destdir", `${dir}/stage`, "--binary", s.fake);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(
        r.stderr,
        /^install-suid: `\/tmp' is writable by group or others \(mode 1777\): /,
      );
      assert.deepEqual(await listTree(dir), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
