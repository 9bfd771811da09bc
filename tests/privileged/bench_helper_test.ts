// `deno task bench:helper` as a smoke run (CI runs benchmarks only this way): three rounds of
// every variant must complete, print the whole start-up breakdown, and leave no namespace or
// temporary tree behind. The numbers themselves are not judged here: a loaded machine would
// make any threshold flaky, and three rounds are too few (the bench says so itself).

import assert from "node:assert/strict";
import { namespaces, rootTest, runTask } from "../_support/ns.ts";

/** The bench's temporary trees under the temp directory. */
async function benchDirs(): Promise<string[]> {
  const dir = Deno.env.get("TMPDIR") ?? "/tmp";
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith("vmb-bench-helper-")) out.push(e.name);
  }
  return out;
}

rootTest("bench:helper smoke run: every step of the start-up breakdown, nothing left", async () => {
  const dirsBefore = new Set(await benchDirs());
  const out = await runTask(["bench:helper", "--runs=3"], 240_000);
  const { stdout, context } = out;

  assert.equal(out.code, 0, `bench:helper exited ${out.code}${context}`);
  const ns = /^bench:helper in namespace (vmbh-\d+-1) /m.exec(stdout)?.[1];
  assert.ok(ns, `no "bench:helper in namespace ..." line${context}`);
  // One table row per variant: a label, then the median, spread, step and CPU columns.
  for (
    const label of [
      "bare deno run, empty module",
      "+ module graph",
      "+ dlopen groups",
      "+ guard",
      "+ netlink check",
      "full helper",
      "QEMU's C helper",
      "spawn alone (/bin/true)",
    ]
  ) {
    const line = stdout.split("\n").find((l) => l.startsWith(`| ${label}`));
    assert.ok(line, `no table row for "${label}"${context}`);
    assert.match(line, /\| +\d+\.\d \| +-?\d+\.\d…-?\d+\.\d \|/, `row "${label}"${context}`);
  }
  assert.match(
    stdout,
    /^ours − bare deno: -?\d+\.\d ms .*too few rounds \(3\) to judge$/m,
    context,
  );
  assert.match(stdout, /^bench:helper done in \d+ s/m, context);

  assert.ok(!(await namespaces()).includes(ns), `namespace ${ns} left behind`);
  const left = (await benchDirs()).filter((d) => !dirsBefore.has(d));
  assert.deepEqual(left, [], "temporary trees left behind");
});
