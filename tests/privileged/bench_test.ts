// The benchmarks run: `bench/netdev.ts --smoke` (a few seconds per contender) must print the
// one table with the C loop, every Netdev path and the naive loop, and clean up after itself.
// It proves the bench works, not any speed.

import assert from "node:assert/strict";
import { ROOT, rootTest } from "../_support/ns.ts";
import { PATHS } from "../../bench/_netdev_paths.ts";

async function bench(script: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}/bench/${script}`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, `${script} failed:\n${text}\n${new TextDecoder().decode(out.stderr)}`);
  return text;
}

rootTest("bench:netdev --smoke prints every path beside the C and naive loops", async () => {
  const netns = (await new Deno.Command("ip", { args: ["netns", "list"] }).output()).stdout;
  const text = await bench("netdev.ts", "--smoke");
  const rows = text.split("\n").filter((l) => /^(RX drain|TX) +64 B {2,}\S/.test(l));
  const paths = (l: string) => l.slice(16, 36).trim();
  const rx = rows.filter((l) => l.startsWith("RX")).map(paths);
  const tx = rows.filter((l) => l.startsWith("TX")).map(paths);
  assert.deepEqual(rx, ["C loop", ...PATHS.rx, "naive (await/frame)"]);
  assert.deepEqual(tx, ["C loop", ...PATHS.tx, "naive (await/frame)"]);
  for (const row of rows) {
    assert.match(row, /\d+\.\dk +\d+\.\d{3}/, `no fps in ${JSON.stringify(row)}`);
    assert.match(row, / \d+\.\d{2} /, `no CPU time per frame in ${JSON.stringify(row)}`);
  }
  assert.match(text, /Target \(every path >= 95% of C/);
  assert.match(text, /namespace and temporary files removed/);
  const after = (await new Deno.Command("ip", { args: ["netns", "list"] }).output()).stdout;
  // Other tests may run in parallel: only "vmbb-" (the bench's) namespaces must not be new.
  const benchNs = (b: Uint8Array) =>
    new TextDecoder().decode(b).split("\n").filter((l) => l.startsWith("vmbb-")).length;
  assert.ok(benchNs(after) <= benchNs(netns), "the bench left its namespace behind");
});

rootTest(
  "bench:forward --smoke prints ours, ours with offloads, C and the kernel's veth",
  async () => {
    const text = await bench("forward.ts", "--smoke");
    for (const who of ["ours", "ours+offloads", "C+offloads", "kernel veth"]) {
      assert.match(
        text,
        new RegExp(`^${who.replace("+", "\\+")} +\\d+\\.\\d\\d +\\d+% +\\d+%`, "m"),
        `no row for ${who}:\n${text}`,
      );
    }
    assert.match(text, /Goals: ours with offloads >= 90% of the C forwarder/);
    assert.match(text, /namespace and temporary files removed/);
  },
);

rootTest(
  "bench:forward --baseline=DIR adds another checkout's forwarder in the same rounds",
  async () => {
    // This checkout as its own baseline: the rows and the comparison line are what is checked.
    const text = await bench("forward.ts", "--smoke", `--baseline=${ROOT}`);
    for (const who of ["ours", "ours+offloads", "base", "base+offloads", "C+offloads"]) {
      assert.match(
        text,
        new RegExp(
          `^${who.replace("+", "\\+")} +\\d+\\.\\d\\d +\\d+% +\\d+% +\\d+\\.\\d\\d +\\d+\\.\\d{3}`,
          "m",
        ),
        `no row for ${who}:\n${text}`,
      );
    }
    assert.match(text, /^Baseline .*: ours\/base by rate \d+\.\dx with offloads/m);
    assert.match(text, /namespace and temporary files removed/);
  },
);
