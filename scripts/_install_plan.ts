// The installer's pure half: its command line, the plan of steps for an install or an uninstall,
// and the judgements on what it observes (probe output, getcap output, mount options). No I/O
// here: scripts/install-suid.ts gathers the facts and executes the steps.

import { parseArgs } from "node:util";
import { judgeDirectory } from "./_safe_fs.ts";

/** The helper's usage line; a verified binary prints exactly this for every probe. */
export const USAGE = "Usage: qemu-bridge-helper [--use-vnet] --br=bridge --fd=unixfd";

/** The one line printed when asked for a set-user-ID install. */
export const SETUID_REFUSAL =
  "refusing to install set-user-ID root: the Deno runtime acts on the " +
  "caller's environment as root before the helper's first line runs (SSLKEYLOGFILE makes root " +
  "write any file); the installer uses the file capability cap_net_admin+ep instead, see SECURITY.md";

/** The exact `deno compile` flags: nothing looser (see SECURITY.md for each). */
export const COMPILE_FLAGS: readonly string[] = [
  "--no-code-cache",
  "--no-prompt",
  "--allow-ffi",
  "--v8-flags=--single-threaded,--jitless",
  "--preload",
  "./guard.ts",
];

/**
 * The exact `deno compile` flags of the bridge service (`--service`): those of the
 * `compile:service` task, the helper's plus `--allow-env=LISTEN_FDS,LISTEN_PID`.
 */
export const SERVICE_COMPILE_FLAGS: readonly string[] = [
  "--no-code-cache",
  "--no-prompt",
  "--allow-ffi",
  "--allow-env=LISTEN_FDS,LISTEN_PID",
  "--v8-flags=--single-threaded,--jitless",
  "--preload",
  "./service/guard.ts",
];

/** Where `--service` puts the systemd units (`destdir` applies, `prefix` does not). */
export const UNIT_DIR = "/etc/systemd/system";

/** The units `--service` installs, from the repository's systemd/ directory. */
export const UNITS: readonly string[] = ["vm-bridge.socket", "vm-bridge.service"];

/** The line printed after a `--service` install: the installer never starts anything itself. */
export const ENABLE_LINE = "systemctl daemon-reload && systemctl enable --now vm-bridge.socket";

/** The capability the installed helper gets, in setcap's syntax. */
export const CAPS = "cap_net_admin+ep";

/** The default ACL written when none exists. */
export const DEFAULT_BRIDGE_CONF = "allow br0\n";

/** The ACL path; fixed, like the helper's (`destdir` applies, `prefix` does not). */
export const BRIDGE_CONF = "/etc/qemu/bridge.conf";

/** The group used when `--group` is not given, if it exists. */
export const DEFAULT_GROUP = "kvm";

/**
 * The only PATH `deno compile` gets: it may shell out to `unzip` to unpack a downloaded denort,
 * and the caller's PATH must not choose that program.
 */
export const COMPILE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** A bad command line; the message is one line. Exit status 2. */
export class InstallUsageError extends Error {
  /** `message` is one line. */
  constructor(message: string) {
    super(message);
    this.name = "InstallUsageError";
  }
}

/** The installer refuses to go on (unsafe directory, missing group, ...). Exit status 1. */
export class InstallRefusal extends Error {
  /** `message` is one line. */
  constructor(message: string) {
    super(message);
    this.name = "InstallRefusal";
  }
}

/** The parsed command line. */
export interface InstallOptions {
  /** What to do. */
  action: "install" | "uninstall" | "help";
  /** Print the steps, change nothing. */
  dryRun: boolean;
  /** Installation prefix, absolute; the helper goes to `PREFIX/libexec`. */
  prefix: string;
  /** Staging root for packagers ("" for none); every path is put under it. */
  destdir: string;
  /** Install this already compiled helper instead of compiling one. */
  binary?: string;
  /** Compile with this local `denort` (DENORT_BIN) instead of downloading one. */
  denort?: string;
  /** The group that may execute the helper. */
  group?: string;
  /** Install the bridge service, its units, and the helper 0755 with no capability. */
  service?: boolean;
  /** With `service`: install this compiled vm-bridged (verified first) instead of compiling. */
  serviceBinary?: string;
}

/** The help text. */
export const HELP = `Usage: deno task install-suid [OPTIONS]

Builds helper.ts and installs it as PREFIX/libexec/qemu-bridge-helper, owner root, group GROUP,
mode 0750, with the file capability ${CAPS} (never set-user-ID root: see SECURITY.md), and
creates ${BRIDGE_CONF} with "allow br0" when there is none.

  --group GROUP    who may run the helper (default: ${DEFAULT_GROUP}, when it exists)
  --prefix DIR     installation prefix (default: /usr/local)
  --destdir DIR    stage into DIR for a package; prints the setcap line instead of running it
  --binary PATH    install this compiled helper (verified first) instead of compiling
  --denort PATH    compile offline with this denort (DENORT_BIN)
  --service        install the bridge service as PREFIX/libexec/vm-bridged, its systemd units in
                   ${UNIT_DIR}, and the helper root:root 0755 with no capability (it asks the
                   service); starts nothing, prints: ${ENABLE_LINE}
  --service-binary PATH  with --service: install this compiled vm-bridged (verified first)
  --dry-run        print every step, change nothing
  --uninstall      remove what an earlier install recorded in its manifest
  -h, --help       this text`;

