// Tests for scripts/_install_plan.ts: the installer's command line, its plans and its judgements,
// all pure.

import assert from "node:assert/strict";
import {
  CAPS,
  checkManifest,
  compileArgs,
  compileEnv,
  DEFAULT_BRIDGE_CONF,
  describeStep,
  getcapShowsNetAdminOnly,
  installableDirs,
  type InstallFacts,
  type InstallOptions,
  InstallRefusal,
  InstallUsageError,
  judgeProbe,
  type Manifest,
  mountOptionsFor,
  parseGroupFile,
  parseInstallArgs,
  planInstall,
  planUninstall,
  SETUID_REFUSAL,
  shellQuote,
  type Step,
  summarizeCompileError,
  USAGE,
} from "../../scripts/_install_plan.ts";
import { USAGE as HELPER_USAGE } from "../../cli/args.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

test("the installer's USAGE is the helper's usage line", () => {
  assert.equal(USAGE, HELPER_USAGE);
});

test("parseInstallArgs() defaults to installing under /usr/local", () => {
  assert.deepEqual(parseInstallArgs([]), {
    action: "install",
    dryRun: false,
    prefix: "/usr/local",
    destdir: "",
  });
});

test("parseInstallArgs() takes every option, both spellings", () => {
  assert.deepEqual(
    parseInstallArgs([
      "--dry-run",
      "--prefix=/opt/vm/",
      "--destdir",
      "/tmp/stage",
      "--binary=/tmp/h",
      "--group",
      "vmusers",
    ]),
    {
      action: "install",
      dryRun: true,
      prefix: "/opt/vm",
      destdir: "/tmp/stage",
      binary: "/tmp/h",
      group: "vmusers",
    },
  );
  assert.deepEqual(parseInstallArgs(["--uninstall"]), {
    action: "uninstall",
    dryRun: false,
    prefix: "/usr/local",
    destdir: "",
  });
  assert.equal(parseInstallArgs(["--denort", "/opt/denort"]).denort, "/opt/denort");
  assert.equal(parseInstallArgs(["-h"]).action, "help");
});

test("parseInstallArgs() refuses --setuid and --suid in any spelling with the SECURITY.md line", () => {
  for (
    const argv of [["--setuid"], ["--suid"], ["--suid=yes"], ["--set-user-id"], ["--setuid=1"]]
  ) {
    assert.throws(() => parseInstallArgs(argv), {
      name: "InstallUsageError",
      message: SETUID_REFUSAL,
    });
  }
  assert.match(SETUID_REFUSAL, /SECURITY\.md$/);
  assert.doesNotMatch(SETUID_REFUSAL, /\n/);
});

test("parseInstallArgs() rejects junk, repeats, relative paths and conflicts", () => {
  const bad: ReadonlyArray<readonly [readonly string[], RegExp]> = [
    [["--bogus"], /Unknown option '--bogus'/],
    [["install"], /positional/],
    [["--prefix", "usr/local"], /--prefix must be an absolute path/],
    [["--prefix=/usr/../tmp"], /--prefix must not contain \.\./],
    [["--destdir=/a\nb"], /control character/],
    [["--prefix=/a", "--prefix=/b"], /--prefix given more than once/],
    [["--binary=/a", "--denort=/b"], /exclude each other/],
    [["--uninstall", "--binary=/a"], /--binary makes no sense with --uninstall/],
    [["--group=a b"], /not a group name/],
    [["--group=-rf"], /not a group name/],
  ];
  for (const [argv, message] of bad) {
    assert.throws(() => parseInstallArgs(argv), (e) => {
      assert.ok(e instanceof InstallUsageError, String(e));
      assert.match(e.message, message);
      return true;
    });
  }
});

test("parseGroupFile() maps names to gids and skips junk", () => {
  const groups = parseGroupFile("root:x:0:\nkvm:x:107:alice,bob\n\nbroken\nbad:x:abc:\nkvm:x:5:\n");
  assert.deepEqual([...groups], [["root", 0], ["kvm", 107]]);
});

