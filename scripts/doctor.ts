// `deno task doctor [--br=BR] [--prefix=DIR]`: is the helper installed safely and with its
// capability, and can the caller use it? The same checks as `qemu-bridge-helper --check`, plus
// the installation's. One line each, `ok` or `FAIL` with the fix; exit 0 only when all are ok.

import { parseArgs } from "node:util";
import { type CheckResult, collectChecks, formatCheck } from "../cli/check.ts";
import { getgroups, readSmallFile } from "../sys/libc.ts";
import {
  CAPS,
  getcapShowsNetAdminOnly,
  mountOptionsFor,
  parseGroupFile,
  pathsFor,
} from "./_install_plan.ts";

const REINSTALL = "sudo deno task install-suid";

/** The installed file as lstat saw it. */
export interface InstalledFile {
  /** Owner uid. */
  uid: number;
  /** Owner gid. */
  gid: number;
  /** st_mode (type and permission bits). */
  mode: number;
  /** Is it a regular file (not a symlink, not a directory)? */
  isFile: boolean;
}

/**
 * Judges the installed helper's owner and mode: a root-owned regular file, never set-user-ID or
 * set-group-ID, writable by root only, not executable by others (0750 and a group).
 *
 * @param path The installed helper.
 * @param st Its lstat, or null when it is missing.
 * @returns One result each for presence and for owner/mode.
 */
export function installedFileResults(path: string, st: InstalledFile | null): CheckResult[] {
  if (st === null) {
    return [{ ok: false, what: `${path} is not installed`, fix: REINSTALL }];
  }
  if (!st.isFile) {
    return [{ ok: false, what: `${path} is not a regular file`, fix: REINSTALL }];
  }
  const results: CheckResult[] = [{ ok: true, what: `${path} is installed` }];
  const perm = st.mode & 0o7777;
  const octal = perm.toString(8).padStart(4, "0");
  if (perm & 0o6000) {
    results.push({
      ok: false,
      what: `${path} is set-user-ID or set-group-ID (mode ${octal}): the Deno runtime then acts ` +
        "on the caller's environment with those rights before the helper runs (see SECURITY.md)",
      fix: `sudo chmod 0750 ${path} (it needs only its file capability: ${REINSTALL})`,
    });
  } else if (st.uid !== 0 || (perm & 0o022) !== 0) {
    results.push({
      ok: false,
      what: `${path} is owned by uid ${st.uid} with mode ${octal}: someone other than root can ` +
        "replace it",
      fix: REINSTALL,
    });
  } else if (perm & 0o007) {
    results.push({
      ok: false,
      what: `${path} has mode ${octal}: every local user may run it (CAP_NET_ADMIN is powerful)`,
      fix: `sudo chmod 0750 ${path} and let a group (e.g. kvm) run it`,
    });
  } else {
    results.push({ ok: true, what: `${path} is root-owned, mode ${octal}, not set-user-ID` });
  }
  return results;
}

/**
 * Judges whether the caller may execute the helper: root, or the group has execute permission
 * and the caller is in that group.
 */
export function executableResult(
  path: string,
  st: InstalledFile,
  caller: { uid: number; gids: readonly number[] },
  groupName: string,
): CheckResult {
  if (caller.uid === 0) return { ok: true, what: `you (root) may run ${path}` };
  const mayRun = (caller.uid === st.uid && st.mode & 0o100) ||
    (caller.gids.includes(st.gid) && st.mode & 0o010) || (st.mode & 0o001);
  if (mayRun) return { ok: true, what: `you (uid ${caller.uid}) may run ${path}` };
  return {
    ok: false,
    what: `you (uid ${caller.uid}) may not run ${path}: it runs for group ${groupName} only`,
    fix: `sudo usermod -aG ${groupName} "$USER" and log in again`,
  };
}

/** Judges `getcap` output and the mount options of the helper's filesystem. */
export function capabilityResults(
  path: string,
  getcap: { code: number; output: string },
  mountOptions: readonly string[],
): CheckResult[] {
  const results: CheckResult[] = [];
  if (getcap.code === 0 && getcapShowsNetAdminOnly(getcap.output, path)) {
    results.push({ ok: true, what: `${path} has exactly the file capability cap_net_admin=ep` });
  } else {
    results.push({
      ok: false,
      what: `${path} does not have exactly cap_net_admin=ep (getcap: ${
        JSON.stringify(getcap.output.trim())
      }); any copy or upgrade drops it`,
      fix: `sudo setcap ${CAPS} ${path}`,
    });
  }
  if (mountOptions.includes("nosuid")) {
    results.push({
      ok: false,
      what: `${path} is on a filesystem mounted nosuid: its file capability is ignored`,
      fix: "install it elsewhere: sudo deno task install-suid --prefix DIR",
    });
  }
  return results;
}

async function getcap(path: string): Promise<{ code: number; output: string }> {
  for (const bin of ["/usr/sbin/getcap", "/sbin/getcap", "/usr/bin/getcap"]) {
    try {
      const out = await new Deno.Command(bin, { args: [path], stdout: "piped", stderr: "piped" })
        .output();
      const dec = new TextDecoder();
      return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  return { code: 127, output: "getcap not found (apt-get install libcap2-bin)" };
}

function groupName(gid: number): string {
  try {
    for (const [name, id] of parseGroupFile(readSmallFile("/etc/group"))) {
      if (id === gid) return name;
    }
  } catch { /* fall through */ }
  return String(gid);
}

/** Entry point: returns the exit status. */
export async function main(argv: readonly string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: { br: { type: "string" }, prefix: { type: "string" }, help: { type: "boolean" } },
    }));
  } catch (e) {
    console.error(`doctor: ${(e as Error).message}`);
    return 2;
  }
  if (values.help) {
    console.log("Usage: deno task doctor [--br=BRIDGE] [--prefix=/usr/local]");
    return 0;
  }
  const path = pathsFor(values.prefix ?? "/usr/local").helper;
  const results: CheckResult[] = [];

  let st: InstalledFile | null = null;
  try {
    const s = await Deno.lstat(path);
    st = { uid: s.uid ?? -1, gid: s.gid ?? -1, mode: s.mode ?? 0, isFile: s.isFile };
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  results.push(...installedFileResults(path, st));
  if (st?.isFile) {
    const caller = { uid: Deno.uid() ?? -1, gids: [Deno.gid() ?? -1, ...getgroups()] };
    results.push(executableResult(path, st, caller, groupName(st.gid)));
    const mounts = mountOptionsFor(
      readSmallFile("/proc/self/mountinfo"),
      await Deno.realPath(path),
    );
    results.push(...capabilityResults(path, await getcap(path), mounts));
  }
  // The checks the helper runs itself, minus privilege: this process is not the helper.
  results.push(...collectChecks(values.br ?? "", { privilege: false }));

  for (const r of results) console.log(formatCheck(r));
  return results.every((r) => r.ok) ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