function cleanPath(flag: string, value: string): string {
  if (!value.startsWith("/")) throw new InstallUsageError(`${flag} must be an absolute path`);
  // deno-lint-ignore no-control-regex -- control characters in a path are refused, not handled
  if (/[\x00-\x1f\x7f]/.test(value)) {
    throw new InstallUsageError(`${flag} contains a control character`);
  }
  const parts = value.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw new InstallUsageError(`${flag} must not contain ..`);
  return "/" + parts.join("/");
}

/**
 * Parses the installer's arguments. Unknown options, positionals and repeated values are
 * errors; `--setuid`/`--suid` are refused with {@linkcode SETUID_REFUSAL}.
 *
 * @param argv The arguments after the script name.
 * @returns The options.
 * @throws {InstallUsageError} For a bad command line or a set-user-ID request.
 */
export function parseInstallArgs(argv: readonly string[]): InstallOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        "dry-run": { type: "boolean" },
        uninstall: { type: "boolean" },
        prefix: { type: "string" },
        destdir: { type: "string" },
        binary: { type: "string" },
        denort: { type: "string" },
        group: { type: "string" },
        service: { type: "boolean" },
        "service-binary": { type: "string" },
        setuid: { type: "boolean" },
        suid: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    // A set-user-ID request in any spelling gets the one-line reason, not a usage error.
    if (argv.some((a) => /^--(setuid|suid|set-user-id)(=|$)/.test(a))) {
      throw new InstallUsageError(SETUID_REFUSAL);
    }
    throw new InstallUsageError(e instanceof Error ? e.message : String(e));
  }
  const v = parsed.values;
  if (v.setuid !== undefined || v.suid !== undefined) throw new InstallUsageError(SETUID_REFUSAL);
  for (const name of ["prefix", "destdir", "binary", "denort", "group", "service-binary"]) {
    const n = argv.filter((a) => a === `--${name}` || a.startsWith(`--${name}=`)).length;
    if (n > 1) throw new InstallUsageError(`--${name} given more than once`);
  }
  if (v.help) return { action: "help", dryRun: false, prefix: "/usr/local", destdir: "" };
  const options: InstallOptions = {
    action: v.uninstall ? "uninstall" : "install",
    dryRun: v["dry-run"] ?? false,
    prefix: cleanPath("--prefix", v.prefix ?? "/usr/local"),
    destdir: v.destdir === undefined ? "" : cleanPath("--destdir", v.destdir),
  };
  if (options.destdir === "/") options.destdir = "";
  if (v.binary !== undefined && v.denort !== undefined && !v.service) {
    throw new InstallUsageError("--binary and --denort exclude each other");
  }
  if (options.action === "uninstall") {
    for (const name of ["binary", "denort", "group"] as const) {
      if (v[name] !== undefined) {
        throw new InstallUsageError(`--${name} makes no sense with --uninstall`);
      }
    }
  }
  if (v.service) {
    if (options.action === "uninstall") {
      throw new InstallUsageError("--service makes no sense with --uninstall (the manifest knows)");
    }
    if (v.group !== undefined) {
      throw new InstallUsageError(
        "--group makes no sense with --service: the helper is installed 0755 with no privilege",
      );
    }
    options.service = true;
  }
  if (v["service-binary"] !== undefined) {
    if (!v.service) throw new InstallUsageError("--service-binary needs --service");
    if (v.denort !== undefined && v.binary !== undefined) {
      throw new InstallUsageError("--denort makes no sense when both binaries are given");
    }
    options.serviceBinary = cleanPath("--service-binary", v["service-binary"]);
  }
  if (v.binary !== undefined) options.binary = cleanPath("--binary", v.binary);
  if (v.denort !== undefined) options.denort = cleanPath("--denort", v.denort);
  if (v.group !== undefined) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(v.group) || v.group.length > 32) {
      throw new InstallUsageError(`--group ${JSON.stringify(v.group)} is not a group name`);
    }
    options.group = v.group;
  }
  return options;
}

/** Parses /etc/group text into name → gid. Malformed lines are skipped. */
export function parseGroupFile(text: string): Map<string, number> {
  const groups = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === undefined || name === "" || gid === undefined || !/^[0-9]+$/.test(gid)) continue;
    if (!groups.has(name)) groups.set(name, Number(gid));
  }
  return groups;
}

