// Sets a machine up for `deno task demo` and `deno task test` (which run this first): finds the
// Debian packages of scripts/packages.txt (the list .ci/run installs too) that are missing, and,
// as root on Debian or Ubuntu, says what it will install and installs it with apt-get. Anywhere
// else it stops before anything runs, with one line naming the packages and the command.
// `--for=test` also caches, as root, what the tests need inside network namespaces (where no
// registry is reachable): scripts/cache-deps.sh.
//
//   deno run --allow-read --allow-run --allow-sys=uid scripts/setup.ts --for=test|demo|qemu|v86

/** The package list, next to this file. */
export const PACKAGE_LIST: string = new URL("./packages.txt", import.meta.url).pathname;

/** One line of scripts/packages.txt. */
export interface PackageSpec {
  /** The Debian package name. */
  name: string;
  /** What needs it: `demo`, `qemu`, `v86`, `test`, `bench`. */
  for: ReadonlySet<string>;
  /** A command on PATH, or an absolute path (its last part may end in `*`), that shows it is there. */
  probe: string;
}

const PURPOSES: ReadonlySet<string> = new Set(["demo", "qemu", "v86", "hosts", "test", "bench"]);

/**
 * Parses scripts/packages.txt: `package purposes probe` a line, `#` comments. Pure.
 *
 * @throws {SyntaxError} on a malformed line, naming it.
 */
export function parsePackageList(text: string): PackageSpec[] {
  const out: PackageSpec[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") continue;
    const words = line.split(/\s+/);
    const bad = (why: string) => new SyntaxError(`packages.txt:${i + 1}: ${why}: "${raw}"`);
    if (words.length !== 3) throw bad("expected: package purposes probe");
    const [name, purposes, probe] = words as [string, string, string];
    if (!/^[a-z0-9][a-z0-9+.-]+$/.test(name)) throw bad("not a Debian package name");
    const set = new Set(purposes.split(","));
    for (const p of set) if (!PURPOSES.has(p)) throw bad(`unknown purpose "${p}"`);
    out.push({ name, for: set, probe });
  }
  return out;
}

/** What the machine is, as far as setting it up goes. */
export interface Machine {
  /** Running as root. */
  root: boolean;
  /** Debian or Ubuntu (or derived from them) with apt-get and dpkg-query. */
  apt: boolean;
}

/** What {@linkcode planSetup} decided. */
export type SetupPlan =
  | { action: "none" }
  | { action: "install"; packages: string[]; message: string }
  | { action: "stop"; message: string };

/**
 * Decides, from the packages that are missing, what to do. Pure.
 *
 * @param missing the missing packages needed for `what`, in list order
 * @param what the command being set up, for messages (`deno task test`)
 */
export function planSetup(
  missing: readonly PackageSpec[],
  machine: Machine,
  what: string,
): SetupPlan {
  if (missing.length === 0) return { action: "none" };
  const names = missing.map((p) => p.name);
  const list = names.join(" ");
  const cmd = `apt-get install -y --no-install-recommends ${list}`;
  if (machine.apt && machine.root) {
    return {
      action: "install",
      packages: names,
      message: `${what} needs Debian packages that are missing; installing with apt-get: ${list}`,
    };
  }
  if (machine.apt) {
    return {
      action: "stop",
      message:
        `${what} needs Debian packages that are missing: ${list}; install them with: sudo ${cmd}`,
    };
  }
  const probes = missing.map((p) => `${p.name} (${p.probe})`).join(", ");
  return {
    action: "stop",
    message: `${what} needs what these Debian/Ubuntu packages provide: ${probes}; ` +
      `install the equivalents with your package manager (on Debian/Ubuntu: sudo ${cmd})`,
  };
}

// ---------------------------------------------------------------------------------------------
// I/O

async function output(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { LC_ALL: "C" },
    }).output();
    const dec = new TextDecoder();
    return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { code: 127, stdout: "", stderr: String(e) };
    throw e;
  }
}

