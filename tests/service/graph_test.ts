// What the service binary can load: only modules of this repository (no npm:, jsr:, https:), no
// fetch, workers or dynamic import anywhere, and the environment read in service/main.ts only
// (LISTEN_FDS and LISTEN_PID, the only variables its --allow-env grants).

import assert from "node:assert/strict";
import { ROOT } from "../_support/ns.ts";

const INSIDE = `file://${ROOT}/`;

for (const entry of ["service/main.ts", "service/guard.ts"]) {
  Deno.test(`every module ${entry} can load is inside the repository, and only main reads env`, async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--no-config", "--no-lock", entry],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: Array<{ specifier: string; kind: string; local?: string }>;
      npmPackages: Record<string, unknown>;
    };
    assert.deepEqual(info.npmPackages, {});
    for (const m of info.modules) {
      assert.ok(m.specifier.startsWith(INSIDE), `outside the repository: ${m.specifier}`);
      assert.equal(m.kind, "esm");
      const text = await Deno.readTextFile(new URL(m.specifier));
      assert.doesNotMatch(text, /\bfetch\s*\(|\bnew\s+Worker\b|\bimport\s*\(/, m.specifier);
      if (m.specifier !== `${INSIDE}service/main.ts`) {
        assert.doesNotMatch(text, /Deno\s*\.\s*env\b/, `${m.specifier} reads the environment`);
      }
    }
    const main = await Deno.readTextFile(`${ROOT}/service/main.ts`);
    const vars = [...main.matchAll(/Deno\.env\.get\("([A-Z_]+)"\)/g)].map((m) => m[1]).sort();
    assert.deepEqual(vars, entry === "service/main.ts" ? ["LISTEN_FDS", "LISTEN_PID"] : vars);
  });
}
