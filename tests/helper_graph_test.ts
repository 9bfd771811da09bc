// The helper's module graph is closed: every module that helper.ts (and its preload guard.ts)
// can load is a file of this repository, and none of them reaches the network or the
// environment. The helper may run with CAP_NET_ADMIN; what it loads is what was reviewed.

import assert from "node:assert/strict";
import { ROOT } from "./_support/ns.ts";

interface Dependency {
  specifier: string;
  code?: { specifier?: string; error?: string };
  type?: { specifier?: string; error?: string };
}

interface ModuleInfo {
  kind: string;
  specifier: string;
  local?: string;
  error?: string;
  dependencies?: Dependency[];
}

interface GraphInfo {
  roots: string[];
  modules: ModuleInfo[];
  redirects: Record<string, string>;
  npmPackages: Record<string, unknown>;
}

/** `deno info --json` with the flags bin/qemu-bridge-helper runs the helper with. */
async function graph(entry: string): Promise<GraphInfo> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--no-config", "--no-lock", entry],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `deno info ${entry} failed: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)) as GraphInfo;
}

const INSIDE = `file://${ROOT}/`;

/** Text that must not appear in any module of the graph. */
const FORBIDDEN: ReadonlyArray<readonly [string, RegExp]> = [
  ["fetch(", /\bfetch\s*\(/],
  ["Deno.connectTls", /Deno\s*\.\s*connectTls/],
  ["Deno.env", /Deno\s*\.\s*env\b/],
  // Not in the graph, so not reviewed: a dynamic import or a worker would load code from
  // outside what `deno info` sees.
  ["import(", /\bimport\s*\(/],
  ["new Worker", /\bnew\s+Worker\b/],
];

for (const entry of ["helper.ts", "guard.ts"]) {
  Deno.test(`every module ${entry} can load is a file:// module inside the repository`, async () => {
    const info = await graph(entry);
    assert.deepEqual(info.roots, [`${INSIDE}${entry}`]);
    assert.deepEqual(info.redirects, {});
    assert.deepEqual(info.npmPackages, {});
    assert.ok(info.modules.some((m) => m.specifier === `${INSIDE}sys/libc.ts`));
    // The library's frame I/O (io_uring, raw reads into buffers by address) is never loaded by
    // the helper or its guard: nothing of it runs with a capability.
    assert.ok(!info.modules.some((m) => m.specifier === `${INSIDE}sys/io.ts`), "sys/io.ts");
    for (const m of info.modules) {
      assert.ok(m.specifier.startsWith(INSIDE), `outside the repository: ${m.specifier}`);
      assert.doesNotMatch(m.specifier, /^(npm|node|jsr|https?|data|blob):/);
      assert.equal(m.kind, "esm", `${m.specifier} is ${m.kind}`);
      assert.equal(m.error, undefined, `${m.specifier}: ${m.error}`);
      assert.equal(m.local, new URL(m.specifier).pathname);
      for (const d of m.dependencies ?? []) {
        for (const target of [d.code, d.type]) {
          if (target === undefined) continue;
          assert.equal(
            target.error,
            undefined,
            `${m.specifier} -> ${d.specifier}: ${target.error}`,
          );
          assert.ok(
            target.specifier?.startsWith(INSIDE),
            `${m.specifier} imports ${d.specifier} -> ${target.specifier}`,
          );
        }
      }
    }
  });

  Deno.test(`no module of ${entry}'s graph fetches, opens TLS, reads Deno.env or loads code dynamically`, async () => {
    const info = await graph(entry);
    const hits: string[] = [];
    for (const m of info.modules) {
      const text = await Deno.readTextFile(new URL(m.specifier));
      for (const [name, re] of FORBIDDEN) if (re.test(text)) hits.push(`${m.specifier}: ${name}`);
    }
    assert.deepEqual(hits, []);
  });
}

Deno.test({
  name: "the graph scan's patterns catch what they are meant to catch",
  permissions: "none",
  fn() {
    const caught = (text: string) => FORBIDDEN.filter(([, re]) => re.test(text)).map(([n]) => n);
    assert.deepEqual(caught('await fetch ("https://x")'), ["fetch("]);
    assert.deepEqual(caught("Deno.connectTls({ hostname })"), ["Deno.connectTls"]);
    assert.deepEqual(caught('Deno.env.get("X")'), ["Deno.env"]);
    assert.deepEqual(caught('await import("./x.ts")'), ["import("]);
    assert.deepEqual(caught("new Worker(url)"), ["new Worker"]);
    assert.deepEqual(caught('import { a } from "./a.ts";\nconst prefetch = 1;'), []);
  },
});