/** Where things go, with and without the staging root. */
export interface Paths {
  /** The helper as the running system sees it. */
  helper: string;
  /** The ACL as the running system sees it. */
  bridgeConf: string;
  /** The install manifest as the running system sees it. */
  manifest: string;
  /** The bridge service (`--service`). */
  service: string;
  /** The systemd units (`--service`), in {@linkcode UNITS} order. */
  units: string[];
}

/** The final paths for a prefix (without destdir). */
export function pathsFor(prefix: string): Paths {
  const p = prefix === "/" ? "" : prefix;
  return {
    helper: `${p}/libexec/qemu-bridge-helper`,
    bridgeConf: BRIDGE_CONF,
    manifest: `${p}/share/vm-bridge/install-manifest.json`,
    service: `${p}/libexec/vm-bridged`,
    units: UNITS.map((u) => `${UNIT_DIR}/${u}`),
  };
}

/** The runtime a compiled helper was built on: where it came from and its SHA-256. */
export interface DenortRecord {
  /** `--denort PATH`, or the archive `deno compile` downloaded (its URL path). */
  source: string;
  /** SHA-256 of that file (the archive, for a download), lowercase hex. */
  sha256: string;
}

/** What an install recorded, so that uninstall removes exactly that. Paths without destdir. */
export interface Manifest {
  /** Format version. */
  format: 1;
  /** The helper and the SHA-256 of the bytes installed. */
  helper: { path: string; sha256: string };
  /** The ACL, when this installer created it (so it may remove it while unchanged). */
  bridgeConf: { path: string; text: string } | null;
  /** Directories this installer created, parents first. */
  dirs: string[];
  /** The denort the helper was compiled with; null for `--binary` (absent in older manifests). */
  denort?: DenortRecord | null;
  /** With `--service`: the service and its units, each with the SHA-256 of the bytes written. */
  service?: { path: string; sha256: string }[];
}

/**
 * Every directory an install under `prefix` could have created: the parents of the helper, the
 * ACL and the manifest, and those directories themselves, `/` excluded. Nothing else may appear
 * in a manifest's `dirs`.
 */
export function installableDirs(prefix: string): Set<string> {
  const final = pathsFor(prefix);
  const out = new Set<string>();
  for (
    const file of [final.helper, final.bridgeConf, final.manifest, final.service, ...final.units]
  ) {
    for (const dir of parents(file)) if (dir !== "/") out.add(dir);
  }
  return out;
}

/**
 * Validates a parsed manifest for an install under `prefix`. Its paths are trusted for deletion,
 * so each must be exactly one this installer could have installed: the helper's path for this
 * prefix, {@linkcode BRIDGE_CONF}, the service and units (each at most once), and directories
 * from {@linkcode installableDirs}.
 *
 * @throws {TypeError} Not our shape, or a path this installer never installs (quoted).
 */
export function checkManifest(value: unknown, prefix: string): Manifest {
  const m = value as Partial<Manifest> | null;
  const isSha = (x: unknown) => typeof x === "string" && /^[0-9a-f]{64}$/.test(x);
  if (
    m === null || typeof m !== "object" || Array.isArray(m) || m.format !== 1 ||
    typeof m.helper !== "object" || m.helper === null || typeof m.helper.path !== "string" ||
    !isSha(m.helper.sha256) || !Array.isArray(m.dirs) ||
    !m.dirs.every((d) => typeof d === "string") ||
    !(m.bridgeConf === null ||
      (typeof m.bridgeConf === "object" && typeof m.bridgeConf?.path === "string" &&
        typeof m.bridgeConf?.text === "string")) ||
    !(m.denort === undefined || m.denort === null ||
      (typeof m.denort === "object" && typeof m.denort.source === "string" &&
        isSha(m.denort.sha256))) ||
    !(m.service === undefined ||
      (Array.isArray(m.service) &&
        m.service.every((f) =>
          typeof f === "object" && f !== null && typeof f.path === "string" && isSha(f.sha256)
        )))
  ) {
    throw new TypeError("Not an install manifest of this installer");
  }
  const never = (p: string) =>
    new TypeError(`it names \`${p}', which this installer never installs under ${prefix}`);
  const final = pathsFor(prefix);
  if (m.helper.path !== final.helper) throw never(m.helper.path);
  if (m.bridgeConf !== null && m.bridgeConf.path !== final.bridgeConf) {
    throw never(m.bridgeConf.path);
  }
  const serviceFiles = new Set([final.service, ...final.units]);
  for (const f of m.service ?? []) if (!serviceFiles.has(f.path)) throw never(f.path);
  if (new Set((m.service ?? []).map((f) => f.path)).size !== (m.service ?? []).length) {
    throw new TypeError("it names a service file twice");
  }
  const allowed = installableDirs(prefix);
  for (const dir of m.dirs) if (!allowed.has(dir)) throw never(dir);
  if (new Set(m.dirs).size !== m.dirs.length) throw new TypeError("it names a directory twice");
  return m as Manifest;
}

