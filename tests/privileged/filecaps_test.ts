// The installed case, as an unprivileged user: a copy of the Deno runtime with the file
// capability cap_net_admin+ep runs helper.ts with the compile flags (bin/qemu-bridge-helper,
// DENO=<copy>) as uid 65534, in a throwaway network namespace with a private /etc/qemu and a
// 0666 /dev/net/tun. Also the environment attacks and the entry-point substitution.

import assert from "node:assert/strict";
import { BridgeHelperError, runHelper } from "../../net/run_helper.ts";
import { tapInfo } from "../../net/tap.ts";
import {
  exposeDeno,
  listTree,
  privilegedDeno,
  SANDBOX_DENO,
  tempDirFor,
} from "../_support/deno_copy.ts";
import { NetNs, rootTest, run, sandbox, type SandboxOptions } from "../_support/ns.ts";
import { runPaused } from "./_paused.ts";
import { madeCode } from "../_support/exec_maps.ts";
import { sourceForOthers } from "../_support/readable_source.ts";

// Run as another user, the helper comes from a copy every user can read: the checkout may be
// in a directory that user cannot enter.
const SRC = await sourceForOthers();
const HELPER_FROM_SOURCE = SRC.helper;

const NOBODY = { uid: 65534, gid: 65534 };
const TIMEOUT_MS = 60_000;

/** The flags bin/qemu-bridge-helper runs helper.ts with: the `deno compile` flags. */
const COMPILE_LIKE_FLAGS = [
  "run",
  "--quiet",
  "--no-config",
  "--no-lock",
  "--no-prompt",
  "--no-code-cache",
  "--allow-ffi",
  "--v8-flags=--single-threaded,--jitless",
];

async function box(
  ns: NetNs,
  opts: SandboxOptions,
): Promise<{ argv: string[] } & AsyncDisposable> {
  const sb = await sandbox(ns, { tun0666: true, user: NOBODY, ...opts });
  return { argv: sb.argv, [Symbol.asyncDispose]: sb.cleanup };
}

async function expectFailure(p: Promise<{ close(): void }>, stderr: RegExp): Promise<void> {
  let caught: unknown;
  try {
    (await p).close();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BridgeHelperError, `expected a helper failure, got ${caught}`);
  assert.deepEqual(caught.status, { exited: true, code: 1 }, caught.message);
  assert.match(caught.stderr, stderr);
}

/** Expects a helper failure with exit status 1 and returns its last stderr line. */
async function expectFailureLine(p: Promise<{ close(): void }>): Promise<string> {
  let caught: unknown;
  try {
    (await p).close();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BridgeHelperError, `expected a helper failure, got ${caught}`);
  assert.deepEqual(caught.status, { exited: true, code: 1 }, caught.message);
  return caught.stderr.trimEnd().split("\n").at(-1) ?? "";
}

async function assertNoTaps(ns: NetNs): Promise<void> {
  const deadline = Date.now() + 3000;
  let taps = await ns.taps();
  while (taps.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    taps = await ns.taps();
  }
  assert.deepEqual(taps, [], "a tap was left behind");
}

