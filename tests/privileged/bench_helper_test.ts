// `deno task bench:helper` as a smoke run (CI runs benchmarks only this way): three rounds of
// every variant must complete, print the whole start-up breakdown, and leave no namespace or
// temporary tree behind. The numbers themselves are not judged here: a loaded machine would
// make any threshold flaky, and three rounds are too few (the bench says so itself).

import assert from "node:assert/strict";
import { ROOT, rootTest, run } from "../_support/ns.ts";

/** The network namespaces that exist now. */
async function namespaces(): Promise<string[]> {
  const out = await run(["ip", "-j", "netns", "list"]);
  if (out.code !== 0 || out.stdout.trim() === "") return [];
  return (JSON.parse(out.stdout) as { name: string }[]).map((n) => n.name);
}

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
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", "bench:helper", "--runs=3"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), 240_000);
  const out = await child.output();
  clearTimeout(killer);
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  const context = `\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;

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