const FACTS: InstallFacts = {
  groups: new Map([["root", 0], ["kvm", 107], ["vm", 2000]]),
  existing: new Set(["/", "/usr", "/usr/local", "/usr/local/libexec", "/etc", "/usr/local/share"]),
  dirs: new Map([["/", { uid: 0, mode: 0o40755 }], ["/usr", { uid: 0, mode: 0o40755 }]]),
  previous: null,
  mountOptions: ["rw", "relatime"],
  staging: "/tmp/vmb-install-x",
  deno: "/usr/bin/deno",
  repo: "/src/vm-bridge",
};

const INSTALL: InstallOptions = {
  action: "install",
  dryRun: false,
  prefix: "/usr/local",
  destdir: "",
};

const ops = (steps: readonly Step[]) => steps.map((s) => s.op);

test("planInstall() compiles, verifies, installs 0750 root:kvm, writes the ACL, then setcap last", () => {
  const steps = planInstall(INSTALL, FACTS);
  assert.deepEqual(ops(steps), [
    "compile",
    "verify",
    "install",
    "mkdir",
    "create-bridge-conf",
    "mkdir",
    "write-manifest",
    "setcap",
    "getcap",
  ]);
  assert.deepEqual(steps[0], {
    op: "compile",
    deno: "/usr/bin/deno",
    repo: "/src/vm-bridge",
    out: "/tmp/vmb-install-x/qemu-bridge-helper",
    home: "/tmp/vmb-install-x/compile-home",
  });
  assert.deepEqual(steps[2], {
    op: "install",
    from: "/tmp/vmb-install-x/qemu-bridge-helper",
    to: "/usr/local/libexec/qemu-bridge-helper",
    group: "kvm",
    gid: 107,
    replaces: false,
  });
  assert.deepEqual(steps[3], { op: "mkdir", path: "/etc/qemu" });
  assert.deepEqual(steps[4], {
    op: "create-bridge-conf",
    path: "/etc/qemu/bridge.conf",
    text: "allow br0\n",
  });
  const manifest = steps[6];
  assert.ok(manifest?.op === "write-manifest");
  assert.deepEqual(manifest.manifest, {
    format: 1,
    bridgeConf: { path: "/etc/qemu/bridge.conf", text: DEFAULT_BRIDGE_CONF },
    dirs: ["/etc/qemu", "/usr/local/share/vm-bridge"],
  });
  assert.equal(
    describeStep(steps[2]!),
    "install -o root -g kvm -m 0750 /tmp/vmb-install-x/qemu-bridge-helper " +
      "/usr/local/libexec/qemu-bridge-helper",
  );
  assert.equal(describeStep(steps[7]!), `setcap ${CAPS} /usr/local/libexec/qemu-bridge-helper`);
});

test("planInstall() never plans a set-user-ID mode, and verification precedes every install", () => {
  for (const opts of [INSTALL, { ...INSTALL, destdir: "/stage" }, { ...INSTALL, binary: "/b" }]) {
    const steps = planInstall(opts, FACTS);
    const text = steps.map(describeStep).join("\n");
    assert.doesNotMatch(text, /\b[24]7[0-7]{2}\b|u\+s|chmod [0-7]*[4-7][0-7]{3}\b/);
    const verify = steps.findIndex((s) => s.op === "verify");
    const install = steps.findIndex((s) => s.op === "install");
    assert.ok(verify >= 0 && verify < install);
    // Nothing changes the helper after the capability is set.
    const cap = steps.findIndex((s) => s.op === "setcap" || s.op === "print-setcap");
    assert.equal(cap, steps.length - (steps[cap]?.op === "setcap" ? 2 : 1));
  }
});