/** One step of a plan. Paths are the real ones to touch (destdir applied). */
export type Step =
  | {
    op: "compile";
    deno: string;
    repo: string;
    out: string;
    /** Private (root 0700) directory for the compile's HOME and DENO_DIR. */
    home: string;
    denort?: string;
    /** Compile the bridge service (SERVICE_COMPILE_FLAGS, service/main.ts), not the helper. */
    service?: boolean;
  }
  | { op: "stage"; from: string; to: string }
  | { op: "verify"; path: string }
  | { op: "verify-service"; path: string }
  | { op: "mkdir"; path: string }
  | {
    op: "install";
    from: string;
    to: string;
    group: string;
    gid: number;
    replaces: boolean;
    /** File mode; 0750 (the group may run the helper) when absent. */
    mode?: number;
  }
  | {
    op: "install-unit";
    /** The unit as shipped in the repository's systemd/. */
    from: string;
    to: string;
    /** For the service unit: the installed service's path, for its `ExecStart=`. */
    execStart?: string;
    replaces: boolean;
  }
  | { op: "create-bridge-conf"; path: string; text: string }
  | { op: "keep-bridge-conf"; path: string }
  | {
    op: "write-manifest";
    path: string;
    manifest: Omit<Manifest, "helper">;
    /** The helper's final path, recorded. */
    helper: string;
    /** The helper's file to hash (destdir applied). */
    helperFile: string;
    /** With `--service`: final path and written file (destdir applied) of each service file. */
    serviceFiles?: { path: string; file: string }[];
  }
  | { op: "print-enable" }
  | { op: "remove-file"; path: string; sha256: string }
  | { op: "setcap"; path: string }
  | { op: "getcap"; path: string }
  | { op: "print-setcap"; path: string }
  | { op: "remove-helper"; path: string; sha256: string }
  | { op: "remove-bridge-conf"; path: string; text: string }
  | { op: "rmdir"; path: string }
  | { op: "remove-manifest"; path: string };

/** What the installer found on the machine before planning. */
export interface InstallFacts {
  /** The group database (name → gid). */
  groups: ReadonlyMap<string, number>;
  /** Paths (destdir applied) that exist. */
  existing: ReadonlySet<string>;
  /**
   * Owner and lstat mode (type bits included) of every existing directory on the way to each
   * directory the install writes into, from `/` (destdir applied, its own parents included).
   */
  dirs: ReadonlyMap<string, { uid: number; mode: number }>;
  /** The manifest of an earlier install, if any. */
  previous: Manifest | null;
  /** Mount options of the filesystem that will hold the helper (empty when unknown). */
  mountOptions: readonly string[];
  /** The private staging directory. */
  staging: string;
  /** The deno executable to compile with. */
  deno: string;
  /** The repository root (where helper.ts and guard.ts are). */
  repo: string;
}

function parents(path: string): string[] {
  const out: string[] = [];
  let p = path;
  while (p !== "/" && p !== "") {
    p = p.slice(0, p.lastIndexOf("/")) || "/";
    out.unshift(p);
  }
  return out;
}

/** Directories to create (parents first) for `finalDir` under `destdir`, that do not exist. */
function missingDirs(finalDir: string, destdir: string, existing: ReadonlySet<string>): string[] {
  return [...parents(finalDir), finalDir]
    .filter((d) => d !== "/")
    .filter((d) => !existing.has(destdir + d));
}

/** Every directory from `/` down to `dir`, itself included. */
export function dirChain(dir: string): string[] {
  return dir === "/" ? ["/"] : [...parents(dir), dir];
}

/**
 * The directories an install or uninstall writes into (destdir not applied); with `service`,
 * the units' directory too.
 */
export function targetDirs(prefix: string, service = false): string[] {
  const final = pathsFor(prefix);
  return [final.helper, final.bridgeConf, final.manifest, ...(service ? final.units : [])]
    .map((f) => f.slice(0, f.lastIndexOf("/")));
}

/**
 * Refuses unless every directory passes {@linkcode judgeDirectory}: a directory a user can write
 * lets them swap the helper after setcap, or before it, or turn a write or a rename into one
 * elsewhere (symlinks); so every directory from / down must be root's alone.
 *
 * @param dirs Owner and lstat mode of each existing directory on the way (destdir applied).
 * @throws {InstallRefusal} Naming the first one that does not pass.
 */
export function checkDirs(dirs: ReadonlyMap<string, { uid: number; mode: number }>): void {
  for (const [dir, st] of dirs) {
    const why = judgeDirectory(dir, st);
    if (why !== undefined) throw new InstallRefusal(`${why}: ${DIR_RULE}`);
  }
}

