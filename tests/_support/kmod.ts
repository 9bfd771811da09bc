/**
 * Kernel modules for the test guests, in the order the kernel can load them, computed from the
 * modules' own metadata (the `depends=` field of each `.ko`'s `.modinfo` section) rather than
 * from a hand-written list: Debian's kernel updates move symbols between modules (6.1.0-57 made
 * `virtio` depend on `virtio_ring`), and a list that was right once then makes every `insmod` fail
 * with "unknown symbol in module". A kernel package ships no `modules.dep` (its postinst runs
 * depmod), so the `.modinfo` section is the one source that is always there.
 *
 * @module
 */

/** One `key=value` string of a module's `.modinfo` section, in file order (keys may repeat). */
export type ModinfoEntry = readonly [key: string, value: string];

/**
 * Reads the `.modinfo` section of a kernel module (an ELF relocatable object, 32- or 64-bit,
 * either byte order): NUL-separated `key=value` strings. Pure.
 *
 * @throws {SyntaxError} when the bytes are not an ELF file or have no `.modinfo` section.
 */
export function parseModinfo(ko: Uint8Array): ModinfoEntry[] {
  const section = elfSection(ko, ".modinfo");
  const out: ModinfoEntry[] = [];
  for (const s of new TextDecoder().decode(section).split("\0")) {
    const eq = s.indexOf("=");
    if (eq > 0) out.push([s.slice(0, eq), s.slice(eq + 1)]);
  }
  return out;
}

/** A module's name as the kernel spells it: `ne2k-pci` and `ne2k_pci` are the same module. */
export function moduleName(nameOrPath: string): string {
  const base = nameOrPath.slice(nameOrPath.lastIndexOf("/") + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, "").replaceAll("-", "_");
}

/** The modules a module needs loaded first: its `depends=` field (comma-separated, may be empty). */
export function modinfoDepends(info: readonly ModinfoEntry[]): string[] {
  const out: string[] = [];
  for (const [k, v] of info) {
    if (k !== "depends") continue;
    for (const d of v.split(",")) if (d.trim()) out.push(moduleName(d.trim()));
  }
  return out;
}

/**
 * The closure of `roots` under `depends`, each module after every module it depends on (a
 * depth-first post-order, so the result is stable for the same input). Modules in `builtin` are
 * part of the kernel image and are left out. Pure.
 *
 * @throws {Error} when a needed module has no entry in `depends` and is not built in, or when
 * the dependencies form a cycle (the kernel could load neither).
 */
export function moduleLoadOrder(
  roots: readonly string[],
  depends: ReadonlyMap<string, readonly string[]>,
  builtin: ReadonlySet<string> = new Set(),
): string[] {
  const out: string[] = [];
  const done = new Set<string>();
  const visit = (raw: string, chain: readonly string[]): void => {
    const name = moduleName(raw);
    if (done.has(name) || builtin.has(name)) return;
    if (chain.includes(name)) {
      throw new Error(`Kernel module dependency cycle: ${[...chain, name].join(" -> ")}`);
    }
    const deps = depends.get(name);
    if (deps === undefined) {
      const via = chain.length ? ` (needed by ${chain.at(-1)})` : "";
      throw new Error(`Kernel module not found: ${name}${via}`);
    }
    for (const d of deps) visit(d, [...chain, name]);
    done.add(name);
    out.push(name);
  };
  for (const r of roots) visit(r, []);
  return out;
}

/** A module to put in the initramfs: its name, where it came from, and its (decompressed) bytes. */
export interface LoadableModule {
  /** The module's name (`virtio_ring`). */
  name: string;
  /** Its file in the module tree (may be `.ko.xz`, `.ko.zst` or `.ko.gz`). */
  path: string;
  /** The plain ELF object, ready for `insmod`. */
  bytes: Uint8Array;
  /** Its `depends=` field. */
  depends: string[];
}

/**
 * Reads the modules `roots` need from a module tree (`/lib/modules/<release>`, installed or
 * unpacked from a kernel package), following each module's own `depends=`, and returns them in
 * load order (see {@linkcode moduleLoadOrder}). Compressed modules are decompressed. Modules
 * listed in the tree's `modules.builtin` are skipped.
 *
 * Requires `--allow-read` (and `--allow-run` for `.ko.xz`/`.ko.zst`: xz or zstd, else busybox).
 *
 * @throws {Error} when a module is missing, unreadable, or the dependencies form a cycle.
 */
