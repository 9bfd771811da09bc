// `install-suid --service`: the bridge service (vm-bridged), its systemd units, and the helper as
// a plain root:root 0755 program with no capability, staged into a --destdir (deno compile cannot
// download a denort here, so stand-ins carrying deno compile metadata answer the probes);
// --uninstall removes exactly that; --dry-run shows every step and writes nothing.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  checkManifest,
  compileArgs,
  parseInstallArgs,
  SERVICE_COMPILE_FLAGS,
  unitText,
} from "../../scripts/_install_plan.ts";
import {
  HELPER_BUILD,
  judgeMetadata,
  readStandaloneMetadata,
  SERVICE_BUILD,
} from "../../scripts/_denort_meta.ts";
import { listTree } from "../_support/deno_copy.ts";
import {
  fakeCompiledHelper,
  fakeCompiledService,
  helperMetadata,
  SERVICE_REFUSAL,
  serviceMetadata,
  tinyElf,
} from "../_support/fake_denort.ts";
import { IN_CI, ROOT, rootTest, run } from "../_support/ns.ts";
import { rootTempDir } from "../_support/root_tmp.ts";

const HELPER = "/usr/local/libexec/qemu-bridge-helper";
const SERVICE = "/usr/local/libexec/vm-bridged";
const SOCKET_UNIT = "/etc/systemd/system/vm-bridge.socket";
const SERVICE_UNIT = "/etc/systemd/system/vm-bridge.service";
const MANIFEST = "/usr/local/share/vm-bridge/install-manifest.json";
const ENABLE = "systemctl daemon-reload && systemctl enable --now vm-bridge.socket";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** `deno task install-suid` exactly (the task's own permissions), with the tests' deno. */
async function install(...args: string[]) {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
    tasks: Record<string, string>;
  };
  const words = config.tasks["install-suid"]!.split(" ");
  assert.equal(words[0], "deno");
  return await run([
    Deno.execPath(),
    ...words.slice(1).map((w) => (w.startsWith("scripts/") ? `${ROOT}/${w}` : w)),
    ...args,
  ]);
}

interface Scratch extends AsyncDisposable {
  dir: string;
  destdir: string;
  helper: string;
  service: string;
}

