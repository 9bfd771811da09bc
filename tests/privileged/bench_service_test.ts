// `deno task bench:service --quick` runs to the end in CI: the service answers every request of
// each phase, leaves no tap or namespace, and prints its table. The targets are printed, not
// asserted: absolute times on a shared 2-core machine are not a test.

import assert from "node:assert/strict";
import { ROOT, rootTest, run } from "../_support/ns.ts";

rootTest(
  "bench:service --quick completes and prints the latency, throughput and memory table",
  async () => {
    const r = await run([
      Deno.execPath(),
      "run",
      "--allow-all",
      `${ROOT}/bench/service.ts`,
      "--quick",
    ]);
    console.log(
      r.stdout.split("\n").filter((l) => l.startsWith("|") || /target|RSS/.test(l)).join("\n"),
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /\| service, request → fd \(1 client\) +\| +[0-9.]+ \| +[0-9.]+ \| +\d+ \|/,
    );
    assert.match(r.stdout, /\| helper, spawn → fd/);
    assert.match(r.stdout, /service RSS over 1000 requests/);
    assert.match(r.stdout, /namespace and temporary files removed/);
  },
);
