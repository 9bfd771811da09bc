// scripts/setup.ts, run first by `deno task test` and `deno task demo`: on a fresh machine it
// installs what is missing (root on Debian/Ubuntu) or stops with one line. The machine's own
// packages are never touched: the runs below see a fake dpkg-query and apt-get on PATH.

import assert from "node:assert/strict";
import {
  PACKAGE_LIST,
  type PackageSpec,
  parsePackageList,
  planSetup,
} from "../../scripts/setup.ts";
import { ROOT, rootTest, run } from "../_support/ns.ts";
import { sourceForOthers } from "../_support/readable_source.ts";

const spec = (name: string, probe = name): PackageSpec => ({
  name,
  for: new Set(["test"]),
  probe,
});

Deno.test({
  name: "parsePackageList() reads package, purposes and probe, and names a bad line",
  permissions: "none",
  fn() {
    const list = parsePackageList("# c\n\niproute2  demo,test  ip   # comment\nseabios v86 /x\n");
    assert.deepEqual(list, [
      { name: "iproute2", for: new Set(["demo", "test"]), probe: "ip" },
      { name: "seabios", for: new Set(["v86"]), probe: "/x" },
    ]);
    assert.throws(() => parsePackageList("iproute2 test\n"), {
      name: "SyntaxError",
      message: 'packages.txt:1: expected: package purposes probe: "iproute2 test"',
    });
    assert.throws(() => parsePackageList("\nx11 nope ip\n"), {
      name: "SyntaxError",
      message: 'packages.txt:2: unknown purpose "nope": "x11 nope ip"',
    });
  },
});

Deno.test("scripts/packages.txt parses and covers what the tests and the demo run", async () => {
  const list = parsePackageList(await Deno.readTextFile(PACKAGE_LIST));
  const forTest = list.filter((p) => p.for.has("test")).map((p) => p.name);
  for (const p of ["iproute2", "util-linux", "iputils-ping", "qemu-system-x86", "seabios"]) {
    assert.ok(forTest.includes(p), `${p} is not marked for test`);
  }
  assert.deepEqual(
    list.filter((p) => p.for.has("demo")).map((p) => p.name),
    ["iproute2", "util-linux", "iputils-ping"],
  );
  // .ci/run installs the same list: it reads this file rather than keeping its own.
  const ci = await Deno.readTextFile(`${ROOT}/.ci/run`);
  assert.match(ci, /scripts\/packages\.txt/);
  assert.doesNotMatch(ci, /PACKAGES=\(/);
});

Deno.test({
  name: "planSetup(): nothing missing, install as root with apt, else stop with one line",
  permissions: "none",
  fn() {
    const what = "deno task test";
    assert.deepEqual(planSetup([], { root: false, apt: false }, what), { action: "none" });
    const missing = [spec("iproute2", "ip"), spec("seabios", "/usr/share/seabios/bios-256k.bin")];
    assert.deepEqual(planSetup(missing, { root: true, apt: true }, what), {
      action: "install",
      packages: ["iproute2", "seabios"],
      message:
        "deno task test needs Debian packages that are missing; installing with apt-get: iproute2 seabios",
    });
    assert.deepEqual(planSetup(missing, { root: false, apt: true }, what), {
      action: "stop",
      message: "deno task test needs Debian packages that are missing: iproute2 seabios; " +
        "install them with: sudo apt-get install -y --no-install-recommends iproute2 seabios",
    });
    const other = planSetup(missing, { root: true, apt: false }, what);
    assert.equal(other.action, "stop");
    assert.match(
      (other as { message: string }).message,
      /^deno task test needs what these Debian\/Ubuntu packages provide: iproute2 \(ip\), seabios \(\/usr\/share\/seabios\/bios-256k\.bin\); install the equivalents with your package manager \(on Debian\/Ubuntu: sudo apt-get install -y --no-install-recommends iproute2 seabios\)$/,
    );
    for (const p of [planSetup(missing, { root: false, apt: true }, what), other]) {
      assert.ok(!(p as { message: string }).message.includes("\n"), "one line");
    }
  },
});

/**
 * A fake dpkg-query that reports `notInstalled` as not installed until the fake apt-get
 * "installs" them, and a fake apt-get that logs its arguments.
 */
async function fakeApt(notInstalled: string[]): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "vmb-fake-apt-" });
  await Deno.chmod(dir, 0o777);
  await Deno.writeTextFile(`${dir}/missing`, notInstalled.join("\n") + "\n", { mode: 0o666 });
  await Deno.chmod(`${dir}/missing`, 0o666);
  await Deno.writeTextFile(
    `${dir}/dpkg-query`,
    `#!/bin/sh
shift 2
for p in "$@"; do
  if grep -qx "$p" ${dir}/missing; then echo "$p unknown ok not-installed"
  else echo "$p install ok installed"; fi
done
`,
    { mode: 0o755 },
  );
  await Deno.writeTextFile(
    `${dir}/apt-get`,
    `#!/bin/sh
echo "apt-get $*" >> ${dir}/log
case " $* " in *" install "*) : > ${dir}/missing ;; esac
echo "fake apt-get ran"
`,
    { mode: 0o755 },
  );
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function setup(
  fake: string,
  prefix: string[],
  root = ROOT,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const argv = [
    ...prefix,
    // From /: another user may not be able to enter the checkout, the test's cwd.
    ...["sh", "-c", 'cd / && exec "$@"', "sh"],
    "env",
    `PATH=${fake}:/usr/sbin:/usr/bin:/sbin:/bin`,
    "HOME=/nonexistent",
    `DENO_DIR=${fake}/deno-dir`,
    Deno.execPath(),
    "run",
    "--no-prompt",
    "--allow-read",
    "--allow-run",
    "--allow-sys=uid",
    `${root}/scripts/setup.ts`,
    "--for=demo",
  ];
  return await run(argv);
}

