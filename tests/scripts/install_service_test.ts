// `install-suid --service`: the bridge service, its systemd units, and the helper as a plain
// 0755 program with no capability, staged into a --destdir (deno compile cannot run here, so
// stand-ins answer the probes); --uninstall removes exactly that; --dry-run shows every step.

import assert from "node:assert/strict";
import { USAGE } from "../../cli/args.ts";
import { parseInstallArgs, unitText } from "../../scripts/_install_plan.ts";
import { listTree } from "../_support/deno_copy.ts";
import { ROOT, rootTest, run } from "../_support/ns.ts";

const FAKE_HELPER = `#!/bin/sh\necho '${USAGE}' >&2\nexit 1\n`;
const FAKE_SERVICE = `#!/bin/sh\necho 'vm-bridged: refusing to run: thread 1 holds more than ` +
  `CAP_NET_ADMIN: CapEff=000001ffffffffff; start it from vm-bridge.service' >&2\nexit 1\n`;

async function install(...args: string[]) {
  return await run([
    Deno.execPath(),
    "run",
    "--no-prompt",
    "--allow-read",
    "--allow-write",
    "--allow-run",
    "--allow-env",
    "--allow-ffi",
    "--allow-sys=uid",
    `${ROOT}/scripts/install-suid.ts`,
    ...args,
  ]);
}

Deno.test({
  name: "parseInstallArgs(): --service excludes --group and --uninstall; --service-binary needs it",
  permissions: "none",
  fn() {
    assert.equal(parseInstallArgs(["--service"]).service, true);
    assert.equal(
      parseInstallArgs(["--service", "--service-binary", "/x/vm-bridged"]).serviceBinary,
      "/x/vm-bridged",
    );
    assert.throws(() => parseInstallArgs(["--service", "--group", "kvm"]), /makes no sense/);
    assert.throws(() => parseInstallArgs(["--service", "--uninstall"]), /makes no sense/);
    assert.throws(() => parseInstallArgs(["--service-binary", "/x"]), /needs --service/);
    assert.throws(() => parseInstallArgs(["--service", "--service-binary", "rel"]), /absolute/);
  },
});

Deno.test({
  name: "unitText() points ExecStart at the installed service",
  permissions: "none",
  fn() {
    assert.equal(
      unitText("[Service]\nExecStart=/a\nUser=root\n", "/b"),
      "[Service]\nExecStart=/b\nUser=root\n",
    );
  },
});

rootTest(
  "install-suid --service --destdir: 0755 helper with no capability, vm-bridged, units, manifest; --uninstall removes them",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "vmb-install-svc-" });
    try {
      const destdir = `${dir}/stage`;
      await Deno.mkdir(destdir);
      await Deno.writeTextFile(`${dir}/helper`, FAKE_HELPER, { mode: 0o755 });
      await Deno.writeTextFile(`${dir}/service`, FAKE_SERVICE, { mode: 0o755 });
      const args = ["--destdir", destdir, "--binary", `${dir}/helper`, "--service"];

      // A helper stand-in given as the service is refused, and nothing is installed.
      let r = await install(...args, "--service-binary", `${dir}/helper`);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /refusing to install .*: it does not answer as vm-bridged/);
      assert.deepEqual(await listTree(destdir), []);

      r = await install(...args, "--service-binary", `${dir}/service`);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout, /setcap/, "no capability anywhere");
      assert.match(r.stdout, /systemctl daemon-reload && systemctl enable --now vm-bridge\.socket/);
      const helper = await Deno.stat(`${destdir}/usr/local/libexec/qemu-bridge-helper`);
      assert.equal(helper.mode! & 0o7777, 0o755);
      assert.equal(helper.gid, 0);
      const svc = await Deno.stat(`${destdir}/usr/local/libexec/vm-bridged`);
      assert.equal(svc.mode! & 0o7777, 0o755);
      const getcap = await run(["getcap", `${destdir}/usr/local/libexec/qemu-bridge-helper`]);
      assert.equal(getcap.stdout.trim(), "", "the helper carries no file capability");
      const unit = await Deno.readTextFile(`${destdir}/etc/systemd/system/vm-bridge.service`);
      assert.match(unit, /^ExecStart=\/usr\/local\/libexec\/vm-bridged$/m);
      assert.equal(
        await Deno.readTextFile(`${destdir}/etc/systemd/system/vm-bridge.socket`),
        await Deno.readTextFile(`${ROOT}/systemd/vm-bridge.socket`),
      );
      const manifest = JSON.parse(
        await Deno.readTextFile(`${destdir}/usr/local/share/vm-bridge/install-manifest.json`),
      );
      assert.deepEqual(
        manifest.service.map((f: { path: string }) => f.path),
        [
          "/usr/local/libexec/vm-bridged",
          "/etc/systemd/system/vm-bridge.socket",
          "/etc/systemd/system/vm-bridge.service",
        ],
      );

      r = await install("--destdir", destdir, "--uninstall");
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(await listTree(destdir), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

rootTest("install-suid --service --dry-run shows every step and changes nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmb-install-svc-" });
  try {
    const r = await install("--dry-run", "--service", "--destdir", dir);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /would: .* compile .*--allow-env=LISTEN_FDS,LISTEN_PID .*\.\/service\/main\.ts/,
    );
    assert.match(r.stdout, /would: verify .*vm-bridged/);
    assert.match(r.stdout, /would: install -o root -g root -m 0755 .*qemu-bridge-helper/);
    assert.match(r.stdout, /would: install -o root -g root -m 0644 .*vm-bridge\.service/);
    assert.deepEqual(await listTree(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