async function scratch(): Promise<Scratch> {
  // Under a root-only chain: the installer refuses a DESTDIR below the sticky /tmp.
  const { path: dir } = await rootTempDir("vmb-install-svc-");
  const destdir = `${dir}/stage`;
  await Deno.mkdir(destdir);
  await Deno.writeFile(`${dir}/helper`, fakeCompiledHelper(), { mode: 0o755 });
  await Deno.writeFile(`${dir}/vm-bridged`, fakeCompiledService(), { mode: 0o755 });
  return {
    dir,
    destdir,
    helper: `${dir}/helper`,
    service: `${dir}/vm-bridged`,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test({
  name: "parseInstallArgs(): --service excludes --group and --uninstall; --service-binary needs it",
  permissions: "none",
  fn() {
    assert.equal(parseInstallArgs(["--service"]).service, true);
    assert.equal(parseInstallArgs([]).service, undefined);
    assert.equal(
      parseInstallArgs(["--service", "--service-binary", "/x/vm-bridged"]).serviceBinary,
      "/x/vm-bridged",
    );
    // --binary for the helper, --denort to compile the service.
    assert.equal(
      parseInstallArgs(["--service", "--binary", "/h", "--denort", "/d"]).denort,
      "/d",
    );
    assert.throws(() => parseInstallArgs(["--binary", "/h", "--denort", "/d"]), /exclude/);
    assert.throws(
      () =>
        parseInstallArgs([
          "--service",
          "--binary",
          "/h",
          "--service-binary",
          "/s",
          "--denort",
          "/d",
        ]),
      /--denort makes no sense/,
    );
    assert.throws(() => parseInstallArgs(["--service", "--group", "kvm"]), /makes no sense/);
    assert.throws(() => parseInstallArgs(["--service", "--uninstall"]), /makes no sense/);
    assert.throws(() => parseInstallArgs(["--service-binary", "/x"]), /needs --service/);
    assert.throws(() => parseInstallArgs(["--service", "--service-binary", "rel"]), /absolute/);
    assert.throws(
      () => parseInstallArgs(["--service", "--service-binary", "/a", "--service-binary=/b"]),
      /given more than once/,
    );
  },
});

Deno.test({
  name: "unitText() points the one ExecStart= at the installed service",
  permissions: "none",
  fn() {
    assert.equal(
      unitText("[Service]\nExecStart=/a\nUser=root\n", "/opt/x/libexec/vm-bridged"),
      "[Service]\nExecStart=/opt/x/libexec/vm-bridged\nUser=root\n",
    );
    assert.equal(unitText("[Socket]\nListenStream=/s\n", "/b"), "[Socket]\nListenStream=/s\n");
    assert.throws(() => unitText("ExecStart=/a\nExecStart=/b\n", "/c"), /more than one/);
  },
});

Deno.test({
  name: "the service's compile flags and expected build are exactly the compile:service task's",
  permissions: { read: true },
  async fn() {
    const config = JSON.parse(await Deno.readTextFile(`${ROOT}/deno.json`)) as {
      tasks: Record<string, string>;
    };
    const task = config.tasks["compile:service"]!.split(" ");
    assert.deepEqual(
      compileArgs("dist/vm-bridged", true),
      task.slice(1), // the task's own output path, the same flags and entry point
    );
    assert.deepEqual(SERVICE_COMPILE_FLAGS, task.slice(2, -3));
    assert.equal("./" + SERVICE_BUILD.entry, task.at(-1));
    assert.deepEqual(SERVICE_BUILD.preload.map((p) => "./" + p), [
      task[task.indexOf("--preload") + 1],
    ]);
    const env = task.find((w) => w.startsWith("--allow-env="))!;
    assert.deepEqual(SERVICE_BUILD.allowEnv, env.slice("--allow-env=".length).split(","));
  },
});

Deno.test({
  name: "judgeMetadata(): the service's build is not the helper's, nor the other way round",
  permissions: "none",
  fn() {
    assert.deepEqual(judgeMetadata(serviceMetadata(), SERVICE_BUILD), []);
    assert.deepEqual(judgeMetadata(helperMetadata(), HELPER_BUILD), []);
    const helperAsService = judgeMetadata(helperMetadata(), SERVICE_BUILD);
    assert.ok(helperAsService.some((p) => /entry point is "helper\.ts"/.test(p)));
    assert.ok(helperAsService.some((p) => /allow_env is null/.test(p)));
    const serviceAsHelper = judgeMetadata(serviceMetadata(), HELPER_BUILD);
    assert.ok(
      serviceAsHelper.some((p) =>
        p === 'allow_env is ["LISTEN_FDS","LISTEN_PID"]: only --allow-ffi may be granted'
      ),
    );
    const wider = serviceMetadata();
    (wider.permissions as Record<string, unknown>).allow_env = [];
    assert.deepEqual(judgeMetadata(wider, SERVICE_BUILD), [
      'allow_env is [], not ["LISTEN_FDS","LISTEN_PID"]',
    ]);
  },
});

Deno.test({
  name: "checkManifest() accepts only the fixed service paths, each once",
  permissions: "none",
  fn() {
    const sha = "0".repeat(64);
    const base = {
      format: 1,
      helper: { path: HELPER, sha256: sha },
      bridgeConf: null,
      dirs: ["/etc/systemd", "/etc/systemd/system"],
    };
    const service = [SERVICE, SOCKET_UNIT, SERVICE_UNIT].map((path) => ({ path, sha256: sha }));
    assert.deepEqual(checkManifest({ ...base, service }, "/usr/local").service, service);
    for (
      const path of ["/etc/passwd", "/etc/systemd/system/other.service", "/opt/libexec/vm-bridged"]
    ) {
      assert.throws(
        () => checkManifest({ ...base, service: [{ path, sha256: sha }] }, "/usr/local"),
        new RegExp(`names \`${path.replaceAll(".", "\\.")}', which this installer never installs`),
      );
    }
    assert.throws(
      () => checkManifest({ ...base, service: [service[0], service[0]] }, "/usr/local"),
      /names a service file twice/,
    );
    assert.throws(
      () => checkManifest({ ...base, service: [{ path: SERVICE, sha256: "x" }] }, "/usr/local"),
      /Not an install manifest/,
    );
  },
});

rootTest(
  "install-suid --service --destdir: helper 0755 without capability, vm-bridged, units, manifest; --uninstall removes exactly those",
  async () => {
    await using s = await scratch();
    // Something else of the administrator's beside the units and the binaries: never touched.
    await Deno.mkdir(`${s.destdir}/etc/systemd/system`, { recursive: true });
    await Deno.writeTextFile(`${s.destdir}/etc/systemd/system/other.service`, "[Unit]\n");
    await Deno.mkdir(`${s.destdir}/usr/local/libexec`, { recursive: true });
    await Deno.writeTextFile(`${s.destdir}/usr/local/libexec/other-tool`, "keep me\n");
    const before = await listTree(s.destdir);

    let r = await install(
      ...["--destdir", s.destdir, "--binary", s.helper, "--service"],
      ...["--service-binary", s.service],
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /setcap/, "no capability anywhere");
    const lines = r.stdout.trim().split("\n");
    assert.equal(
      lines.at(-2),
      `==> not run: the installer starts and enables nothing; to start the service: ${ENABLE}`,
    );
    assert.ok(lines.some((l) => /^==> verify .*vm-bridged is our vm-bridged build/.test(l)));

    for (
      const [path, bytes] of [[HELPER, fakeCompiledHelper()], [
        SERVICE,
        fakeCompiledService(),
      ]] as const
    ) {
      const st = await Deno.stat(`${s.destdir}${path}`);
      assert.equal(st.uid, 0, path);
      assert.equal(st.gid, 0, path);
      assert.equal(st.mode! & 0o7777, 0o755, path);
      assert.deepEqual(await Deno.readFile(`${s.destdir}${path}`), bytes);
      const getcap = await run(["getcap", `${s.destdir}${path}`]);
      assert.equal(getcap.code, 0, getcap.stderr);
      assert.equal(getcap.stdout, "", `${path} carries a file capability`);
    }
    for (const unit of [SOCKET_UNIT, SERVICE_UNIT]) {
      const st = await Deno.stat(`${s.destdir}${unit}`);
      assert.equal(st.uid, 0);
      assert.equal(st.mode! & 0o7777, 0o644, unit);
    }
    const unit = await Deno.readTextFile(`${s.destdir}${SERVICE_UNIT}`);
    assert.match(unit, /^ExecStart=\/usr\/local\/libexec\/vm-bridged$/m);
    assert.equal(
      await Deno.readTextFile(`${s.destdir}${SOCKET_UNIT}`),
      await Deno.readTextFile(`${ROOT}/systemd/vm-bridge.socket`),
    );

    const manifest = JSON.parse(await Deno.readTextFile(`${s.destdir}${MANIFEST}`));
    assert.deepEqual(manifest.service, [
      { path: SERVICE, sha256: sha256(fakeCompiledService()) },
      { path: SOCKET_UNIT, sha256: sha256(await Deno.readFile(`${s.destdir}${SOCKET_UNIT}`)) },
      { path: SERVICE_UNIT, sha256: sha256(await Deno.readFile(`${s.destdir}${SERVICE_UNIT}`)) },
    ]);

    r = await install("--destdir", s.destdir, "--uninstall");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const path of [SERVICE, SOCKET_UNIT, SERVICE_UNIT]) {
      assert.match(
        r.stdout,
        new RegExp(`^==> rm \\S+${path.replaceAll(".", "\\.")}  # still`, "m"),
      );
    }
    assert.deepEqual(await listTree(s.destdir), before, "uninstall left or took something else");
  },
);

rootTest("install-suid --service: uninstall keeps a unit the administrator edited", async () => {
  await using s = await scratch();
  let r = await install(
    ...["--destdir", s.destdir, "--binary", s.helper, "--service"],
    ...["--service-binary", s.service],
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  await Deno.writeTextFile(`${s.destdir}${SERVICE_UNIT}`, "\n# edited\n", { append: true });
  r = await install("--destdir", s.destdir, "--uninstall");
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /note: keeping .*vm-bridge\.service: it changed since it was installed/);
  assert.deepEqual(await listTree(s.destdir), [
    "etc",
    "etc/systemd",
    "etc/systemd/system",
    "etc/systemd/system/vm-bridge.service",
  ]);
});

rootTest("install-suid --service --dry-run shows every step and writes nothing", async () => {
  await using s = await scratch();
  const before = await listTree(s.dir);
  const r = await install("--dry-run", "--service", "--destdir", s.destdir);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.ok(
    r.stdout.split("\n").filter((l) => l !== "").every((l) => /^(would: |dry run: )/.test(l)),
  );
  // Both compiles, in the same allow-listed environment, the service with its task's flags.
  const compiles = r.stdout.split("\n").filter((l) => l.startsWith("would: (cd "));
  assert.equal(compiles.length, 2, r.stdout);
  for (const line of compiles) {
    assert.match(line, / && env -i PATH=\S+ HOME=\S+\/compile-home'? DENO_DIR=\S+ NO_COLOR=1 /);
  }
  assert.match(
    compiles[1]!,
    / compile --no-code-cache --no-prompt --allow-ffi --allow-env=LISTEN_FDS,LISTEN_PID --v8-flags=--single-threaded,--jitless --preload \.\/service\/guard\.ts --output \S+\/vm-bridged'? \.\/service\/main\.ts\)$/,
  );
  assert.match(r.stdout, /^would: verify \S+\/vm-bridged'? is our vm-bridged build/m);
  assert.match(r.stdout, /^would: install -o root -g root -m 0755 \S+ \S+\/qemu-bridge-helper$/m);
  assert.match(r.stdout, /^would: install -o root -g root -m 0755 \S+ \S+\/libexec\/vm-bridged$/m);
  assert.match(
    r.stdout,
    /^would: install -o root -g root -m 0644 \S+\/systemd\/vm-bridge\.service \S+\/etc\/systemd\/system\/vm-bridge\.service {2}# with ExecStart=\/usr\/local\/libexec\/vm-bridged$/m,
  );
  assert.match(
    r.stdout,
    /^would: install -o root -g root -m 0644 \S+vm-bridge\.socket \S+\/etc\/systemd\/system\/vm-bridge\.socket$/m,
  );
  assert.match(
    r.stdout,
    new RegExp(`^would: not run: .*${ENABLE.replaceAll(/[.&]/g, "\\$&")}$`, "m"),
  );
  assert.doesNotMatch(r.stdout, /setcap/);
  assert.deepEqual(await listTree(s.dir), before, "the dry run wrote something");
  // For the real system too: nothing written, nothing started.
  const real = await install("--dry-run", "--service", "--binary", s.helper);
  assert.equal(real.code, 0, real.stdout + real.stderr);
  assert.match(real.stdout, /^would: install .* \/etc\/systemd\/system\/vm-bridge\.socket$/m);
  assert.equal((await run(["test", "-e", SERVICE])).code, 1, "the dry run installed vm-bridged");
  assert.equal((await run(["test", "-e", SERVICE_UNIT])).code, 1, "the dry run installed a unit");
});

rootTest(
  "install-suid --service refuses a service binary that is not our vm-bridged build",
  async () => {
    await using s = await scratch();
    const variant = `${s.dir}/variant`;
    const cases: [string, Uint8Array<ArrayBuffer>, RegExp][] = [
      [
        "the helper",
        fakeCompiledHelper(),
        /it is not our vm-bridged's build: the entry point is "helper\.ts"/,
      ],
      [
        "a shell script",
        new TextEncoder().encode(`#!/bin/sh\necho '${SERVICE_REFUSAL}' >&2\nexit 1\n`),
        /: Not an ELF executable$/m,
      ],
      ["no metadata", tinyElf({ message: SERVICE_REFUSAL }), /No d3n0l4nd note/],
      [
        "no LISTEN_* access",
        fakeCompiledService({ ...serviceMetadata(), permissions: helperMetadata().permissions }),
        /allow_env is null, not \["LISTEN_FDS","LISTEN_PID"\]/,
      ],
      [
        "more environment",
        (() => {
          const m = serviceMetadata();
          (m.permissions as Record<string, unknown>).allow_env = [
            "LISTEN_FDS",
            "LISTEN_PID",
            "HOME",
          ];
          return fakeCompiledService(m);
        })(),
        /allow_env is \["LISTEN_FDS","LISTEN_PID","HOME"\], not/,
      ],
      [
        "read access",
        (() => {
          const m = serviceMetadata();
          (m.permissions as Record<string, unknown>).allow_read = [];
          return fakeCompiledService(m);
        })(),
        /allow_read is \[\]: only --allow-ffi and --allow-env=LISTEN_FDS,LISTEN_PID may be granted/,
      ],
      [
        "no guard",
        fakeCompiledService({ ...serviceMetadata(), preload_modules: ["guard.ts"] }),
        /the preloaded modules are \["guard\.ts"\], not \["service\/guard\.ts"\]/,
      ],
      [
        "a runtime printing a version",
        tinyElf({
          note: readyNote(),
          message: "deno 2.9.6 (stable, release, x86_64-unknown-linux-gnu)\n",
          status: 0,
        }),
        /`BINARY --version' printed a Deno version: it is a bare Deno runtime, not vm-bridged/,
      ],
      [
        "the helper's answer",
        tinyElf({ note: readyNote(), message: "Usage: qemu-bridge-helper\n" }),
        /did not refuse with a vm-bridged: message and exit 1/,
      ],
    ];
    for (const [what, bytes, message] of cases) {
      await Deno.writeFile(variant, bytes, { mode: 0o755 });
      const r = await install(
        ...["--destdir", s.destdir, "--binary", s.helper, "--service"],
        ...["--service-binary", variant],
      );
      assert.equal(r.code, 1, `${what}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /^install-suid: refusing to install \S+\/vm-bridged: /, what);
      assert.match(r.stderr, message, what);
      assert.equal(r.stderr.trim().split("\n").length, 1, what);
    }
    assert.deepEqual(await listTree(s.destdir), [], "something was installed");
  },
);

/** The note of our service's build, for stand-ins that then answer the probes wrongly. */
function readyNote(): Uint8Array {
  const bytes = fakeCompiledService();
  // The note is the file's tail after the code (see tinyElf): cut it out by its program header.
  const v = new DataView(bytes.buffer);
  const off = Number(v.getBigUint64(64 + 56 + 8, true));
  return bytes.subarray(off);
}

rootTest(
  "install-suid --service --denort: deno compile with the compile:service flags gives a build the installer accepts",
  async () => {
    await using s = await scratch();
    // A stand-in denort that answers as vm-bridged: real `deno compile` appends the real note.
    const denort = `${s.dir}/denort`;
    const bytes = tinyElf({ message: SERVICE_REFUSAL });
    await Deno.writeFile(denort, bytes, { mode: 0o755 });
    const r = await install(
      ...["--destdir", s.destdir, "--binary", s.helper, "--service", "--denort", denort],
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`^    denort ${denort} sha256 ${sha256(bytes)}$`, "m"));
    const installed = await Deno.readFile(`${s.destdir}${SERVICE}`);
    const meta = readStandaloneMetadata(installed);
    assert.deepEqual(judgeMetadata(meta, SERVICE_BUILD), []);
    assert.equal(meta.entrypoint_key, "service/main.ts");
    const manifest = JSON.parse(await Deno.readTextFile(`${s.destdir}${MANIFEST}`));
    assert.deepEqual(manifest.denort, { source: denort, sha256: sha256(bytes) });
    assert.equal(manifest.service[0].sha256, sha256(installed));
  },
);

rootTest("uninstall refuses a manifest naming a service file it never installs", async () => {
  await using s = await scratch();
  let r = await install(
    ...["--destdir", s.destdir, "--binary", s.helper, "--service"],
    ...["--service-binary", s.service],
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  // Root's own file elsewhere, named in a (root-owned) manifest with its right hash.
  await Deno.mkdir(`${s.destdir}/etc/ssh`);
  await Deno.writeTextFile(`${s.destdir}/etc/ssh/sshd_config`, "PermitRootLogin no\n");
  const path = `${s.destdir}${MANIFEST}`;
  const manifest = JSON.parse(await Deno.readTextFile(path));
  manifest.service.push({
    path: "/etc/ssh/sshd_config",
    sha256: sha256(await Deno.readFile(`${s.destdir}/etc/ssh/sshd_config`)),
  });
  await Deno.writeTextFile(path, JSON.stringify(manifest));
  const before = await listTree(s.destdir);
  r = await install("--destdir", s.destdir, "--uninstall");
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(
    r.stderr,
    /^install-suid: \S+ is not a manifest of this installer: it names `\/etc\/ssh\/sshd_config', which this installer never installs under \/usr\/local$/m,
  );
  assert.deepEqual(await listTree(s.destdir), before, "uninstall removed something");
});

rootTest(
  "the unit installed under another --prefix still scores at most 2.0 (systemd-analyze security --offline)",
  async (t) => {
    await using s = await scratch();
    const r = await install(
      ...["--destdir", s.destdir, "--prefix", "/opt/vmb", "--binary", s.helper, "--service"],
      ...["--service-binary", s.service],
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const unitDir = `${s.destdir}/etc/systemd/system`;
    assert.match(
      await Deno.readTextFile(`${unitDir}/vm-bridge.service`),
      /^ExecStart=\/opt\/vmb\/libexec\/vm-bridged$/m,
    );
    let out;
    try {
      out = await new Deno.Command("systemd-analyze", {
        args: ["security", "--offline=yes", "--no-pager", "vm-bridge.service"],
        cwd: unitDir,
        env: { SYSTEMD_COLORS: "0" },
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      if (IN_CI) throw new Error("systemd-analyze is not installed (apt-get install systemd)");
      await t.step({ name: "skipped: systemd-analyze is not installed", ignore: true, fn() {} });
      return;
    }
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const m = text.match(/Overall exposure level for vm-bridge\.service: ([0-9.]+)/);
    assert.ok(m, text);
    const score = Number(m[1]);
    console.log(`exposure score of the installed vm-bridge.service: ${score}`);
    assert.ok(score <= 2.0, `exposure ${score} > 2.0:\n${text}`);
  },
);

rootTest(
  "install-suid --service over a capability install drops the capability; a plain reinstall keeps the service on record",
  async () => {
    await using s = await scratch();
    // A plain install whose helper got its capability (as the package's script would run setcap).
    let r = await install("--destdir", s.destdir, "--binary", s.helper, "--group", "root");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const setcap = await run(["setcap", "cap_net_admin+ep", `${s.destdir}${HELPER}`]);
    assert.equal(setcap.code, 0, setcap.stderr);
    assert.match((await run(["getcap", `${s.destdir}${HELPER}`])).stdout, /cap_net_admin=ep/);

    r = await install(
      ...["--destdir", s.destdir, "--binary", s.helper, "--service"],
      ...["--service-binary", s.service],
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal((await run(["getcap", `${s.destdir}${HELPER}`])).stdout, "");
    assert.equal((await Deno.stat(`${s.destdir}${HELPER}`)).mode! & 0o7777, 0o755);

    // Back to the capability helper: the service files stay recorded, so uninstall still finds them.
    r = await install("--destdir", s.destdir, "--binary", s.helper, "--group", "root");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const manifest = JSON.parse(await Deno.readTextFile(`${s.destdir}${MANIFEST}`));
    assert.deepEqual(
      manifest.service.map((f: { path: string }) => f.path),
      [SERVICE, SOCKET_UNIT, SERVICE_UNIT],
    );
    r = await install("--destdir", s.destdir, "--uninstall");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(await listTree(s.destdir), []);
  },
);
