// `sudo deno task install-suid`: builds the helper and installs it with the file capability
// cap_net_admin+ep, the modern equivalent of set-user-ID for a helper that needs one capability.
// It never makes the helper set-user-ID root (see SECURITY.md). Planning is in _install_plan.ts.

import {
  CAPS,
  checkManifest,
  compileArgs,
  compileEnv,
  describeStep,
  getcapShowsNetAdminOnly,
  HELP,
  type InstallFacts,
  type InstallOptions,
  InstallRefusal,
  InstallUsageError,
  judgeProbe,
  judgeServiceProbe,
  type Manifest,
  mountOptionsFor,
  parseGroupFile,
  parseInstallArgs,
  pathsFor,
  planInstall,
  planUninstall,
  PROBES,
  type Step,
  summarizeCompileError,
  UNIT_DIR,
  UNITS,
  unitText,
} from "./_install_plan.ts";
import { readSmallFile } from "../sys/libc.ts";

const REPO = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const PROBE_TIMEOUT_MS = 15_000;

function say(line: string): void {
  console.log(line);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function sha256File(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function readManifest(path: string): Promise<Manifest | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  try {
    return checkManifest(JSON.parse(text));
  } catch (e) {
    throw new InstallRefusal(
      `${path} is not a manifest of this installer: ${(e as Error).message}`,
    );
  }
}

async function gatherInstallFacts(options: InstallOptions, staging: string): Promise<InstallFacts> {
  const d = options.destdir;
  if (d !== "" && !(await exists(d))) throw new InstallRefusal(`--destdir ${d} does not exist`);
  const final = pathsFor(options.prefix);
  const existing = new Set<string>();
  const dirs = new Map<string, { uid: number; mode: number }>();
  const candidates = new Set<string>();
  const service = options.service ? [final.service, ...UNITS.map((u) => `${UNIT_DIR}/${u}`)] : [];
  for (const path of [final.helper, final.bridgeConf, final.manifest, ...service]) {
    let p = path;
    candidates.add(d + p);
    while (p !== "/") {
      p = p.slice(0, p.lastIndexOf("/")) || "/";
      candidates.add(d + p);
    }
  }
  for (const path of candidates) if (await exists(path)) existing.add(path);
  let mountOptions: string[] = [];
  if (d === "") {
    // The real system: every directory down to the helper must be root's alone.
    let p = final.helper;
    while (p !== "/") {
      p = p.slice(0, p.lastIndexOf("/")) || "/";
      if (!existing.has(p)) continue;
      const st = await Deno.stat(p);
      dirs.set(p, { uid: st.uid ?? -1, mode: st.mode ?? 0o777 });
    }
    let deepest = final.helper;
    while (!existing.has(deepest)) deepest = deepest.slice(0, deepest.lastIndexOf("/")) || "/";
    mountOptions = mountOptionsFor(
      readSmallFile("/proc/self/mountinfo"),
      await Deno.realPath(deepest),
    );
  }
  return {
    groups: parseGroupFile(await Deno.readTextFile("/etc/group")),
    existing,
    dirs,
    previous: await readManifest(d + final.manifest),
    mountOptions,
    staging,
    deno: Deno.execPath(),
    repo: REPO,
  };
}

async function command(
  argv: readonly string[],
  opts: { env?: Record<string, string>; cwd?: string; clearEnv?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.clearEnv ? { clearEnv: true } : {}),
    signal: AbortSignal.timeout(10 * 60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs the probes on a candidate binary, in an empty directory with an empty environment. */
async function verifyHelper(path: string, scratch: string): Promise<void> {
  for (const args of PROBES) {
    let out;
    try {
      const r = await new Deno.Command(path, {
        args: [...args],
        cwd: scratch,
        clearEnv: true,
        env: { HOME: scratch, DENO_DIR: scratch, PATH: "/usr/bin:/bin" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      }).output();
      const dec = new TextDecoder();
      out = {
        code: r.signal ? -1 : r.code,
        stdout: dec.decode(r.stdout),
        stderr: dec.decode(r.stderr),
      };
    } catch (e) {
      throw new InstallRefusal(`cannot run ${path} to verify it: ${(e as Error).message}`);
    }
    const reason = judgeProbe(args, out);
    if (reason !== undefined) throw new InstallRefusal(`refusing to install ${path}: ${reason}`);
  }
}

/** Runs a candidate service binary once, as the installer (root), with an unknown argument. */
async function verifyService(path: string, scratch: string): Promise<void> {
  let out;
  try {
    const r = await new Deno.Command(path, {
      args: ["--vmb-install-probe"],
      cwd: scratch,
      clearEnv: true,
      env: { HOME: scratch, DENO_DIR: scratch, PATH: "/usr/bin:/bin" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
    }).output();
    const dec = new TextDecoder();
    out = {
      code: r.signal ? -1 : r.code,
      stdout: dec.decode(r.stdout),
      stderr: dec.decode(r.stderr),
    };
  } catch (e) {
    throw new InstallRefusal(`cannot run ${path} to verify it: ${(e as Error).message}`);
  }
  const reason = judgeServiceProbe(out);
  if (reason !== undefined) throw new InstallRefusal(`refusing to install ${path}: ${reason}`);
}

async function execute(step: Step, scratch: string): Promise<void> {
  switch (step.op) {
    case "compile": {
      const r = await command([step.deno, ...compileArgs(step.out, step.service ?? false)], {
        cwd: step.repo,
        clearEnv: true,
        env: compileEnv(Deno.env.toObject(), step.denort),
      });
      if (r.code !== 0) {
        throw new InstallRefusal(
          `deno compile failed (${r.code}): ${summarizeCompileError(r.stderr)}; ` +
            "without network, pass --denort PATH (a denort of the same Deno version) or " +
            "--binary PATH (a helper compiled elsewhere)",
        );
      }
      return;
    }
    case "stage":
      await Deno.copyFile(step.from, step.to);
      await Deno.chmod(step.to, 0o700);
      return;
    case "verify":
      return await verifyHelper(step.path, scratch);
    case "verify-service":
      return await verifyService(step.path, scratch);
    case "mkdir":
      await Deno.mkdir(step.path, { mode: 0o755 });
      await Deno.chown(step.path, 0, 0);
      await Deno.chmod(step.path, 0o755);
      return;
    case "install": {
      // Copy next to the target, set owner and mode, then rename over it: the target path never
      // holds a half-written or wrongly owned file, and set-user-ID bits are never set.
      const tmp = `${step.to}.vmb-new-${Deno.pid}`;
      await Deno.copyFile(step.from, tmp);
      try {
        await Deno.chown(tmp, 0, step.gid);
        await Deno.chmod(tmp, step.mode ?? 0o750);
        await Deno.rename(tmp, step.to);
      } catch (e) {
        await Deno.remove(tmp).catch(() => {});
        throw e;
      }
      return;
    }
    case "install-unit": {
      const tmp = `${step.to}.vmb-new-${Deno.pid}`;
      const text = unitText(await Deno.readTextFile(step.from), step.execStart);
      await Deno.writeTextFile(tmp, text, { mode: 0o644 });
      try {
        await Deno.chown(tmp, 0, 0);
        await Deno.chmod(tmp, 0o644);
        await Deno.rename(tmp, step.to);
      } catch (e) {
        await Deno.remove(tmp).catch(() => {});
        throw e;
      }
      return;
    }
    case "print-enable":
      return;
    case "remove-file":
      if ((await sha256File(step.path)) !== step.sha256) {
        throw new InstallRefusal(`${step.path} changed meanwhile; not removing it`);
      }
      await Deno.remove(step.path);
      return;
    case "create-bridge-conf": {
      // createNew: O_EXCL, so an ACL that appeared meanwhile is still never overwritten.
      await Deno.writeTextFile(step.path, step.text, { createNew: true, mode: 0o644 });
      await Deno.chown(step.path, 0, 0);
      await Deno.chmod(step.path, 0o644);
      return;
    }
    case "keep-bridge-conf":
      return;
    case "write-manifest": {
      const manifest: Manifest = {
        ...step.manifest,
        helper: { path: step.helper, sha256: await sha256File(step.helperFile) },
      };
      if (step.serviceFiles) {
        manifest.service = [];
        for (const f of step.serviceFiles) {
          manifest.service.push({ path: f.path, sha256: await sha256File(f.file) });
        }
      }
      const tmp = `${step.path}.vmb-new-${Deno.pid}`;
      await Deno.writeTextFile(tmp, JSON.stringify(manifest, null, 2) + "\n", { mode: 0o644 });
      await Deno.chown(tmp, 0, 0);
      await Deno.chmod(tmp, 0o644);
      await Deno.rename(tmp, step.path);
      return;
    }
    case "setcap": {
      const r = await command(["setcap", CAPS, step.path]);
      if (r.code !== 0) throw new InstallRefusal(`setcap failed: ${r.stderr.trim()}`);
      return;
    }
    case "getcap": {
      const r = await command(["getcap", step.path]);
      if (r.code !== 0 || !getcapShowsNetAdminOnly(r.stdout, step.path)) {
        throw new InstallRefusal(
          `getcap does not show exactly cap_net_admin=ep on ${step.path}: ` +
            JSON.stringify((r.stdout + r.stderr).trim()),
        );
      }
      say(`    ${r.stdout.trim()}`);
      return;
    }
    case "print-setcap":
      return;
    case "remove-helper":
      // Checked again right before removing: only the bytes this installer put there.
      if ((await sha256File(step.path)) !== step.sha256) {
        throw new InstallRefusal(`${step.path} changed meanwhile; not removing it`);
      }
      await Deno.remove(step.path);
      return;
    case "remove-bridge-conf":
      if ((await Deno.readTextFile(step.path)) !== step.text) {
        throw new InstallRefusal(`${step.path} changed meanwhile; not removing it`);
      }
      await Deno.remove(step.path);
      return;
    case "rmdir":
      try {
        await Deno.remove(step.path); // not recursive: fails on a non-empty directory
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return;
        say(`    kept ${step.path}: not empty`);
      }
      return;
    case "remove-manifest":
      await Deno.remove(step.path).catch((e) => {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      });
      return;
  }
}

async function run(options: InstallOptions): Promise<number> {
  if (!options.dryRun && Deno.uid() !== 0) {
    throw new InstallRefusal(
      "must run as root (sudo deno task install-suid); --dry-run shows the steps without root",
    );
  }
  const scratch = options.dryRun ? "$STAGING" : await Deno.makeTempDir({ prefix: "vmb-install-" }); // mode 0700, root's
  try {
    let steps: Step[];
    if (options.action === "uninstall") {
      const final = pathsFor(options.prefix);
      const manifest = await readManifest(options.destdir + final.manifest);
      const helperPath = manifest ? options.destdir + manifest.helper.path : "";
      const confPath = manifest?.bridgeConf ? options.destdir + manifest.bridgeConf.path : "";
      const serviceSha256 = new Map<string, string | null>();
      for (const f of manifest?.service ?? []) {
        const path = options.destdir + f.path;
        serviceSha256.set(f.path, (await exists(path)) ? await sha256File(path) : null);
      }
      const plan = planUninstall(options, {
        manifest,
        serviceSha256,
        helperSha256: manifest && (await exists(helperPath)) ? await sha256File(helperPath) : null,
        bridgeConfText: confPath && (await exists(confPath))
          ? await Deno.readTextFile(confPath)
          : null,
      });
      for (const note of plan.notes) say(`note: ${note}`);
      steps = plan.steps;
    } else {
      steps = planInstall(options, await gatherInstallFacts(options, scratch));
    }
    for (const step of steps) {
      say(`${options.dryRun ? "would: " : "==> "}${describeStep(step)}`);
      if (!options.dryRun) await execute(step, scratch);
    }
    say(options.dryRun ? "dry run: nothing was changed" : "done");
    return 0;
  } finally {
    if (!options.dryRun) await Deno.remove(scratch, { recursive: true });
  }
}

/** Entry point: returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  let options: InstallOptions;
  try {
    options = parseInstallArgs(argv);
  } catch (e) {
    console.error(`install-suid: ${(e as Error).message}`);
    return 2;
  }
  if (options.action === "help") {
    say(HELP);
    return 0;
  }
  try {
    return await run(options);
  } catch (e) {
    if (e instanceof InstallRefusal || e instanceof InstallUsageError) {
      console.error(`install-suid: ${e.message}`);
    } else {
      console.error(`install-suid: ${e instanceof Error ? e.message : String(e)}`);
    }
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