/**
 * Plans an install: the ordered steps, setcap last. Throws instead of planning anything unsafe.
 *
 * @param options The parsed command line (`action: "install"`).
 * @param facts What was found on the machine.
 * @returns The steps, in order.
 * @throws {InstallRefusal} No group; an unsafe directory on the helper's path; a nosuid mount.
 */
export function planInstall(options: InstallOptions, facts: InstallFacts): Step[] {
  const final = pathsFor(options.prefix);
  const d = options.destdir;
  const groupName = options.group ?? DEFAULT_GROUP;
  // With the service the helper holds nothing: root:root 0755, anyone may run it.
  const gid = options.service ? 0 : facts.groups.get(groupName);
  if (gid === undefined) {
    throw new InstallRefusal(
      options.group === undefined
        ? `the group ${DEFAULT_GROUP} does not exist: pass --group GROUP, the group whose members ` +
          "may run the helper (the helper is installed mode 0750)"
        : `the group ${groupName} does not exist`,
    );
  }
  checkDirs(facts.dirs);
  if (d === "" && !options.service && facts.mountOptions.includes("nosuid")) {
    throw new InstallRefusal(
      `the filesystem holding ${final.helper} is mounted nosuid, so file capabilities are ` +
        "ignored there: choose another --prefix",
    );
  }

  const steps: Step[] = [];
  const staged = `${facts.staging}/qemu-bridge-helper`;
  if (options.binary !== undefined) {
    steps.push({ op: "stage", from: options.binary, to: staged });
  } else {
    const compile: Step = {
      op: "compile",
      deno: facts.deno,
      repo: facts.repo,
      out: staged,
      home: `${facts.staging}/compile-home`,
    };
    if (options.denort !== undefined) compile.denort = options.denort;
    steps.push(compile);
  }
  steps.push({ op: "verify", path: staged });
  const stagedService = `${facts.staging}/vm-bridged`;
  if (options.service) {
    if (options.serviceBinary !== undefined) {
      steps.push({ op: "stage", from: options.serviceBinary, to: stagedService });
    } else {
      const compile: Step = {
        op: "compile",
        deno: facts.deno,
        repo: facts.repo,
        out: stagedService,
        home: `${facts.staging}/compile-home`,
        service: true,
      };
      if (options.denort !== undefined) compile.denort = options.denort;
      steps.push(compile);
    }
    steps.push({ op: "verify-service", path: stagedService });
  }

  // DESTDIR itself need not exist (as with `make install DESTDIR=`): made root:root 0755, and
  // not recorded, since uninstall never removes the staging root.
  if (d !== "") {
    for (const dir of dirChain(d)) {
      if (dir !== "/" && !facts.existing.has(dir)) steps.push({ op: "mkdir", path: dir });
    }
  }
  const created: string[] = [];
  const helperDir = final.helper.slice(0, final.helper.lastIndexOf("/"));
  for (const dir of missingDirs(helperDir, d, facts.existing)) {
    steps.push({ op: "mkdir", path: d + dir });
    created.push(dir);
  }
  steps.push({
    op: "install",
    from: staged,
    to: d + final.helper,
    group: options.service ? "root" : groupName,
    gid,
    replaces: facts.existing.has(d + final.helper),
    ...(options.service ? { mode: 0o755 } : {}),
  });
  const serviceFiles: { path: string; file: string }[] = [];
  if (options.service) {
    steps.push({
      op: "install",
      from: stagedService,
      to: d + final.service,
      group: "root",
      gid: 0,
      replaces: facts.existing.has(d + final.service),
      mode: 0o755,
    });
    serviceFiles.push({ path: final.service, file: d + final.service });
  }

  let bridgeConf: Manifest["bridgeConf"] = facts.previous?.bridgeConf ?? null;
  if (facts.existing.has(d + final.bridgeConf)) {
    steps.push({ op: "keep-bridge-conf", path: d + final.bridgeConf });
  } else {
    for (const dir of missingDirs("/etc/qemu", d, facts.existing)) {
      if (created.includes(dir)) continue;
      steps.push({ op: "mkdir", path: d + dir });
      created.push(dir);
    }
    steps.push({ op: "create-bridge-conf", path: d + final.bridgeConf, text: DEFAULT_BRIDGE_CONF });
    bridgeConf = { path: final.bridgeConf, text: DEFAULT_BRIDGE_CONF };
  }

  if (options.service) {
    for (const dir of missingDirs(UNIT_DIR, d, facts.existing)) {
      if (created.includes(dir)) continue;
      steps.push({ op: "mkdir", path: d + dir });
      created.push(dir);
    }
    UNITS.forEach((unit, i) => {
      const to = final.units[i]!;
      steps.push({
        op: "install-unit",
        from: `${facts.repo}/systemd/${unit}`,
        to: d + to,
        ...(unit.endsWith(".service") ? { execStart: final.service } : {}),
        replaces: facts.existing.has(d + to),
      });
      serviceFiles.push({ path: to, file: d + to });
    });
  }

  const manifestDir = final.manifest.slice(0, final.manifest.lastIndexOf("/"));
  for (const dir of missingDirs(manifestDir, d, facts.existing)) {
    if (created.includes(dir)) continue;
    steps.push({ op: "mkdir", path: d + dir });
    created.push(dir);
  }
  const dirs = [...(facts.previous?.dirs ?? [])];
  for (const dir of created) if (!dirs.includes(dir)) dirs.push(dir);
  steps.push({
    op: "write-manifest",
    path: d + final.manifest,
    // A plain install over a --service one keeps the service files on record, for uninstall.
    manifest: {
      format: 1,
      bridgeConf,
      dirs,
      ...(!options.service && facts.previous?.service ? { service: facts.previous.service } : {}),
    },
    helper: final.helper,
    helperFile: d + final.helper,
    ...(options.service ? { serviceFiles } : {}),
  });

  if (options.service) {
    // No capability anywhere; systemd starts the service with CAP_NET_ADMIN alone, when asked.
    steps.push({ op: "print-enable" });
  } else if (d === "") {
    // Last: any later copy, chown or rename would drop the capability again.
    steps.push({ op: "setcap", path: final.helper }, { op: "getcap", path: final.helper });
  } else {
    steps.push({ op: "print-setcap", path: final.helper });
  }
  return steps;
}

