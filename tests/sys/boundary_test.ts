// The one unsafe boundary, enforced: no file but sys/libc.ts (the helper's calls) and sys/io.ts
// (the library's frame I/O, which the helper never loads) may load a library, touch raw pointers
// or read errno. A lint-style test over every module of the repository.

import assert from "node:assert/strict";
import { ROOT } from "../_support/ns.ts";

/** The only files allowed to use FFI. */
const BOUNDARY = "sys/libc.ts";
const IO = "sys/io.ts";

/** This file names the patterns, so it is skipped. */
const SELF = "tests/sys/boundary_test.ts";

/** Directories never scanned: VCS data and build output. */
const SKIP_DIRS: ReadonlySet<string> = new Set([".git", "build", "dist", "node_modules"]);

/** Module files; .ts is what the project has, the rest so a .js cannot sneak around the rule. */
const MODULE_EXT = /\.(ts|mts|cts|tsx|js|mjs|cjs|jsx)$/;

/**
 * What must not appear outside the boundary. Bracket access (`Deno["dlopen"]`) is caught too;
 * `UnsafePointer` also covers `UnsafePointerView`, listed anyway so a report names it exactly.
 */
const FORBIDDEN: ReadonlyArray<readonly [string, RegExp]> = [
  ["Deno.dlopen", /Deno\s*(\.\s*dlopen|\[\s*["'`]dlopen)/],
  ["UnsafePointerView", /UnsafePointerView/],
  ["UnsafePointer", /UnsafePointer(?!View)/],
  ["UnsafeFnPointer", /UnsafeFnPointer/],
  ["UnsafeCallback", /UnsafeCallback/],
  ["__errno_location", /__errno_location/],
];

/** Returns `line:name` for each forbidden use in `text`. Pure, for testing the scanner itself. */
function findForbidden(text: string): string[] {
  const hits: string[] = [];
  text.split("\n").forEach((line, i) => {
    for (const [name, re] of FORBIDDEN) if (re.test(line)) hits.push(`${i + 1}:${name}`);
  });
  return hits;
}

/** Every module file under `dir` (repository-relative paths), skipping SKIP_DIRS. */
async function modules(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (entry.isDirectory) {
      if (!SKIP_DIRS.has(entry.name)) out.push(...await modules(`${dir}/${entry.name}`, path));
    } else if (entry.isFile && MODULE_EXT.test(entry.name)) {
      out.push(path);
    }
  }
  return out;
}

Deno.test({
  name: "findForbidden() flags each FFI name, bracket access included, and passes clean code",
  permissions: "none",
  fn() {
    assert.deepEqual(findForbidden("const lib = Deno.dlopen(path, {});"), ["1:Deno.dlopen"]);
    assert.deepEqual(findForbidden('const f = Deno["dlopen"];'), ["1:Deno.dlopen"]);
    assert.deepEqual(findForbidden("x\nDeno.UnsafePointer.of(buf)"), ["2:UnsafePointer"]);
    assert.deepEqual(findForbidden("new Deno.UnsafePointerView(p)"), ["1:UnsafePointerView"]);
    assert.deepEqual(findForbidden("new Deno.UnsafeFnPointer(p, d)"), ["1:UnsafeFnPointer"]);
    assert.deepEqual(findForbidden("new Deno.UnsafeCallback(d, f)"), ["1:UnsafeCallback"]);
    assert.deepEqual(findForbidden("sym.__errno_location()"), ["1:__errno_location"]);
    assert.deepEqual(findForbidden('import { open } from "./sys/libc.ts";\nopen("/x", 0);'), []);
  },
});

Deno.test({
  name: `no module outside ${BOUNDARY} and ${IO} uses Deno.dlopen, raw pointers or errno`,
  permissions: { read: [ROOT] },
  async fn() {
    const files = await modules(ROOT);
    // The walk must see the tree, or an empty result would pass vacuously.
    for (const expected of [BOUNDARY, IO, "helper.ts", "guard.ts", "acl/load.ts", SELF]) {
      assert.ok(files.includes(expected), `the walk did not find ${expected}`);
    }
    const violations: string[] = [];
    for (const file of files) {
      if (file === BOUNDARY || file === IO || file === SELF) continue;
      const text = await Deno.readTextFile(`${ROOT}/${file}`);
      for (const hit of findForbidden(text)) violations.push(`${file}:${hit}`);
    }
    assert.deepEqual(violations, [], `FFI outside ${BOUNDARY} and ${IO}`);
  },
});

Deno.test({
  name: `${IO} loads libc by the same fixed path, once, and reads nothing from outside`,
  permissions: { read: [ROOT] },
  async fn() {
    const text = await Deno.readTextFile(`${ROOT}/${IO}`);
    // One dlopen call, of LIBC_PATH, in the function that core(), io() and the groups bind through.
    assert.equal(text.match(/Deno\.dlopen\(/g)?.length, 1);
    assert.match(text, /Deno\.dlopen\(LIBC_PATH, symbols\)/);
    assert.match(text, /coreBound \?\?= bind\(CORE\)/);
    assert.match(text, /bound \?\?= \(core\(\), bind\(SYMBOLS\)\)/);
    assert.match(text, /import \{[^}]*\bLIBC_PATH\b[^}]*\} from "\.\/libc\.ts";/);
    assert.doesNotMatch(text, /Deno\.env|Deno\.args/);
  },
});

Deno.test({
  name: `${BOUNDARY} is where the FFI lives, loading libc by a fixed absolute path`,
  permissions: { read: [ROOT] },
  async fn() {
    const text = await Deno.readTextFile(`${ROOT}/${BOUNDARY}`);
    assert.ok(findForbidden(text).some((h) => h.endsWith(":Deno.dlopen")));
    // One dlopen call, of LIBC_PATH, which is a literal chosen by architecture only.
    assert.equal(text.match(/Deno\.dlopen\(/g)?.length, 1);
    assert.match(text, /Deno\.dlopen\(LIBC_PATH, statics\)/);
    // Only addresses are taken from it ("pointer" statics), each called through UnsafeFnPointer:
    // no function symbol, whose trampoline Deno would compile at run time.
    assert.match(
      text,
      /statics\[key\] = \{ name: defs\[key\]!\.name \?\? key, type: "pointer" \};/,
    );
    assert.match(
      text,
      /new Deno\.UnsafeFnPointer<Deno\.ForeignFunction>\(addresses\[key\]!, defs\[key\]!\)/,
    );
    assert.match(text, /LIBC_PATH: string = Deno\.build\.arch === "aarch64"\s*\?\s*"\/lib\//);
    assert.doesNotMatch(text, /Deno\.env|Deno\.args/);
  },
});