async function readLog(dir: string): Promise<string> {
  try {
    return await Deno.readTextFile(`${dir}/log`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

rootTest(
  "setup as root on Debian: says what it installs, apt-get update, then install",
  async () => {
    await using fake = await fakeApt(["iputils-ping", "iproute2"]);
    const r = await setup(fake.dir, []);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "", "apt-get's output goes to stderr");
    assert.match(
      r.stderr,
      /^setup: deno task demo needs Debian packages that are missing; installing with apt-get: iproute2 iputils-ping\n/,
    );
    assert.deepEqual((await readLog(fake.dir)).trim().split("\n"), [
      "apt-get -q -o DPkg::Lock::Timeout=300 update",
      "apt-get -q -o DPkg::Lock::Timeout=300 install -y --no-install-recommends iproute2 iputils-ping",
    ]);
    // Nothing missing any more: a second run is silent and runs no apt-get.
    await Deno.remove(`${fake.dir}/log`);
    const again = await setup(fake.dir, []);
    assert.deepEqual([again.code, again.stderr, await readLog(fake.dir)], [0, "", ""]);
  },
);

rootTest(
  "setup not as root: one line naming the packages and the command, nothing run",
  async () => {
    await using fake = await fakeApt(["iputils-ping"]);
    await Deno.mkdir(`${fake.dir}/deno-dir`, { mode: 0o777 });
    await Deno.chmod(`${fake.dir}/deno-dir`, 0o777);
    const src = await sourceForOthers();
    const r = await setup(
      fake.dir,
      ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
      src.root,
    );
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      "setup: deno task demo needs Debian packages that are missing: iputils-ping; " +
        "install them with: sudo apt-get install -y --no-install-recommends iputils-ping\n",
    );
    assert.equal(await readLog(fake.dir), "", "apt-get ran");
  },
);

rootTest("setup on a machine that is not Debian or Ubuntu: one line, nothing run", async () => {
  await using fake = await fakeApt([]);
  await Deno.writeTextFile(`${fake.dir}/os-release`, 'ID=fedora\nNAME="Fedora Linux"\n');
  // A PATH without ping: the probe for iputils-ping finds nothing.
  const bin = `${fake.dir}/bin`;
  await Deno.mkdir(bin);
  for (const c of ["sh", "ip", "unshare", "env"]) {
    const w = await run(["sh", "-c", `command -v ${c}`]);
    await Deno.symlink(w.stdout.trim(), `${bin}/${c}`);
  }
  const r = await run([
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    `mount --bind ${fake.dir}/os-release /etc/os-release && exec "$@"`,
    "sh",
    "env",
    `PATH=${bin}`,
    `DENO_DIR=${fake.dir}/deno-dir`,
    Deno.execPath(),
    "run",
    "--no-prompt",
    "--allow-read",
    "--allow-run",
    "--allow-sys=uid",
    `${ROOT}/scripts/setup.ts`,
    "--for=demo",
  ]);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr,
    "setup: deno task demo needs what these Debian/Ubuntu packages provide: iputils-ping (ping); " +
      "install the equivalents with your package manager " +
      "(on Debian/Ubuntu: sudo apt-get install -y --no-install-recommends iputils-ping)\n",
  );
  assert.equal(await readLog(fake.dir), "");
});
