// The project's source, copied where every user can read it, for tests that run our code as
// another user (uid 65534): a checkout in root's home or any 0700 directory cannot be entered by
// that user, and "Import file:///.../acl/load.ts failed" would fail the test for the wrong reason.

import { ROOT } from "./ns.ts";

/**
 * What code run as another user may load: the library, the helper and its preload, the bridge
 * service's client (the helper and the library ask it), the installer and doctor, and the
 * config files `deno` reads beside them.
 */
const ENTRIES = [
  "mod.ts",
  "v86.ts",
  "helper.ts",
  "guard.ts",
  "deno.json",
  "deno.lock",
  "bin",
  "acl",
  "caps",
  "cli",
  "net",
  "sys",
  "scripts",
  "service",
] as const;

/** A copy of the source that every user can read. */
export interface ReadableSource {
  /** The copy's root directory (root-owned, 0755, files 0644 or 0755). */
  readonly root: string;
  /** Its bin/qemu-bridge-helper (helper.ts with the compile flags). */
  readonly helper: string;
  /** A `file://` URL of a file of the copy, e.g. `url("acl/load.ts")`. */
  url(relative: string): string;
  /** Copies a file of the checkout (e.g. a built guest kernel) into the copy; returns its path. */
  share(path: string): Promise<string>;
}

let shared: Promise<ReadableSource> | undefined;

/**
 * The copy for this test process: made on first use, removed when the process exits (the
 * `unload` event), so every test file pays for it once and leaves nothing behind.
 */
export function sourceForOthers(): Promise<ReadableSource> {
  shared ??= (async () => {
    const root = await Deno.makeTempDir({ prefix: "vmb-src-" });
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(root, { recursive: true });
      } catch { /* already gone */ }
    });
    await Deno.chmod(root, 0o755);
    for (const e of ENTRIES) await copyReadable(`${ROOT}/${e}`, `${root}/${e}`);
    await assertReadableByAll(root);
    return {
      root,
      helper: `${root}/bin/qemu-bridge-helper`,
      url: (relative: string) => new URL(relative, `file://${root}/`).href,
      share: async (path: string) => {
        await Deno.mkdir(`${root}/shared`, { recursive: true, mode: 0o755 });
        const dir = await Deno.makeTempDir({ dir: `${root}/shared` });
        await Deno.chmod(dir, 0o755);
        const to = `${dir}/${path.slice(path.lastIndexOf("/") + 1)}`;
        await copyReadable(path, to);
        return to;
      },
    };
  })();
  return shared;
}

/** Copies a file or tree, giving directories 0755 and files 0644 (0755 if executable). */
async function copyReadable(from: string, to: string): Promise<void> {
  const st = await Deno.lstat(from);
  if (st.isDirectory) {
    await Deno.mkdir(to);
    await Deno.chmod(to, 0o755);
    for await (const e of Deno.readDir(from)) {
      await copyReadable(`${from}/${e.name}`, `${to}/${e.name}`);
    }
  } else if (st.isFile) {
    await Deno.copyFile(from, to);
    await Deno.chmod(to, (st.mode ?? 0) & 0o111 ? 0o755 : 0o644);
  } else {
    throw new Error(`Not a file or directory in the source tree: ${from}`);
  }
}

/** Every directory from `/` down to `dir` lets others through; else the copy is of no use. */
async function assertReadableByAll(dir: string): Promise<void> {
  const parts = dir.split("/").filter((p) => p !== "");
  for (let i = 0; i <= parts.length; i++) {
    const d = "/" + parts.slice(0, i).join("/");
    const mode = (await Deno.stat(d)).mode ?? 0;
    if ((mode & 0o001) === 0) {
      throw new Error(
        `Other users cannot enter ${d} (mode ${(mode & 0o7777).toString(8)}): set TMPDIR`,
      );
    }
  }
}