/** What the uninstaller found. */
export interface UninstallFacts {
  /** The manifest, or null when there is none. */
  manifest: Manifest | null;
  /** SHA-256 of the helper now at the recorded path, or null when it is missing. */
  helperSha256: string | null;
  /** The ACL's text now, or null when it is missing. */
  bridgeConfText: string | null;
  /** SHA-256 now of each service file the manifest records (absent or null: missing). */
  serviceSha256?: ReadonlyMap<string, string | null>;
}

/**
 * Plans an uninstall: only what the manifest records, and only while it is still ours (the
 * helper's bytes unchanged; the ACL exactly our default). Directories go only when empty.
 *
 * @param options The parsed command line (`action: "uninstall"`).
 * @param facts The manifest and the current state of what it names.
 * @returns The steps and notes on what is kept and why.
 */
export function planUninstall(
  options: InstallOptions,
  facts: UninstallFacts,
): { steps: Step[]; notes: string[] } {
  const d = options.destdir;
  const steps: Step[] = [];
  const notes: string[] = [];
  const m = facts.manifest;
  const final = pathsFor(options.prefix);
  if (m === null) {
    notes.push(`nothing to uninstall: no manifest at ${d + final.manifest}`);
    return { steps, notes };
  }
  if (facts.helperSha256 === null) {
    notes.push(`${d + m.helper.path} is already gone`);
  } else if (facts.helperSha256 !== m.helper.sha256) {
    notes.push(`keeping ${d + m.helper.path}: it changed since it was installed`);
  } else {
    steps.push({ op: "remove-helper", path: d + m.helper.path, sha256: m.helper.sha256 });
  }
  if (m.bridgeConf !== null) {
    if (facts.bridgeConfText === null) {
      notes.push(`${d + m.bridgeConf.path} is already gone`);
    } else if (facts.bridgeConfText !== m.bridgeConf.text) {
      notes.push(`keeping ${d + m.bridgeConf.path}: it was edited since it was installed`);
    } else {
      steps.push({
        op: "remove-bridge-conf",
        path: d + m.bridgeConf.path,
        text: m.bridgeConf.text,
      });
    }
  }
  for (const f of m.service ?? []) {
    const now = facts.serviceSha256?.get(f.path) ?? null;
    if (now === null) notes.push(`${d + f.path} is already gone`);
    else if (now !== f.sha256) {
      notes.push(`keeping ${d + f.path}: it changed since it was installed`);
    } else steps.push({ op: "remove-file", path: d + f.path, sha256: f.sha256 });
  }
  steps.push({ op: "remove-manifest", path: d + final.manifest });
  for (const dir of [...m.dirs].reverse()) steps.push({ op: "rmdir", path: d + dir });
  return { steps, notes };
}

/** The rule every directory written into or deleted from must pass, for messages. */
export const DIR_RULE =
  "every directory the installer writes into or deletes from must be root's and writable by " +
  "root only, all the way from /";

/** Quotes a word for a printed shell line. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_/.,:=+@%-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** The argv of the compile step (after the deno executable); `service` builds vm-bridged. */
export function compileArgs(out: string, service = false): string[] {
  return service
    ? ["compile", ...SERVICE_COMPILE_FLAGS, "--output", out, "./service/main.ts"]
    : ["compile", ...COMPILE_FLAGS, "--output", out, "./helper.ts"];
}

/**
 * A unit's text with its `ExecStart=` line pointing at the installed service.
 *
 * @param text The unit as shipped in systemd/.
 * @param execStart The installed service's path.
 * @returns The text to install.
 * @throws {InstallRefusal} When the unit has more than one `ExecStart=` line.
 */
