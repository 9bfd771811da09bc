// `sudo deno task install-suid`: builds the helper and installs it with the file capability
// cap_net_admin+ep, the modern equivalent of set-user-ID for a helper that needs one capability.
// It never makes the helper set-user-ID root (see SECURITY.md). Planning is in _install_plan.ts.

import { createHash } from "node:crypto";
import {
  CAPS,
  checkDirs,
  checkManifest,
  compileArgs,
  compileEnv,
  type DenortRecord,
  describeStep,
  DIR_RULE,
  dirChain,
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
  type ProbeOutput,
  PROBES,
  SERVICE_PROBES,
  type Step,
  summarizeCompileError,
  targetDirs,
  unitText,
} from "./_install_plan.ts";
import {
  type ExpectedBuild,
  HELPER_BUILD,
  judgeMetadata,
  readStandaloneMetadata,
  SERVICE_BUILD,
} from "./_denort_meta.ts";
import { judgeOwnFile, SafeDir, splitPath, UnsafePathError } from "./_safe_fs.ts";
import { E, OsError, readSmallFile } from "../sys/libc.ts";

const REPO = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const PROBE_TIMEOUT_MS = 15_000;
/** Upper bounds for what is read back: a manifest is a few hundred bytes, a binary ~100 MB. */
const MANIFEST_LIMIT = 1 << 20;
const HELPER_LIMIT = 1 << 30;

function say(line: string): void {
  console.log(line);
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return null;
    throw e;
  }
}

/**
 * Reads a file through directories verified from `/` (see _safe_fs.ts); null when it or one of
 * its directories does not exist.
 */
function readVerified(
  path: string,
  limit: number,
): { stat: { mode: number; uid: number }; bytes: Uint8Array<ArrayBuffer> } | null {
  const { dir, name } = splitPath(path);
  if (SafeDir.inspect(dir) !== null) return null;
  using d = SafeDir.open(dir);
  return d.readFile(name, limit);
}

/**
 * The manifest of an earlier install, or null. It decides what uninstall deletes, so it is read
 * only from a root-owned file, not writable by group or others, in verified directories, and only
 * its fixed set of paths is accepted (checkManifest).
 */
function readManifest(options: InstallOptions): Manifest | null {
  const path = options.destdir + pathsFor(options.prefix).manifest;
  const found = readVerified(path, MANIFEST_LIMIT);
  if (found === null) return null;
  const why = judgeOwnFile(path, found.stat);
  if (why !== undefined) {
    throw new InstallRefusal(`${why}: only a manifest root alone could have written is trusted`);
  }
  try {
    return checkManifest(JSON.parse(new TextDecoder().decode(found.bytes)), options.prefix);
  } catch (e) {
    throw new InstallRefusal(
      `${path} is not a manifest of this installer: ${(e as Error).message}`,
    );
  }
}