export async function readModulesInLoadOrder(
  modulesDir: string,
  roots: readonly string[],
): Promise<{ modules: LoadableModule[]; builtin: string[] }> {
  const paths = await indexModuleTree(modulesDir);
  const builtin = await readBuiltin(modulesDir);
  const read = new Map<string, LoadableModule>();
  const queue = roots.map(moduleName);
  while (queue.length) {
    const name = queue.shift()!;
    if (read.has(name) || builtin.has(name)) continue;
    const path = paths.get(name);
    if (path === undefined) continue; // moduleLoadOrder() names it, with who needed it.
    const bytes = await readModuleFile(path);
    let depends: string[];
    try {
      depends = modinfoDepends(parseModinfo(bytes));
    } catch (e) {
      throw new Error(`Cannot read the metadata of ${path}: ${(e as Error).message}`);
    }
    read.set(name, { name, path, bytes, depends });
    queue.push(...depends);
  }
  const order = moduleLoadOrder(
    roots,
    new Map([...read].map(([n, m]) => [n, m.depends])),
    builtin,
  );
  return {
    modules: order.map((n) => read.get(n)!),
    builtin: roots.map(moduleName).filter((n) => builtin.has(n)),
  };
}

/** Every module file under a tree, by module name. */
export async function indexModuleTree(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for await (const e of Deno.readDir(d)) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) out.set(moduleName(e.name), p);
    }
  };
  await walk(root);
  return out;
}

async function readBuiltin(modulesDir: string): Promise<Set<string>> {
  try {
    const text = await Deno.readTextFile(`${modulesDir}/modules.builtin`);
    return new Set(text.split("\n").filter((l) => l.trim()).map((l) => moduleName(l.trim())));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new Set();
    throw e;
  }
}

/** A module file's plain ELF bytes (gzip in-process; xz and zstd with the usual tools). */
export async function readModuleFile(path: string): Promise<Uint8Array> {
  if (path.endsWith(".ko")) return await Deno.readFile(path);
  if (path.endsWith(".ko.gz")) {
    const f = await Deno.open(path);
    return new Uint8Array(
      await new Response(f.readable.pipeThrough(new DecompressionStream("gzip"))).arrayBuffer(),
    );
  }
  const tools = path.endsWith(".ko.xz")
    ? [["xz", "-dc"], ["/bin/busybox", "unxz", "-c"]]
    : path.endsWith(".ko.zst")
    ? [["zstd", "-dcq"], ["/bin/busybox", "unzstd", "-c"]]
    : [];
  for (const [cmd, ...args] of tools) {
    try {
      const r = await new Deno.Command(cmd!, { args: [...args, path], stderr: "piped" }).output();
      if (r.success) return r.stdout;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  throw new Error(`Cannot decompress the kernel module: ${path} (install xz-utils or zstd)`);
}

// ---------------------------------------------------------------------------------------------
// ELF section lookup

function elfSection(b: Uint8Array, wanted: string): Uint8Array {
  if (b.length < 16 || b[0] !== 0x7f || b[1] !== 0x45 || b[2] !== 0x4c || b[3] !== 0x46) {
    throw new SyntaxError("Not an ELF file: bad magic");
  }
  const cls = b[4];
  const little = b[5] === 1;
  if ((cls !== 1 && cls !== 2) || (b[5] !== 1 && b[5] !== 2)) {
    throw new SyntaxError(`Not an ELF file: class ${cls}, data encoding ${b[5]}`);
  }
  const is64 = cls === 2;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const need = (off: number, len: number, what: string): void => {
    if (!Number.isSafeInteger(off) || off < 0 || off + len > b.length) {
      throw new SyntaxError(`Truncated ELF file: ${what} at ${off} is past the end (${b.length})`);
    }
  };
  const u16 = (o: number) => (need(o, 2, "field"), v.getUint16(o, little));
  const u32 = (o: number) => (need(o, 4, "field"), v.getUint32(o, little));
  const word = (o: number) =>
    is64 ? (need(o, 8, "field"), Number(v.getBigUint64(o, little))) : u32(o);

  const shoff = word(is64 ? 0x28 : 0x20);
  const shentsize = u16(is64 ? 0x3a : 0x2e);
  const shnum = u16(is64 ? 0x3c : 0x30);
  const shstrndx = u16(is64 ? 0x3e : 0x32);
  if (shentsize < (is64 ? 0x40 : 0x28)) {
    throw new SyntaxError(`Bad ELF file: section header size ${shentsize}`);
  }
  const header = (i: number) => {
    const h = shoff + i * shentsize;
    need(h, shentsize, "section header");
    return {
      name: u32(h),
      offset: word(h + (is64 ? 0x18 : 0x10)),
      size: word(h + (is64 ? 0x20 : 0x14)),
    };
  };
  if (shstrndx >= shnum) throw new SyntaxError(`Bad ELF file: no section name table`);
  const names = header(shstrndx);
  need(names.offset, names.size, "section name table");
  const nameAt = (off: number): string => {
    if (off >= names.size) throw new SyntaxError(`Bad ELF file: section name offset ${off}`);
    const start = names.offset + off;
    let end = start;
    while (end < names.offset + names.size && b[end] !== 0) end++;
    return new TextDecoder().decode(b.subarray(start, end));
  };
  for (let i = 1; i < shnum; i++) {
    const h = header(i);
    if (nameAt(h.name) !== wanted) continue;
    need(h.offset, h.size, wanted);
    return b.subarray(h.offset, h.offset + h.size);
  }
  throw new SyntaxError(`Not a kernel module: no ${wanted} section`);
}
