// The installer end to end (`deno task install-suid`, run with the task's own permissions):
// into a --destdir with --binary (deno compile cannot run here), and once for real inside a
// private mount namespace (tmpfs /usr/local, private /etc/qemu) where setcap and getcap run.
// Needs root: it chowns to root and a group, and makes namespaces.

import assert from "node:assert/strict";
import { DEFAULT_BRIDGE_CONF, SETUID_REFUSAL, USAGE } from "../../scripts/_install_plan.ts";
import { listTree } from "../_support/deno_copy.ts";
import { NetNs, ROOT, rootTest, run, sandbox } from "../_support/ns.ts";
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

/** A stand-in for a compiled helper: answers every probe with the usage line and exit 1. */
const FAKE_HELPER = `#!/bin/sh\necho '${USAGE}' >&2\nexit 1\n`;

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
}

async function scratch(): Promise<Scratch> {
  const dir = await Deno.makeTempDir({ prefix: "vmb-install-test-" });
  const destdir = `${dir}/stage`;
  await Deno.mkdir(destdir);
  const fake = `${dir}/fake-helper`;
  const fakeDeno = `${dir}/fake-deno`;
  await Deno.writeTextFile(fake, FAKE_HELPER, { mode: 0o755 });
  await Deno.writeTextFile(fakeDeno, FAKE_DENO, { mode: 0o755 });
  return {
    dir,
    destdir,
    fake,
    fakeDeno,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function install(...args: string[]) {
  const argv = [...(await taskArgv("install-suid")), ...args];
  return await run([
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
    assert.equal(await Deno.readTextFile(`${s.destdir}${HELPER}`), FAKE_HELPER);

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
  // A binary that passes the first probe but prints a Deno version.
  let r = await install("--destdir", s.destdir, "--binary", s.fakeDeno);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to install .*: `BINARY --version' printed a Deno version/);
  // The real Deno CLI (a REPL without arguments).
  r = await install("--destdir", s.destdir, "--binary", Deno.execPath());
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to install .*bare Deno runtime/);
  // --denort pointing at the CLI: deno compile "succeeds", and the result is the full CLI.
  r = await install("--destdir", s.destdir, "--denort", Deno.execPath());
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stdout,
    /==> \(cd .* && DENORT_BIN=.* compile --no-code-cache --no-prompt --allow-ffi --v8-flags=--single-threaded --preload \.\/guard\.ts --output /,
  );
  assert.match(r.stderr, /refusing to install .*bare Deno runtime/);
  assert.deepEqual(await listTree(s.destdir), [], "something was installed");
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