test("planInstall() with --binary stages the file and with --denort passes DENORT_BIN", () => {
  const staged = planInstall({ ...INSTALL, binary: "/home/me/helper" }, FACTS);
  assert.deepEqual(staged[0], {
    op: "stage",
    from: "/home/me/helper",
    to: "/tmp/vmb-install-x/qemu-bridge-helper",
  });
  const offline = planInstall({ ...INSTALL, denort: "/opt/denort" }, FACTS);
  assert.ok(offline[0]?.op === "compile" && offline[0].denort === "/opt/denort");
  assert.equal(
    describeStep(offline[0]!),
    "(cd /src/vm-bridge && env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin " +
      "HOME=/tmp/vmb-install-x/compile-home DENO_DIR=/tmp/vmb-install-x/compile-home/deno-dir " +
      "NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 DENORT_BIN=/opt/denort /usr/bin/deno compile " +
      "--no-code-cache --no-prompt --allow-ffi --v8-flags=--single-threaded,--jitless --preload ./guard.ts " +
      "--output /tmp/vmb-install-x/qemu-bridge-helper ./helper.ts)",
  );
});

test("planInstall() with --destdir stages everything there and prints the setcap line instead", () => {
  const steps = planInstall(
    { ...INSTALL, destdir: "/stage", group: "vm" },
    { ...FACTS, existing: new Set(["/stage"]), dirs: new Map() },
  );
  assert.deepEqual(ops(steps).slice(-2), ["write-manifest", "print-setcap"]);
  assert.ok(!ops(steps).includes("setcap") && !ops(steps).includes("getcap"));
  const mkdirs = steps.filter((s) => s.op === "mkdir").map((s) => (s as { path: string }).path);
  assert.deepEqual(mkdirs, [
    "/stage/usr",
    "/stage/usr/local",
    "/stage/usr/local/libexec",
    "/stage/etc",
    "/stage/etc/qemu",
    "/stage/usr/local/share",
    "/stage/usr/local/share/vm-bridge",
  ]);
  const install = steps.find((s) => s.op === "install");
  assert.ok(install?.op === "install");
  assert.equal(install.to, "/stage/usr/local/libexec/qemu-bridge-helper");
  assert.equal(install.gid, 2000);
  assert.equal(
    describeStep(steps.at(-1)!),
    "not run with --destdir; run as root on the installed system: " +
      "setcap cap_net_admin+ep /usr/local/libexec/qemu-bridge-helper",
  );
  const manifest = steps.find((s) => s.op === "write-manifest");
  assert.ok(manifest?.op === "write-manifest");
  assert.equal(manifest.helper, "/usr/local/libexec/qemu-bridge-helper");
  assert.equal(manifest.helperFile, "/stage/usr/local/libexec/qemu-bridge-helper");
  assert.ok(manifest.manifest.dirs.every((d) => !d.startsWith("/stage")));
});

test("planInstall() keeps an existing bridge.conf and a previous install's record of ours", () => {
  const existing = new Set([...FACTS.existing, "/etc/qemu", "/etc/qemu/bridge.conf"]);
  const steps = planInstall(INSTALL, { ...FACTS, existing });
  assert.ok(steps.some((s) => s.op === "keep-bridge-conf"));
  assert.ok(!steps.some((s) => s.op === "create-bridge-conf"));
  const fresh = steps.find((s) => s.op === "write-manifest");
  assert.ok(fresh?.op === "write-manifest" && fresh.manifest.bridgeConf === null);

  const previous: Manifest = {
    format: 1,
    helper: { path: "/usr/local/libexec/qemu-bridge-helper", sha256: "a".repeat(64) },
    bridgeConf: { path: "/etc/qemu/bridge.conf", text: DEFAULT_BRIDGE_CONF },
    dirs: ["/etc/qemu"],
  };
  const again = planInstall(INSTALL, { ...FACTS, existing, previous });
  const m = again.find((s) => s.op === "write-manifest");
  assert.ok(m?.op === "write-manifest");
  assert.deepEqual(m.manifest.bridgeConf, previous.bridgeConf);
  assert.deepEqual(m.manifest.dirs, ["/etc/qemu", "/usr/local/share/vm-bridge"]);
});