export function unitText(text: string, execStart: string): string {
  if ((text.match(/^ExecStart=/gm) ?? []).length > 1) {
    throw new InstallRefusal("the unit has more than one ExecStart= line");
  }
  return text.replace(/^ExecStart=.*$/m, `ExecStart=${execStart}`);
}

/**
 * The whole environment of `deno compile`, built from an allow-list and nothing of the caller's:
 * a fixed PATH, HOME and DENO_DIR in the installer's private directory `home` (so no cache,
 * denort, certificate, proxy, npm or registry setting of the caller's is used), colours off, no
 * update check, and DENORT_BIN only from `--denort`. Without `--denort`, `deno compile`
 * downloads denort from dl.deno.land into that private DENO_DIR.
 *
 * @param home A fresh directory only root can enter.
 * @param denort The `--denort` path, if given.
 */
export function compileEnv(home: string, denort?: string): Record<string, string> {
  const env: Record<string, string> = {
    PATH: COMPILE_PATH,
    HOME: home,
    DENO_DIR: `${home}/deno-dir`,
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
  };
  if (denort !== undefined) env.DENORT_BIN = denort;
  return env;
}

/**
 * Shortens `deno compile`'s stderr to one line: the error and its innermost cause, without
 * colours or the stack backtrace.
 */
