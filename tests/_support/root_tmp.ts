// Scratch directories for installer tests whose every ancestor is root-owned and writable by root
// only. The installer refuses any other directory chain (a DESTDIR under the sticky,
// world-writable /tmp included), so its tests cannot use Deno.makeTempDir()'s default.

/** Candidate parents, in order: root-owned 0755 on Debian and in containers alike. */
const BASES: readonly string[] = ["/run", "/var/lib", "/var/cache"];

async function chainIsRoots(path: string): Promise<boolean> {
  let p = path;
  for (;;) {
    const st = await Deno.lstat(p).catch(() => null);
    if (st === null || !st.isDirectory || st.uid !== 0 || (st.mode! & 0o022) !== 0) return false;
    if (p === "/") return true;
    p = p.slice(0, p.lastIndexOf("/")) || "/";
  }
}

/** A fresh root-owned 0755 directory under a root-only chain; removed by `await using`. */
export async function rootTempDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  for (const base of BASES) {
    if (!(await chainIsRoots(base))) continue;
    const path = await Deno.makeTempDir({ dir: base, prefix });
    await Deno.chmod(path, 0o755);
    return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
  }
  throw new Error(
    `No root-owned, root-only writable parent for a scratch directory among ${BASES}`,
  );
}