test("planInstall() stops and asks for --group when kvm does not exist", () => {
  const groups = new Map([["root", 0]]);
  assert.throws(() => planInstall(INSTALL, { ...FACTS, groups }), {
    name: "InstallRefusal",
    message: /^the group kvm does not exist: pass --group GROUP/,
  });
  assert.throws(() => planInstall({ ...INSTALL, group: "vmx" }, FACTS), {
    message: "the group vmx does not exist",
  });
});

test("planInstall() refuses directories a user could write, symlinks, and nosuid mounts", () => {
  const cases: [{ uid: number; mode: number }, string][] = [
    [{ uid: 1000, mode: 0o40755 }, "is owned by uid 1000, not root"],
    [{ uid: 0, mode: 0o40775 }, "is writable by group or others (mode 0775)"],
    [{ uid: 0, mode: 0o41777 }, "is writable by group or others (mode 1777)"],
    [{ uid: 0, mode: 0o120777 }, "is a symbolic link: give the real path instead"],
    [{ uid: 0, mode: 0o100644 }, "is not a directory"],
  ];
  for (const [st, why] of cases) {
    const dirs = new Map([["/usr/local", st]]);
    assert.throws(() => planInstall(INSTALL, { ...FACTS, dirs }), (e) => {
      assert.ok(e instanceof InstallRefusal);
      assert.equal(
        e.message,
        `\`/usr/local' ${why}: every directory the installer writes into or deletes from must ` +
          "be root's and writable by root only, all the way from /",
      );
      return true;
    });
  }
  assert.throws(
    () => planInstall(INSTALL, { ...FACTS, mountOptions: ["rw", "nosuid"] }),
    { message: /mounted nosuid, so file capabilities are ignored there/ },
  );
});

const MANIFEST: Manifest = {
  format: 1,
  helper: { path: "/usr/local/libexec/qemu-bridge-helper", sha256: "b".repeat(64) },
  bridgeConf: { path: "/etc/qemu/bridge.conf", text: DEFAULT_BRIDGE_CONF },
  dirs: ["/usr/local/libexec", "/etc/qemu"],
};
const UNINSTALL: InstallOptions = { ...INSTALL, action: "uninstall" };

test("planUninstall() removes exactly what the manifest records, directories last and only if empty", () => {
  const { steps, notes } = planUninstall(UNINSTALL, {
    manifest: MANIFEST,
    helperSha256: "b".repeat(64),
    bridgeConfText: DEFAULT_BRIDGE_CONF,
  });
  assert.deepEqual(notes, []);
  assert.deepEqual(steps.map(describeStep), [
    "rm /usr/local/libexec/qemu-bridge-helper",
    "rm /etc/qemu/bridge.conf  # still exactly the default this installer wrote",
    "rm /usr/local/share/vm-bridge/install-manifest.json",
    "rmdir /etc/qemu  # only if empty",
    "rmdir /usr/local/libexec  # only if empty",
  ]);
});

test("planUninstall() keeps an edited bridge.conf and a replaced helper", () => {
  const { steps, notes } = planUninstall(UNINSTALL, {
    manifest: MANIFEST,
    helperSha256: "c".repeat(64),
    bridgeConfText: "allow br0\nallow br1\n",
  });
  assert.deepEqual(ops(steps), ["remove-manifest", "rmdir", "rmdir"]);
  assert.deepEqual(notes, [
    "keeping /usr/local/libexec/qemu-bridge-helper: it changed since it was installed",
    "keeping /etc/qemu/bridge.conf: it was edited since it was installed",
  ]);
});

test("planUninstall() never touches a bridge.conf it did not create, and needs a manifest", () => {
  const { steps } = planUninstall(UNINSTALL, {
    manifest: { ...MANIFEST, bridgeConf: null },
    helperSha256: "b".repeat(64),
    bridgeConfText: DEFAULT_BRIDGE_CONF,
  });
  assert.ok(!steps.some((s) => s.op === "remove-bridge-conf"));
  const none = planUninstall(UNINSTALL, {
    manifest: null,
    helperSha256: null,
    bridgeConfText: null,
  });
  assert.deepEqual(none.steps, []);
  assert.deepEqual(none.notes, [
    "nothing to uninstall: no manifest at /usr/local/share/vm-bridge/install-manifest.json",
  ]);
});

