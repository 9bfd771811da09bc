// Groups the tests need, made by the tests: a private copy of /etc/group, bind-mounted over
// /etc/group inside a test's own mount namespace, in which the group exists with a gid no real
// group has. No test depends on a group this machine happens to have (a fresh Debian has no
// kvm group), and the real /etc/group is never written.

/** A private /etc/group with one group added for the tests. */
export interface TestGroupFile {
  /** The group's name (e.g. `kvm`). */
  readonly name: string;
  /** Its gid in the private file (one no group of the real /etc/group has). */
  readonly gid: number;
  /** The private file (root-owned, 0644). */
  readonly path: string;
  /** A shell line for a private mount namespace: bind-mounts the file over /etc/group. */
  readonly mountLine: string;
  /** The gid of `name` in the private file (the test group, or a real one kept from /etc/group). */
  gidOf(name: string): number;
}

const made = new Map<string, Promise<TestGroupFile>>();

/**
 * The private group file in which `name` exists (replacing a real group of that name, so the
 * gid is always the tests' own). Made once per test process and removed when it exits.
 */
export function testGroupFile(name: string): Promise<TestGroupFile> {
  let p = made.get(name);
  if (p === undefined) {
    p = make(name);
    made.set(name, p);
  }
  return p;
}

async function make(name: string): Promise<TestGroupFile> {
  const real = (await Deno.readTextFile("/etc/group")).split("\n").filter((l) => l !== "");
  const kept = real.filter((l) => !l.startsWith(`${name}:`));
  const used = new Set(real.map((l) => Number(l.split(":")[2])));
  let gid = 60_100;
  while (used.has(gid)) gid++;
  const lines = [...kept, `${name}:x:${gid}:`];

  const dir = await Deno.makeTempDir({ prefix: "vmb-group-" });
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* already gone */ }
  });
  await Deno.chmod(dir, 0o755);
  const path = `${dir}/group`;
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  await Deno.chmod(path, 0o644);
  const gids = new Map(lines.map((l) => [l.split(":")[0]!, Number(l.split(":")[2])]));
  return {
    name,
    gid,
    path,
    mountLine: `mount --bind ${path} /etc/group`,
    gidOf(n: string): number {
      const g = gids.get(n);
      if (g === undefined) throw new Error(`No group ${n} in ${path}`);
      return g;
    },
  };
}