export function summarizeCompileError(stderr: string): string {
  // deno-lint-ignore no-control-regex -- removing terminal colour sequences
  const plain = stderr.replace(/\x1b\[[0-9;]*m/g, "").split("Stack backtrace:")[0] ?? "";
  const lines = plain.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  const error = lines.find((l) => l.startsWith("error:")) ?? lines[0] ?? "no message";
  const causes = lines.filter((l) => /^[0-9]+: /.test(l));
  const last = causes[causes.length - 1];
  return last === undefined ? error : `${error} (${last.replace(/^[0-9]+: /, "")})`;
}

/** The line printed for a step (a shell command where there is one). */
export function describeStep(step: Step): string {
  const q = shellQuote;
  switch (step.op) {
    case "compile":
      return `(cd ${q(step.repo)} && env -i ` +
        Object.entries(compileEnv(step.home, step.denort)).map(([k, v]) => `${k}=${q(v)} `)
          .join("") +
        `${q(step.deno)} ${compileArgs(step.out, step.service ?? false).map(q).join(" ")})`;
    case "stage":
      return `cp ${q(step.from)} ${q(step.to)}`;
    case "verify":
      return `verify ${q(step.path)} is our build: its embedded deno compile metadata (entry ` +
        "helper.ts, guard.ts preloaded, only --allow-ffi, no prompt, no code cache, " +
        "--single-threaded and --jitless), and not a bare Deno runtime: no arguments, --version and " +
        "eval must each print only the usage line and exit 1";
    case "verify-service":
      return `verify ${q(step.path)} is our vm-bridged build: its embedded deno compile metadata ` +
        "(entry service/main.ts, service/guard.ts preloaded, only --allow-ffi and " +
        "--allow-env=LISTEN_FDS,LISTEN_PID, no prompt, no code cache, --single-threaded and " +
        "--jitless), and not a bare Deno runtime: --version and eval must each refuse with a " +
        "vm-bridged: message and exit 1";
    case "mkdir":
      return `install -d -o root -g root -m 0755 ${q(step.path)}`;
    case "install":
      return `install -o root -g ${q(step.group)} -m ${
        (step.mode ?? 0o750).toString(8).padStart(4, "0")
      } ${q(step.from)} ${q(step.to)}` + (step.replaces ? "  # replaces the existing file" : "");
    case "install-unit":
      return `install -o root -g root -m 0644 ${q(step.from)} ${q(step.to)}` +
        (step.execStart !== undefined ? `  # with ExecStart=${step.execStart}` : "") +
        (step.replaces
          ? `${step.execStart !== undefined ? ";" : "  #"} replaces the existing file`
          : "");
    case "print-enable":
      return `not run: the installer starts and enables nothing; to start the service: ${ENABLE_LINE}`;
    case "remove-file":
      return `rm ${q(step.path)}  # still the bytes this installer wrote`;
    case "create-bridge-conf":
      return `create ${q(step.path)} (root:root 0644) containing ${JSON.stringify(step.text)}`;
    case "keep-bridge-conf":
      return `keep ${q(step.path)}: it exists and is never overwritten`;
    case "write-manifest":
      return `record the installed files in ${q(step.path)}`;
    case "setcap":
      return `setcap ${CAPS} ${q(step.path)}`;
    case "getcap":
      return `getcap ${q(step.path)}  # must show exactly cap_net_admin=ep`;
    case "print-setcap":
      return `not run with --destdir; run as root on the installed system: ` +
        `setcap ${CAPS} ${q(step.path)}`;
    case "remove-helper":
      return `rm ${q(step.path)}`;
    case "remove-bridge-conf":
      return `rm ${q(step.path)}  # still exactly the default this installer wrote`;
    case "rmdir":
      return `rmdir ${q(step.path)}  # only if empty`;
    case "remove-manifest":
      return `rm ${q(step.path)}`;
  }
}

/** What one probe run of a candidate binary gave. */
export interface ProbeOutput {
  /** Exit code (or -1 when killed). */
  code: number;
  /** stdout text. */
  stdout: string;
  /** stderr text. */
  stderr: string;
}

/** The probes a candidate helper must answer with exactly the usage line and exit 1. */
export const PROBES: readonly (readonly string[])[] = [
  [],
  ["--version"],
  ["eval", "console.log('vmb-probe-' + 'ran')"],
];

/**
 * Judges one probe: the helper prints its usage line to stderr and exits 1 for each; a bare Deno
 * runtime prints a version, runs the eval, or starts a REPL.
 *
 * @param args The probe's arguments.
 * @param out What the binary did.
 * @returns Why it is not our helper, or undefined when it answered as the helper does.
 */
export function judgeProbe(args: readonly string[], out: ProbeOutput): string | undefined {
  const shown = `\`${["BINARY", ...args].join(" ")}'`;
  const all = out.stdout + out.stderr;
  if (/\bdeno\s+v?\d+\.\d+/i.test(all)) {
    return `${shown} printed a Deno version: it is a bare Deno runtime, not the helper`;
  }
  if (all.includes("vmb-probe-ran")) {
    return `${shown} ran the code given to eval: it is a bare Deno runtime, not the helper`;
  }
  if (out.code !== 1 || out.stdout !== "" || out.stderr !== USAGE + "\n") {
    return `${shown} did not print exactly the helper's usage line and exit 1 ` +
      `(exit ${out.code}, stderr ${JSON.stringify(out.stderr.slice(0, 200))})`;
  }
  return undefined;
}

/**
 * The probes a candidate vm-bridged must refuse with one `vm-bridged: ` line and exit 1: as the
 * installer (root with every capability) it refuses to run; a bare Deno runtime prints a version
 * or runs the eval. Never without arguments: that could start serving.
 */
export const SERVICE_PROBES: readonly (readonly string[])[] = [
  ["--version"],
  ["eval", "console.log('vmb-probe-' + 'ran')"],
];

/**
 * Judges one service probe.
 *
 * @param args The probe's arguments.
 * @param out What the binary did.
 * @returns Why it is not vm-bridged, or undefined when it answered as vm-bridged does.
 */
export function judgeServiceProbe(args: readonly string[], out: ProbeOutput): string | undefined {
  const shown = `\`${["BINARY", ...args].join(" ")}'`;
  const all = out.stdout + out.stderr;
  if (/\bdeno\s+v?\d+\.\d+/i.test(all)) {
    return `${shown} printed a Deno version: it is a bare Deno runtime, not vm-bridged`;
  }
  if (all.includes("vmb-probe-ran")) {
    return `${shown} ran the code given to eval: it is a bare Deno runtime, not vm-bridged`;
  }
  if (out.code !== 1 || out.stdout !== "" || !out.stderr.startsWith("vm-bridged: ")) {
    return `${shown} did not refuse with a vm-bridged: message and exit 1 ` +
      `(exit ${out.code}, stderr ${JSON.stringify(out.stderr.slice(0, 200))})`;
  }
  return undefined;
}

/** True when `getcap PATH` output shows exactly cap_net_admin=ep for `path`. */
export function getcapShowsNetAdminOnly(output: string, path: string): boolean {
  const line = output.trim();
  if (!line.startsWith(path + " ")) return false;
  return /^cap_net_admin[=+]ep$/.test(line.slice(path.length + 1).trim());
}

/**
 * The per-mount options of the mount holding `path`, from /proc/self/mountinfo text: the last
 * mount whose mount point is the longest prefix of `path`. `path` must be canonical.
 *
 * @param mountinfo The text of /proc/self/mountinfo.
 * @param path An absolute, canonical path.
 * @returns The options, e.g. ["rw", "nosuid", "relatime"]; empty when nothing matched.
 */
export function mountOptionsFor(mountinfo: string, path: string): string[] {
  let best: { point: string; options: string[] } | undefined;
  for (const line of mountinfo.split("\n")) {
    const f = line.split(" ");
    const point = f[4]?.replace(
      /\\([0-7]{3})/g,
      (_, o: string) => String.fromCharCode(parseInt(o, 8)),
    );
    const options = f[5];
    if (point === undefined || options === undefined) continue;
    const under = point === "/" || path === point || path.startsWith(point + "/");
    if (under && (best === undefined || point.length >= best.point.length)) {
      best = { point, options: options.split(",") };
    }
  }
  return best?.options ?? [];
}
