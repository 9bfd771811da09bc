// A privileged copy of the Deno runtime for the privilege tests (cap_net_admin+ep, or 4755
// root), kept where no other user can reach it, and the sandbox lines that expose it inside one
// test's private mount namespace only.

import { must } from "./ns.ts";

/** The Deno runtime running the tests, symlinks resolved (about 95 MB). */
export const DENO_RUNTIME: string = Deno.execPath();

/** Where the copy appears inside a sandbox (a bind mount on the sandbox's private /mnt). */
export const SANDBOX_DENO = "/mnt/vmb-bin/deno";

/** A privileged Deno copy; deleted by `await using`. */
export interface DenoCopy extends AsyncDisposable {
  /** The copy on the host, in a directory only root can enter. */
  readonly path: string;
}

/**
 * Copies the Deno runtime into a fresh 0700 root directory and makes it privileged: file
 * capability `cap_net_admin+ep`, or set-user-ID root (mode 4755). While it exists a privileged
 * Deno CLI (which runs any code) is on disk, so it is never reachable by another user: the
 * directory is root's alone, and tests see the file only through {@linkcode exposeDeno} inside
 * their private mount namespace.
 */
export async function privilegedDeno(kind: "filecaps" | "setuid"): Promise<DenoCopy> {
  const dir = await Deno.makeTempDir({ prefix: `vmb-${kind}-` });
  await Deno.chmod(dir, 0o700);
  const path = `${dir}/deno`;
  try {
    await Deno.copyFile(DENO_RUNTIME, path);
    await Deno.chown(path, 0, 0);
    if (kind === "filecaps") {
      await Deno.chmod(path, 0o755);
      await must(["setcap", "cap_net_admin+ep", path]);
    } else {
      await Deno.chmod(path, 0o4755);
    }
  } catch (e) {
    await Deno.remove(dir, { recursive: true });
    throw e;
  }
  return { path, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/**
 * Shell lines for sandbox({ setup }): bind-mount the copy at {@linkcode SANDBOX_DENO} (on the
 * sandbox's private tmpfs at /mnt, so it vanishes with the namespace) and export `DENO` for
 * bin/qemu-bridge-helper, plus `env`. Values must be plain paths or words (no quoting needed).
 */
export function exposeDeno(copy: DenoCopy, env: Record<string, string> = {}): string {
  for (const [k, v] of Object.entries({ ...env, DENO: SANDBOX_DENO })) {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(k) || !/^[A-Za-z0-9_./:=,+-]*$/.test(v)) {
      throw new TypeError(`Unsafe environment entry for a shell line: ${k}=${v}`);
    }
  }
  const exports = Object.entries({ ...env, DENO: SANDBOX_DENO }).map(([k, v]) => `${k}=${v}`);
  return [
    "mkdir -p /mnt/vmb-bin",
    `touch ${SANDBOX_DENO}`,
    `mount --bind ${copy.path} ${SANDBOX_DENO}`,
    `export ${exports.join(" ")}`,
  ].join("\n");
}

/** A temporary directory owned by `uid`, mode `mode`; removed by `await using`. */
export async function tempDirFor(
  uid: number,
  mode: number,
  prefix = "vmb-",
): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  await Deno.chown(path, uid, uid);
  await Deno.chmod(path, mode);
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

/** Every path under `dir` (relative), for "nothing was created here" assertions. */
export async function listTree(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory) out.push(...await listTree(`${dir}/${e.name}`, p));
  }
  return out.sort();
}