rootTest("file-capability helper run by uid 65534", async (t) => {
  await using copy = await privilegedDeno("filecaps");
  // DENO_DIR: the Deno CLI (standing in for the compiled runtime) keeps caches there.
  await using denoDir = await tempDirFor(NOBODY.uid, 0o700, "vmb-denodir-");
  const setup = exposeDeno(copy, { DENO_DIR: denoDir.path });

  await t.step("an allowed bridge gives a tap fd on that bridge", async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0", { mtu: 1400 });
    await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" }, setup });
    const fd = await runHelper({
      helper: [...sb.argv, HELPER_FROM_SOURCE],
      bridge: "br0",
      vnetHdr: true,
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    try {
      const info = tapInfo(fd.value);
      assert.ok(info.tap && info.vnetHdr);
      const link = (await ns.links()).find((l) => l.ifname === info.name);
      assert.equal(link?.master, "br0");
      assert.equal(link?.mtu, 1400);
    } finally {
      fd.close();
    }
    await assertNoTaps(ns);
  });

  await t.step(
    "observed while it runs: the caller's uid, only CAP_NET_ADMIN, no new privileges, not dumpable",
    async () => {
      await using ns = await NetNs.create();
      await ns.bridge("br0");
      await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" }, setup });
      // Meanwhile the caller tries to look inside: environ and memory, and ptrace.
      const asCaller = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
      const peeks: Record<string, string> = {};
      let maps: string[] = [];
      const r = await runPaused(
        ns,
        [...sb.argv, HELPER_FROM_SOURCE, "--fd=3", "--br=br0"],
        async (pid) => {
          for (const file of ["environ", "mem", "maps"]) {
            const out = await run([
              ...asCaller,
              "dd",
              `if=/proc/${pid}/${file}`,
              "bs=64",
              "count=1",
            ]);
            peeks[file] = out.code === 0 ? "read" : out.stderr.trim();
          }
          const trace = await run([...asCaller, "strace", "-p", String(pid), "-e", "trace=none"]);
          peeks.ptrace = trace.code === 0 ? "attached" : trace.stderr.trim();
          maps = (await Deno.readTextFile(`/proc/${pid}/maps`)).trim().split("\n");
        },
      );
      using _fd = r.fd;
      assert.deepEqual(r.status, { exited: true, code: 0 }, r.stderr);
      assert.equal(r.stderr, "");
      for (const [tid, s] of r.threads) {
        assert.equal(s.get("Uid"), "65534 65534 65534 65534", `thread ${tid}`);
        assert.equal(s.get("Gid"), "65534 65534 65534 65534", `thread ${tid}`);
        // File capabilities apply to the whole process from exec: every thread has exactly it.
        assert.equal(s.get("CapPrm"), "0000000000001000", `thread ${tid}`);
        assert.equal(s.get("CapEff"), "0000000000001000", `thread ${tid}`);
        assert.equal(s.get("CapAmb"), "0000000000000000", `thread ${tid}`);
      }
      assert.equal(r.threads.get(String(r.pid))?.get("NoNewPrivs"), "1");
      // Not dumpable: the kernel shows /proc/PID/status as root's although the process runs as
      // 65534. (Kernels differ on whether an exec that gains file capabilities is dumpable:
      // docs/deno-privileges.md measured 1, this machine's 6.18 gives 0; the guard and
      // lockDown() set 0 either way.)
      assert.equal(r.procOwner, 0, "the helper is dumpable");
      for (const file of ["environ", "mem", "maps"]) {
        assert.match(peeks[file]!, /Permission denied/, `/proc/PID/${file}: ${peeks[file]}`);
      }
      assert.match(peeks.ptrace!, /Operation not permitted/, peeks.ptrace);
      // No machine code made at run time, at its last step: --jitless keeps V8 from mapping any
      // (its code space is read-write-execute otherwise), and sys/libc.ts calls libc through
      // addresses (no FFI trampoline). Executable are only the binaries' own mappings (and the
      // kernel's [vdso] and [vsyscall]); nothing is writable and executable.
      assert.ok(maps.length > 10, `read /proc/PID/maps: ${maps.join("; ")}`);
      assert.deepEqual(madeCode(maps), []);
    },
  );

  await t.step(
    "a user namespace with its own /etc/qemu: the ACL is refused, and the capability would not reach",
    async () => {
      // The caller becomes "root" of a new user namespace, mounts an ACL allowing everything
      // over /etc/qemu and runs the helper there.
      await using ns = await NetNs.create();
      await ns.bridge("br0");
      await using sb = await box(ns, { etcQemu: { "bridge.conf": "deny all\n" }, setup });
      const attempt = (script: string) =>
        expectFailureLine(
          runHelper({
            helper: [...sb.argv, "unshare", "-Urm", "sh", "-c", script, HELPER_FROM_SOURCE],
            bridge: "br0",
            vnetHdr: true,
            signal: AbortSignal.timeout(TIMEOUT_MS),
          }),
        );
      // 1. The file looks root-owned there (its owner maps to 0), but `/` does not: real root is
      //    not mapped in the caller's namespace, so it shows as the overflow uid, and the
      //    directory check refuses the whole ACL.
      const swap = "set -e; mount -t tmpfs vmb-evil-acl /etc/qemu; " +
        `echo 'allow all' > /etc/qemu/bridge.conf; exec "$0" "$@"`;
      assert.equal(
        await attempt(swap),
        "failed to parse default acl file `/etc/qemu/bridge.conf': `/' is owned by uid 65534, " +
          "not root, so `/etc/qemu/bridge.conf' cannot be trusted: refusing it",
      );
      // 2. Past the ACL with a chroot into a tmpfs the caller owns (everything in it maps to 0):
      //    the ACL allows, but the capability the helper holds there is the namespace's, and this
      //    network namespace belongs to the initial one: no tap.
      const binds = [SRC.root, denoDir.path, "/usr", "/dev", "/proc"];
      const chroot = [
        "set -e",
        "mount -t tmpfs -o mode=0755 vmb-evil-root /srv",
        "mkdir -p /srv/etc/qemu /srv/mnt/vmb-bin",
        "for l in bin lib lib64 sbin; do ln -s usr/$l /srv/$l; done",
        ...binds.map((d) => `mkdir -p /srv${d} && mount --rbind ${d} /srv${d}`),
        `touch /srv${SANDBOX_DENO} && mount --bind ${SANDBOX_DENO} /srv${SANDBOX_DENO}`,
        "echo 'allow all' > /srv/etc/qemu/bridge.conf",
        'exec chroot /srv "$0" "$@"',
      ].join("\n");
      assert.equal(await attempt(chroot), "failed to create tun device: Operation not permitted");
      await assertNoTaps(ns);
    },
  );

  await t.step("a denied bridge gives an error and no tap", async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using sb = await box(ns, {
      etcQemu: { "bridge.conf": "allow all\ndeny br0\n" },
      setup,
    });
    await expectFailure(
      runHelper({ helper: [...sb.argv, HELPER_FROM_SOURCE], bridge: "br0", vnetHdr: true }),
      /^access denied by acl file$/m,
    );
    await assertNoTaps(ns);
  });

  await t.step("an ACL the caller cannot read (0600 root) is an error", async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using sb = await box(ns, {
      etcQemu: { "bridge.conf": { text: "allow br0\n", mode: 0o600 } },
      setup,
    });
    await expectFailure(
      runHelper({ helper: [...sb.argv, HELPER_FROM_SOURCE], bridge: "br0", vnetHdr: true }),
      /^failed to parse default acl file `\/etc\/qemu\/bridge\.conf': .*Permission denied/m,
    );
    await assertNoTaps(ns);
  });

  // The runtime acts on these before the helper's first line runs. With file capabilities the
  // process keeps the caller's uid and has no CAP_DAC_OVERRIDE, so whatever they trigger is done
  // with the caller's rights only.
  const attackEnv = (dir: string) => ({
    SSLKEYLOGFILE: `${dir}/keylog`,
    XDG_DATA_HOME: `${dir}/xdg`,
    HOME: `${dir}/home`,
    DENO_DIR: `${dir}/deno-dir`,
    TMPDIR: `${dir}/tmp`,
  });

  await t.step(
    "SSLKEYLOGFILE, XDG_DATA_HOME, HOME, DENO_DIR, TMPDIR at a root-owned directory: nothing is written there",
    async () => {
      await using target = await tempDirFor(0, 0o755, "vmb-attack-");
      for (const sub of ["xdg", "home", "deno-dir", "tmp"]) {
        await Deno.mkdir(`${target.path}/${sub}`, { mode: 0o755 });
      }
      const before = await listTree(target.path);
      await using ns = await NetNs.create();
      await ns.bridge("br0");
      await using sb = await box(ns, {
        etcQemu: { "bridge.conf": "allow br0\n" },
        setup: exposeDeno(copy, attackEnv(target.path)),
      });
      const fd = await runHelper({
        helper: [...sb.argv, HELPER_FROM_SOURCE],
        bridge: "br0",
        vnetHdr: false,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      fd.close();
      assert.deepEqual(await listTree(target.path), before, "a file appeared in the target");
    },
  );

  await t.step(
    "control: the same variables at a directory the caller owns: what appears is the caller's",
    async () => {
      await using target = await tempDirFor(NOBODY.uid, 0o755, "vmb-attack-own-");
      await using ns = await NetNs.create();
      await ns.bridge("br0");
      await using sb = await box(ns, {
        etcQemu: { "bridge.conf": "allow br0\n" },
        setup: exposeDeno(copy, attackEnv(target.path)),
      });
      const fd = await runHelper({
        helper: [...sb.argv, HELPER_FROM_SOURCE],
        bridge: "br0",
        vnetHdr: false,
        signal: AbortSignal.timeout(TIMEOUT_MS),
      });
      fd.close();
      const created = await listTree(target.path);
      // The runtime does act on the variables (the key log file is opened at startup)...
      assert.ok(created.includes("keylog"), `no key log file: ${created.join(", ")}`);
      // ...but only with the caller's rights.
      for (const rel of created) {
        const st = await Deno.lstat(`${target.path}/${rel}`);
        assert.equal(st.uid, NOBODY.uid, `${rel} is owned by uid ${st.uid}`);
      }
    },
  );

  await t.step(
    "entry-point substitution: with the guard preloaded another main module never runs (exit 70)",
    async () => {
      await using code = await tempDirFor(0, 0o755, "vmb-evil-");
      await using out = await tempDirFor(NOBODY.uid, 0o777, "vmb-evil-out-");
      // What an attacker would run with the embedded --allow-ffi and the capability: here it
      // only leaves a marker (through libc, the one permission it has).
      await Deno.writeTextFile(
        `${code.path}/evil.ts`,
        `import { close, O, open } from "${SRC.url("sys/libc.ts")}";\n` +
          `close(open("${out.path}/marker", O.RDWR | 0o100 /* O_CREAT */, 0o644));\n`,
      );
      await Deno.chmod(`${code.path}/evil.ts`, 0o644);
      await using ns = await NetNs.create();
      await using sb = await box(ns, { setup });
      const guarded = await run([
        ...sb.argv,
        SANDBOX_DENO,
        ...COMPILE_LIKE_FLAGS,
        "--preload",
        `${SRC.root}/guard.ts`,
        `${code.path}/evil.ts`,
      ]);
      assert.equal(guarded.code, 70, guarded.stderr);
      assert.match(guarded.stderr, /refusing to run .*evil\.ts: only helper\.ts may run/);
      assert.deepEqual(await listTree(out.path), [], "the substituted module ran");

      // Control: without the guard the same module does run with the capability. This is why
      // the guard is compiled in (--preload) and why the test copy must never be reachable.
      const unguarded = await run([
        ...sb.argv,
        SANDBOX_DENO,
        ...COMPILE_LIKE_FLAGS,
        `${code.path}/evil.ts`,
      ]);
      assert.equal(unguarded.code, 0, unguarded.stderr);
      assert.deepEqual(await listTree(out.path), ["marker"]);
    },
  );

  await t.step("--check reports ok for a bridge the caller may use", async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" }, setup });
    const r = await run([...sb.argv, HELPER_FROM_SOURCE, "--check", "--br=br0"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      [
        "ok   CAP_NET_ADMIN is effective",
        "ok   /dev/net/tun can be opened read-write by you",
        "ok   `/etc/qemu/bridge.conf' parses: 1 rule",
        "ok   the ACL allows you bridge `br0'",
        "ok   `br0' exists and is a bridge",
        "",
      ].join("\n"),
    );
  });
});