async function gatherInstallFacts(options: InstallOptions, staging: string): Promise<InstallFacts> {
  const d = options.destdir;
  const final = pathsFor(options.prefix);
  // Every directory from / down to each directory written into (DESTDIR's own parents too):
  // planInstall() refuses the install unless each existing one is root's alone.
  const chain = new Set<string>();
  for (const dir of targetDirs(options.prefix, options.service)) {
    for (const p of dirChain(d + dir)) {
      chain.add(p);
    }
  }
  if (d !== "") { for (const p of dirChain(d)) chain.add(p); }
  const existing = new Set<string>();
  const dirs = new Map<string, { uid: number; mode: number }>();
  for (const p of chain) {
    const st = await lstatOrNull(p);
    if (st === null) continue;
    existing.add(p);
    dirs.set(p, { uid: st.uid ?? -1, mode: st.mode ?? 0 });
  }
  for (
    const path of [final.helper, final.bridgeConf, final.manifest, final.service, ...final.units]
  ) {
    if ((await lstatOrNull(d + path)) !== null) existing.add(d + path);
  }
  const facts: InstallFacts = {
    groups: parseGroupFile(await Deno.readTextFile("/etc/group")),
    existing,
    dirs,
    previous: null,
    mountOptions: [],
    staging,
    deno: Deno.execPath(),
    repo: REPO,
  };
  // Judge the directories before reading anything in them (planInstall judges them again).
  checkDirs(dirs);
  facts.previous = readManifest(options);
  if (d === "") {
    let deepest = final.helper;
    while (!existing.has(deepest)) deepest = deepest.slice(0, deepest.lastIndexOf("/")) || "/";
    facts.mountOptions = mountOptionsFor(
      readSmallFile("/proc/self/mountinfo"),
      await Deno.realPath(deepest),
    );
  }
  return facts;
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

/**
 * Verifies a candidate binary before it is ever run: its embedded `deno compile` metadata must
 * be exactly `build`. Then runs the probes, in an empty directory with an empty environment.
 */
async function verifyBinary(
  path: string,
  scratch: string,
  build: ExpectedBuild,
  probes: readonly (readonly string[])[],
  judge: (args: readonly string[], out: ProbeOutput) => string | undefined,
): Promise<void> {
  let problems: string[];
  try {
    problems = judgeMetadata(readStandaloneMetadata(await Deno.readFile(path)), build);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    throw new InstallRefusal(`refusing to install ${path}: ${e.message}`);
  }
  if (problems.length > 0) {
    throw new InstallRefusal(
      `refusing to install ${path}: it is not our ${build.name}'s build: ${problems.join("; ")}`,
    );
  }
  for (const args of probes) {
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
    const reason = judge(args, out);
    if (reason !== undefined) throw new InstallRefusal(`refusing to install ${path}: ${reason}`);
  }
}

/** The files under `dir`, recursively (no symlinks followed). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else out.push(`${d}/${e.name}`);
    }
  };
  if ((await lstatOrNull(dir)) !== null) await walk(dir);
  return out;
}

/** Which denort `deno compile` used: --denort, or the one archive it downloaded privately. */
async function denortUsed(step: Extract<Step, { op: "compile" }>): Promise<DenortRecord> {
  if (step.denort !== undefined) {
    return { source: step.denort, sha256: sha256(await Deno.readFile(step.denort)) };
  }
  const dl = `${step.home}/deno-dir/dl`;
  const files = await filesUnder(dl);
  if (files.length !== 1) {
    throw new InstallRefusal(
      `cannot tell which denort deno compile used: ${files.length} files in its private ` +
        `download cache; pass --denort PATH`,
    );
  }
  const file = files[0]!;
  return {
    source: `https://dl.deno.land/${file.slice(dl.length + 1)}`,
    sha256: sha256(await Deno.readFile(file)),
  };
}

/** What executing the steps has learned so far, for the manifest. */
interface RunState {
  denort?: DenortRecord;
  /** SHA-256 of the bytes the install steps wrote, by file (destdir applied). */
  written: Map<string, string>;
}

async function execute(step: Step, scratch: string, state: RunState): Promise<void> {
  switch (step.op) {
    case "compile": {
      await Deno.mkdir(`${step.home}/deno-dir`, { recursive: true, mode: 0o700 });
      const r = await command([step.deno, ...compileArgs(step.out, step.service ?? false)], {
        cwd: step.repo,
        clearEnv: true,
        env: compileEnv(step.home, step.denort),
      });
      if (r.code !== 0) {
        throw new InstallRefusal(
          `deno compile failed (${r.code}): ${summarizeCompileError(r.stderr)}; ` +
            "without network, pass --denort PATH (a denort of the same Deno version) or " +
            (step.service
              ? "--service-binary PATH (a vm-bridged compiled elsewhere)"
              : "--binary PATH (a helper compiled elsewhere)"),
        );
      }
      const used = await denortUsed(step);
      // Both compiles of a --service install share the private cache: one denort, one record.
      if (state.denort !== undefined && JSON.stringify(state.denort) !== JSON.stringify(used)) {
        throw new InstallRefusal(
          `the two compiles used different denorts: ${state.denort.sha256} and ${used.sha256}`,
        );
      }
      state.denort = used;
      say(`    denort ${used.source} sha256 ${used.sha256}`);
      return;
    }
    case "stage":
      await Deno.copyFile(step.from, step.to);
      await Deno.chmod(step.to, 0o700);
      return;
    case "verify":
      return await verifyBinary(step.path, scratch, HELPER_BUILD, PROBES, judgeProbe);
    case "verify-service":
      return await verifyBinary(
        step.path,
        scratch,
        SERVICE_BUILD,
        SERVICE_PROBES,
        judgeServiceProbe,
      );
    case "mkdir": {
      const { dir, name } = splitPath(step.path);
      using parent = SafeDir.open(dir);
      parent.openDir(name, { create: true })?.close();
      return;
    }
    case "install": {
      // Written under a random name with O_EXCL|O_NOFOLLOW in the verified directory, owner and
      // mode set through the fd, then renamed over the target: the target path never holds a
      // half-written or wrongly owned file, and set-user-ID bits are never set.
      const bytes = await Deno.readFile(step.from);
      const { dir, name } = splitPath(step.to);
      using d = SafeDir.open(dir);
      d.writeFile(name, bytes, { uid: 0, gid: step.gid, mode: step.mode ?? 0o750, replace: true });
      state.written.set(step.to, sha256(bytes));
      return;
    }
    case "install-unit": {
      const text = await Deno.readTextFile(step.from);
      const bytes = new TextEncoder().encode(
        step.execStart === undefined ? text : unitText(text, step.execStart),
      );
      const { dir, name } = splitPath(step.to);
      using d = SafeDir.open(dir);
      d.writeFile(name, bytes, { uid: 0, gid: 0, mode: 0o644, replace: true });
      state.written.set(step.to, sha256(bytes));
      return;
    }
    case "print-enable":
      return;
    case "remove-file":
    case "remove-helper": {
      // Checked again right before removing: only the bytes this installer put there.
      const { dir, name } = splitPath(step.path);
      using d = SafeDir.open(dir);
      d.removeFile(
        name,
        HELPER_LIMIT,
        (bytes) =>
          sha256(bytes) === step.sha256
            ? undefined
            : `${step.path} changed meanwhile; not removing it`,
      );
      return;
    }
    case "create-bridge-conf": {
      // RENAME_NOREPLACE: an ACL that appeared meanwhile is still never overwritten.
      const { dir, name } = splitPath(step.path);
      using d = SafeDir.open(dir);
      try {
        d.writeFile(name, new TextEncoder().encode(step.text), {
          uid: 0,
          gid: 0,
          mode: 0o644,
          replace: false,
        });
      } catch (e) {
        if (e instanceof OsError && e.errno === E.EEXIST) {
          throw new InstallRefusal(`${step.path} appeared meanwhile; it is never overwritten`);
        }
        throw e;
      }
      return;
    }
    case "keep-bridge-conf":
      return;
    case "write-manifest": {
      // The hash of exactly the bytes the install step wrote (it always runs first).
      const helperSha256 = state.written.get(step.helperFile);
      if (helperSha256 === undefined) {
        throw new InstallRefusal(`${step.helperFile} was not installed in this run`);
      }
      const manifest: Manifest = {
        ...step.manifest,
        helper: { path: step.helper, sha256: helperSha256 },
        denort: state.denort ?? null,
      };
      if (step.serviceFiles !== undefined) {
        manifest.service = step.serviceFiles.map((f) => {
          const sha = state.written.get(f.file);
          if (sha === undefined) {
            throw new InstallRefusal(`${f.file} was not installed in this run`);
          }
          return { path: f.path, sha256: sha };
        });
      }
      const { dir, name } = splitPath(step.path);
      using d = SafeDir.open(dir);
      d.writeFile(name, new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n"), {
        uid: 0,
        gid: 0,
        mode: 0o644,
        replace: true,
      });
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
    case "remove-bridge-conf": {
      const { dir, name } = splitPath(step.path);
      using d = SafeDir.open(dir);
      d.removeFile(
        name,
        MANIFEST_LIMIT,
        (bytes) =>
          new TextDecoder().decode(bytes) === step.text
            ? undefined
            : `${step.path} changed meanwhile; not removing it`,
      );
      return;
    }
    case "rmdir": {
      const { dir, name } = splitPath(step.path);
      if (SafeDir.inspect(dir) !== null) return;
      using parent = SafeDir.open(dir);
      if (parent.removeDir(name) === "not empty") say(`    kept ${step.path}: not empty`);
      return;
    }
    case "remove-manifest": {
      const { dir, name } = splitPath(step.path);
      if (SafeDir.inspect(dir) !== null) return;
      using d = SafeDir.open(dir);
      d.removeFile(name, MANIFEST_LIMIT, (_, st) => judgeOwnFile(step.path, st));
      return;
    }
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
      // Every directory it may delete from, checked from / before anything is read or removed.
      for (const dir of targetDirs(options.prefix)) SafeDir.inspect(options.destdir + dir);
      const manifest = readManifest(options);
      const helper = manifest
        ? readVerified(options.destdir + manifest.helper.path, HELPER_LIMIT)
        : null;
      const conf = manifest?.bridgeConf
        ? readVerified(options.destdir + manifest.bridgeConf.path, MANIFEST_LIMIT)
        : null;
      // The units' directory too, checked from / before anything in it is read or removed.
      if (manifest?.service !== undefined) {
        for (const dir of targetDirs(options.prefix, true)) SafeDir.inspect(options.destdir + dir);
      }
      const serviceSha256 = new Map<string, string | null>();
      for (const f of manifest?.service ?? []) {
        const found = readVerified(options.destdir + f.path, HELPER_LIMIT);
        serviceSha256.set(f.path, found ? sha256(found.bytes) : null);
      }
      const plan = planUninstall(options, {
        manifest,
        serviceSha256,
        helperSha256: helper ? sha256(helper.bytes) : null,
        bridgeConfText: conf ? new TextDecoder().decode(conf.bytes) : null,
      });
      for (const note of plan.notes) say(`note: ${note}`);
      steps = plan.steps;
    } else {
      steps = planInstall(options, await gatherInstallFacts(options, scratch));
    }
    const state: RunState = { written: new Map() };
    for (const step of steps) {
      say(`${options.dryRun ? "would: " : "==> "}${describeStep(step)}`);
      if (!options.dryRun) await execute(step, scratch, state);
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
    } else if (e instanceof UnsafePathError) {
      console.error(`install-suid: ${e.message}: ${DIR_RULE}`);
    } else {
      console.error(`install-suid: ${e instanceof Error ? e.message : String(e)}`);
    }
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
