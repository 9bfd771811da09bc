// The JSR package can be published (license present) and ships exactly what users import or run:
// the module graphs of mod.ts, v86.ts and the helper (helper.ts with its preload guard.ts), plus
// README, SECURITY and LICENSE; no tests, benchmarks, build or install scripts. The dry run works
// offline (it only checks the package locally).

import assert from "node:assert/strict";
import { ROOT } from "./_support/ns.ts";

const ENTRIES = ["mod.ts", "v86.ts", "helper.ts", "guard.ts"] as const;
const DOCS = ["README.md", "SECURITY.md", "LICENSE", "deno.json"] as const;

async function deno(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Repository-relative paths of the local modules `entry` loads. */
async function localGraph(entry: string): Promise<string[]> {
  const r = await deno(["info", "--json", entry]);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout) as { modules: { local?: string }[] };
  const root = ROOT.endsWith("/") ? ROOT : `${ROOT}/`;
  return info.modules.flatMap((m) => m.local?.startsWith(root) ? [m.local.slice(root.length)] : []);
}

Deno.test("deno publish --dry-run passes and ships only the library, the helper and its docs", async () => {
  const r = await deno(["publish", "--dry-run", "--allow-dirty"]);
  const all = r.stdout + r.stderr;
  assert.equal(r.code, 0, all);
  const root = ROOT.endsWith("/") ? ROOT : `${ROOT}/`;
  const shipped = [...all.matchAll(/^\s*file:\/\/(\S+) \(/gm)].map((m) =>
    decodeURIComponent(m[1]!).slice(root.length)
  ).sort();
  assert.ok(shipped.length > 0, all);

  const wanted = new Set<string>(DOCS);
  for (const e of ENTRIES) for (const f of await localGraph(e)) wanted.add(f);
  assert.deepEqual(shipped, [...wanted].sort());
  for (const f of shipped) {
    assert.doesNotMatch(f, /^(tests|bench|scripts|examples|bin|build|dist)\//);
  }
});
