// `deno task bench:helper`: how long QEMU waits for a tap, from spawning the helper to holding
// the fd, for our helper run from source, QEMU's C helper, and the floor under ours: a bare
// `deno run` of an empty module with the same flags. All in one throwaway network namespace,
// through the same sandbox prefix (a private /etc/qemu with "allow br0"), interleaved.
//
// Every variant goes through net/run_helper.ts (posix_spawn, a socketpair as fd 3, pidfd wait),
// so the spawn machinery is the same: for the helpers it returns the fd once the helper exited;
// for the empty module (and the prefix alone) it fails with "exited 0 without sending a file
// descriptor" once the child exited, and that is the time taken.
//
// Usage: deno task bench:helper [--runs=N] (default 20 per variant)

import { BridgeHelperError, runHelper } from "../net/run_helper.ts";
import { C_HELPER, HELPER_FROM_SOURCE, NetNs, sandbox } from "../scripts/_netns.ts";
import { finish, guard, median, onCleanup, runBounded } from "./_proc.ts";

const BUDGET_MS = 170_000;
const RUN_TIMEOUT_MS = 10_000;
const TARGET_MS = 10;

const runsArg = Deno.args.find((a) => a.startsWith("--runs="));
const unknown = Deno.args.filter((a) => !a.startsWith("--runs="));
if (unknown.length > 0) {
  console.error(`bench:helper: unknown argument ${unknown[0]} (known: --runs=N)`);
  Deno.exit(2);
}
const RUNS = Math.min(Math.max(Number(runsArg?.slice(7) ?? 20) || 20, 3), 100);

interface Variant {
  label: string;
  /** The command after the sandbox prefix. */
  argv: string[];
  /** True when the variant sends an fd (a helper); false when it just exits. */
  sendsFd: boolean;
  times: number[];
}

async function preflight(): Promise<void> {
  const problems: string[] = [];
  if (Deno.uid() !== 0) problems.push("run it as root (it creates a network namespace)");
  for (const cmd of ["ip", "unshare", "deno"]) {
    try {
      await runBounded(["sh", "-c", `command -v ${cmd}`], 5000);
    } catch {
      problems.push(`${cmd} is missing from PATH`);
    }
  }
  try {
    await Deno.stat(C_HELPER);
  } catch {
    problems.push(`${C_HELPER} is missing: apt-get install qemu-system-common`);
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(`bench:helper: ${p}`);
    Deno.exit(1);
  }
}

/** One spawn → fd (or → exit) through run_helper.ts, in milliseconds. */
async function once(prefix: readonly string[], v: Variant): Promise<number> {
  const t0 = performance.now();
  try {
    const fd = await runHelper({
      helper: [...prefix, ...v.argv],
      bridge: "br0",
      vnetHdr: false,
      signal: AbortSignal.timeout(RUN_TIMEOUT_MS),
    });
    const ms = performance.now() - t0;
    // Closing the fd removes the tap (the helpers make non-persistent taps).
    fd.close();
    if (!v.sendsFd) throw new Error(`${v.label} sent an fd, which it never should`);
    return ms;
  } catch (e) {
    const ms = performance.now() - t0;
    const expected = e instanceof BridgeHelperError && e.status?.exited === true &&
      e.status.code === 0 && /without sending a file descriptor/.test(e.message);
    if (!v.sendsFd && expected) return ms;
    throw e;
  }
}

const ms = (x: number) => `${x.toFixed(1)} ms`;
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)]!;

await preflight();
guard(BUDGET_MS);
const started = performance.now();
let failure: unknown;
let report = "";
try {
  const tmp = await Deno.makeTempDir({ prefix: "vmb-bench-helper-" });
  onCleanup(() => Deno.remove(tmp, { recursive: true }));
  await Deno.chmod(tmp, 0o755);
  // The floor: the same deno flags as bin/qemu-bridge-helper (minus --preload guard.ts, which is
  // part of ours), through the same kind of sh wrapper, on an empty module.
  await Deno.writeTextFile(`${tmp}/empty.ts`, "");
  await Deno.writeTextFile(
    `${tmp}/bare-deno`,
    `#!/bin/sh\nexec "\${DENO:-deno}" run --quiet --no-config --no-lock --no-prompt ` +
      `--no-code-cache --allow-ffi --v8-flags=--single-threaded "${tmp}/empty.ts" "$@"\n`,
  );
  await Deno.chmod(`${tmp}/bare-deno`, 0o755);

  const ns = await NetNs.create("vmbh");
  onCleanup(() => ns[Symbol.asyncDispose]());
  await ns.bridge("br0");
  const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  onCleanup(sb.cleanup);
  const denoPath = (await runBounded(["sh", "-c", "command -v deno"], 5000)).trim();

  const variants: Variant[] = [
    { label: "sandbox prefix alone (true)", argv: ["true"], sendsFd: false, times: [] },
    {
      label: "bare deno run, empty module",
      argv: [`${tmp}/bare-deno`],
      sendsFd: false,
      times: [],
    },
    {
      label: "ours (bin/qemu-bridge-helper)",
      argv: [HELPER_FROM_SOURCE],
      sendsFd: true,
      times: [],
    },
    { label: "QEMU's C helper", argv: [C_HELPER], sendsFd: true, times: [] },
  ];
  console.log(
    `bench:helper in namespace ${ns.name} (${navigator.hardwareConcurrency} CPUs): ${RUNS} runs ` +
      `per variant, interleaved, after one warm-up each; deno on PATH: ${denoPath}`,
  );
  for (const v of variants) await once(sb.argv, v); // warm-up: page cache, first-run costs
  for (let i = 0; i < RUNS; i++) {
    // Rotate the order so no variant always follows the same one.
    for (let j = 0; j < variants.length; j++) {
      const v = variants[(i + j) % variants.length]!;
      v.times.push(await once(sb.argv, v));
    }
    if ((i + 1) % 5 === 0) console.log(`  ${i + 1}/${RUNS} rounds`);
  }
  const taps = await ns.taps();
  if (taps.length > 0) throw new Error(`taps left behind: ${taps.join(", ")}`);

  const [prefix, bare, ours, c] = variants.map((v) => median(v.times)) as [
    number,
    number,
    number,
    number,
  ];
  const w = Math.max(...variants.map((v) => v.label.length));
  const lines = [
    `\nSpawn → fd received (→ exit for the first two), ${RUNS} runs each:\n`,
    `${"variant".padEnd(w)}   median      p10      p90`,
    ...variants.map((v) =>
      `${v.label.padEnd(w)} ${ms(median(v.times)).padStart(8)} ${
        ms(pct(v.times, 0.1)).padStart(8)
      } ${ms(pct(v.times, 0.9)).padStart(8)}`
    ),
    "",
    `ours / C helper:                 ${(ours / c).toFixed(2)}x`,
    `ours / bare deno:                ${(ours / bare).toFixed(2)}x`,
    `ours − bare deno:                ${ms(ours - bare)} (target ≤ ${TARGET_MS} ms: ${
      ours - bare <= TARGET_MS ? "met" : "MISSED"
    })`,
    `without the prefix: ours ${ms(ours - prefix)}, C ${ms(c - prefix)}, bare deno ${
      ms(bare - prefix)
    }`,
  ];
  report = lines.join("\n");
} catch (e) {
  failure = e ?? new Error("unknown failure");
}
await finish("bench:helper", started, report, failure);