test("checkManifest() accepts ours and rejects anything else", () => {
  assert.deepEqual(checkManifest(JSON.parse(JSON.stringify(MANIFEST)), "/usr/local"), MANIFEST);
  const withDenort = { ...MANIFEST, denort: { source: "/opt/denort", sha256: "d".repeat(64) } };
  assert.deepEqual(checkManifest(withDenort, "/usr/local"), withDenort);
  for (
    const bad of [
      null,
      {},
      [],
      { ...MANIFEST, format: 2 },
      { ...MANIFEST, dirs: [1] },
      { ...MANIFEST, helper: { path: "/x", sha256: "z" } },
      { ...MANIFEST, denort: { source: "/opt/denort", sha256: "x" } },
    ]
  ) {
    assert.throws(() => checkManifest(bad, "/usr/local"), {
      name: "TypeError",
      message: "Not an install manifest of this installer",
    });
  }
});

test("checkManifest() accepts only the paths this installer could have installed", () => {
  const sha = "b".repeat(64);
  const never = (p: string) =>
    `it names \`${p}', which this installer never installs under /usr/local`;
  const cases: [unknown, string][] = [
    [{ ...MANIFEST, helper: { path: "/../victim", sha256: sha } }, never("/../victim")],
    [
      { ...MANIFEST, helper: { path: "/usr/local/libexec/../../../etc/shadow", sha256: sha } },
      never("/usr/local/libexec/../../../etc/shadow"),
    ],
    [
      { ...MANIFEST, helper: { path: "/usr/bin/qemu-bridge-helper", sha256: sha } },
      never(
        "/usr/bin/qemu-bridge-helper",
      ),
    ],
    [{ ...MANIFEST, bridgeConf: { path: "/etc/shadow", text: "" } }, never("/etc/shadow")],
    [{ ...MANIFEST, dirs: ["/var"] }, never("/var")],
    [{ ...MANIFEST, dirs: ["/usr/local/libexec/"] }, never("/usr/local/libexec/")],
    [
      { ...MANIFEST, dirs: ["/usr/local/libexec", "/usr/local/libexec"] },
      "it names a directory twice",
    ],
  ];
  for (const [bad, message] of cases) {
    assert.throws(() => checkManifest(bad, "/usr/local"), { name: "TypeError", message });
  }
  // The same manifest under another prefix names paths that prefix never installs.
  assert.throws(() => checkManifest(MANIFEST, "/opt/vm"), {
    message: "it names `/usr/local/libexec/qemu-bridge-helper', which this installer never " +
      "installs under /opt/vm",
  });
  assert.deepEqual(
    [...installableDirs("/usr/local")].sort(),
    [
      "/etc",
      "/etc/qemu",
      "/etc/systemd", // --service: the units' directory and its parent
      "/etc/systemd/system",
      "/usr",
      "/usr/local",
      "/usr/local/libexec",
      "/usr/local/share",
      "/usr/local/share/vm-bridge",
    ],
  );
});