/** Debian or Ubuntu (ID or ID_LIKE in /etc/os-release) with apt-get and dpkg-query. */
export async function detectApt(): Promise<boolean> {
  let osRelease = "";
  try {
    osRelease = await Deno.readTextFile("/etc/os-release");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const ids = [...osRelease.matchAll(/^(?:ID|ID_LIKE)="?([^"\n]*)"?$/gm)]
    .flatMap((m) => m[1]!.split(/\s+/));
  if (!ids.some((id) => id === "debian" || id === "ubuntu")) return false;
  const r = await output(["sh", "-c", "command -v apt-get && command -v dpkg-query"]);
  return r.code === 0;
}

/** The packages dpkg does not have installed ("install ok installed"). */
async function missingByDpkg(specs: readonly PackageSpec[]): Promise<PackageSpec[]> {
  const r = await output([
    "dpkg-query",
    "-W",
    "-f=${Package} ${Status}\\n",
    ...specs.map((s) => s.name),
  ]);
  const installed = new Set(
    r.stdout.split("\n").filter((l) => l.endsWith(" install ok installed")).map((l) =>
      l.split(" ")[0]!.replace(/:.*/, "")
    ),
  );
  return specs.filter((s) => !installed.has(s.name));
}

/** The packages whose probe finds nothing (machines without dpkg). */
async function missingByProbe(specs: readonly PackageSpec[]): Promise<PackageSpec[]> {
  const out: PackageSpec[] = [];
  for (const s of specs) {
    const found = s.probe.startsWith("/")
      ? await pathExists(s.probe)
      : (await output(["sh", "-c", 'command -v "$1"', "sh", s.probe])).code === 0;
    if (!found) out.push(s);
  }
  return out;
}

async function pathExists(path: string): Promise<boolean> {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const base = path.slice(path.lastIndexOf("/") + 1);
  try {
    if (!base.endsWith("*")) {
      await Deno.stat(path);
      return true;
    }
    for await (const e of Deno.readDir(dir)) if (e.name.startsWith(base.slice(0, -1))) return true;
    return false;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Makes sure the packages `purposes` need are installed: installs them as root on Debian and
 * Ubuntu, else stops the process with one line on stderr (exit 1).
 *
 * Requires `--allow-read`, `--allow-run` and `--allow-sys=uid`.
 */
export async function ensurePackages(purposes: readonly string[], what: string): Promise<void> {
  const all = parsePackageList(await Deno.readTextFile(PACKAGE_LIST));
  const wanted = all.filter((p) => purposes.some((x) => p.for.has(x)));
  const machine = { root: Deno.uid() === 0, apt: await detectApt() };
  const missing = machine.apt ? await missingByDpkg(wanted) : await missingByProbe(wanted);
  const plan = planSetup(missing, machine, what);
  if (plan.action === "none") return;
  if (plan.action === "stop") fail(plan.message);
  console.error(`setup: ${plan.message}`);
  const apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"];
  const update = await aptRun([...apt, "update"]);
  if (update !== 0) fail(`apt-get update failed (exit ${update}); see its output above`);
  const install = await aptRun([
    ...apt,
    "install",
    "-y",
    "--no-install-recommends",
    ...plan.packages,
  ]);
  if (install !== 0) fail(`apt-get install ${plan.packages.join(" ")} failed (exit ${install})`);
  const still = await missingByDpkg(wanted);
  if (still.length) {
    fail(`still missing after apt-get install: ${still.map((p) => p.name).join(" ")}`);
  }
}

/** Runs apt-get with its output on our stderr (stdout stays for the command being set up). */
async function aptRun(argv: string[]): Promise<number> {
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
    env: { DEBIAN_FRONTEND: "noninteractive" },
  }).spawn();
  await child.stdout.pipeTo(Deno.stderr.writable, { preventClose: true });
  return (await child.status).code;
}

function fail(message: string): never {
  console.error(`setup: ${message}`);
  Deno.exit(1);
}

if (import.meta.main) {
  const arg = Deno.args.find((a) => a.startsWith("--for="));
  const purpose = arg?.slice("--for=".length);
  if (Deno.args.length !== 1 || purpose === undefined || !PURPOSES.has(purpose)) {
    fail(`usage: setup.ts --for=demo|qemu|v86|test|bench (got: ${Deno.args.join(" ")})`);
  }
  const what = purpose === "test" ? "deno task test" : `deno task ${purpose}`;
  await ensurePackages([purpose], what);
  if (purpose === "test" && Deno.uid() === 0) {
    // npm:v86 and the v86 guest, fetched while the network is reachable: the tests run them in
    // network namespaces, where no registry is.
    const r = await output(["bash", new URL("./cache-deps.sh", import.meta.url).pathname]);
    if (r.code !== 0) {
      console.error(r.stdout + r.stderr);
      fail(`bash scripts/cache-deps.sh failed (exit ${r.code}); its output is above`);
    }
  }
}