test("judgeProbe() accepts only the usage line with exit 1", () => {
  const usage = { code: 1, stdout: "", stderr: USAGE + "\n" };
  assert.equal(judgeProbe([], usage), undefined);
  assert.equal(judgeProbe(["--version"], usage), undefined);
  assert.match(
    judgeProbe(["--version"], { code: 0, stdout: "deno 2.9.6 (stable)\nv8 15\n", stderr: "" })!,
    /^`BINARY --version' printed a Deno version: it is a bare Deno runtime/,
  );
  assert.match(
    judgeProbe([], { code: 0, stdout: "Deno 2.9.6\nexit using ctrl+d\n", stderr: "" })!,
    /printed a Deno version/,
  );
  assert.match(
    judgeProbe(["eval", "x"], { code: 0, stdout: "vmb-probe-ran\n", stderr: "" })!,
    /ran the code given to eval/,
  );
  assert.match(judgeProbe([], { ...usage, code: 0 })!, /did not print exactly the helper's usage/);
  assert.match(judgeProbe([], { ...usage, stdout: "x" })!, /did not print exactly/);
  assert.match(judgeProbe([], { ...usage, stderr: USAGE + "\nmore\n" })!, /did not print exactly/);
});

test("getcapShowsNetAdminOnly() wants exactly cap_net_admin=ep on that path", () => {
  const p = "/usr/local/libexec/qemu-bridge-helper";
  assert.ok(getcapShowsNetAdminOnly(`${p} cap_net_admin=ep\n`, p));
  assert.ok(!getcapShowsNetAdminOnly("", p));
  assert.ok(!getcapShowsNetAdminOnly(`${p} cap_net_admin,cap_net_raw=ep\n`, p));
  assert.ok(!getcapShowsNetAdminOnly(`${p} cap_net_admin=eip\n`, p));
  assert.ok(!getcapShowsNetAdminOnly(`${p} cap_net_admin=p\n`, p));
  assert.ok(!getcapShowsNetAdminOnly(`/other cap_net_admin=ep\n`, p));
});

test("mountOptionsFor() finds the per-mount options of the deepest (last) mount", () => {
  const info = [
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    "30 22 0:25 / /usr/local rw,nosuid,nodev shared:5 - tmpfs tmpfs rw",
    "31 22 0:26 / /usr/local2 rw shared:6 - tmpfs tmpfs rw",
    "32 22 0:27 / /with\\040space rw,noexec - tmpfs t rw",
    "",
  ].join("\n");
  assert.deepEqual(mountOptionsFor(info, "/usr/local/libexec/x"), ["rw", "nosuid", "nodev"]);
  assert.deepEqual(mountOptionsFor(info, "/usr/local2/x"), ["rw"]);
  assert.deepEqual(mountOptionsFor(info, "/usr/bin/x"), ["rw", "relatime"]);
  assert.deepEqual(mountOptionsFor(info, "/with space/x"), ["rw", "noexec"]);
  assert.deepEqual(mountOptionsFor("", "/x"), []);
});

test("compileArgs() is exactly the required deno compile command", () => {
  assert.deepEqual(compileArgs("/s/out"), [
    "compile",
    "--no-code-cache",
    "--no-prompt",
    "--allow-ffi",
    "--v8-flags=--single-threaded,--jitless",
    "--preload",
    "./guard.ts",
    "--output",
    "/s/out",
    "./helper.ts",
  ]);
});

test("compileEnv() is an allow-list: a fixed PATH, a private HOME and DENO_DIR, DENORT_BIN only from --denort", () => {
  const base = {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/tmp/s/compile-home",
    DENO_DIR: "/tmp/s/compile-home/deno-dir",
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
  };
  assert.deepEqual(compileEnv("/tmp/s/compile-home"), base);
  assert.deepEqual(compileEnv("/tmp/s/compile-home", "/opt/denort"), {
    ...base,
    DENORT_BIN: "/opt/denort",
  });
});

test("summarizeCompileError() keeps the error and its innermost cause on one line", () => {
  const stderr =
    "\x1b[0m\x1b[32mCompile\x1b[0m helper.ts\n\x1b[1m\x1b[31merror\x1b[0m: Writing failed\n" +
    "\nCaused by:\n    0: Setting up base binary.\n    1: dns error\n\nStack backtrace:\n   0: <unknown>\n";
  assert.equal(summarizeCompileError(stderr), "error: Writing failed (dns error)");
  assert.equal(summarizeCompileError(""), "no message");
});

test("shellQuote() leaves plain paths alone and quotes the rest", () => {
  assert.equal(shellQuote("/usr/local/libexec/x"), "/usr/local/libexec/x");
  assert.equal(shellQuote("/tmp/a b"), "'/tmp/a b'");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
});
