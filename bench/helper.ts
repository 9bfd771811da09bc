// `deno task bench:helper`: how long QEMU waits for a tap, from spawning the helper to holding
// the fd, for our helper run from source, QEMU's C helper, and the floor under ours: a bare
// `deno run` of an empty module with the same flags. Between the floor and ours, the start-up is
// taken apart in steps, each a run of its own that adds one thing to the one before:
//
//   bare deno run        the floor: an empty module, the helper's deno flags
//   + module graph       helper.ts's imports, loaded and evaluated (no symbol bound, no guard)
//   + dlopen groups      binding the libc symbols the helper binds on its way to the fd: one
//                        group of two, syscall(2) and errno (sys/libc.ts says why)
//   + guard              --preload guard.ts: the main-module check and PR_SET_DUMPABLE
//   + netlink check      step 4 and the re-check of the master (two RTM_GETLINK round trips)
//   full helper          bin/qemu-bridge-helper: privileges, ACL, tap, ioctls, sendmsg
//
// The guard comes after the symbols because it is the first to call libc: placed before them
// it would carry the whole first dlopen (the runtime's FFI start-up) as its own cost.
// The steps run copies of the helper's own modules (found with `deno info`) under a temporary
// directory, each with its own helper.ts next to guard.ts, so the guard runs unchanged.
//
// The measuring runs as a second process of this file (--inner) inside one throwaway network
// namespace and a private mount namespace (a private /etc/qemu with "allow br0"), so each run
// is the spawn of the variant itself: no per-run `ip netns exec`, unshare and mounts, whose
// cost and noise would dwarf the differences measured. Interleaved: every round runs each
// variant once, in a rotated order, and a step's cost is the median over the rounds of (this
// variant − the one above it) in that round, which cancels most of the drift of a loaded
// machine. CPU time (user + system of the variant's process tree, from getrusage) is shown
// beside the wall-clock time: load inflates it far less.
//
// Every variant goes through net/run_helper.ts (posix_spawn, a socketpair as fd 3, pidfd wait),
// so the spawn machinery is the same: for the helpers it returns the fd once the helper exited
// and the received tap was checked to be a port of br0 (a few netlink calls in this process,
// paid by ours and C's alike); for the others it fails with "exited 0 without sending a file
// descriptor" once the child exited, and that is the time taken.
//
// Usage: deno task bench:helper [--runs=N] [--baseline=DIR]
//   --runs=N        rounds (default 20, at least 3)
//   --baseline=DIR  also run DIR/bin/qemu-bridge-helper (another checkout, e.g. `git worktree
//                   add DIR main`) in every round, and report ours − it: a change measured
//                   interleaved, not against a number from another hour's load

import { BridgeHelperError, runHelper } from "../net/run_helper.ts";
import { C_HELPER, HELPER_FROM_SOURCE, NetNs, ROOT, sandbox } from "../scripts/_netns.ts";
import { childrenCpuMs } from "../sys/io.ts";
import { finish, guard, median, onCleanup, runBounded } from "./_proc.ts";

const BUDGET_MS_BASE = 120_000;
const RUN_TIMEOUT_MS = 10_000;
const TARGET_MS = 10;

const runsArg = Deno.args.find((a) => a.startsWith("--runs="));
/** Set by the outer process: the measuring part, run inside the sandbox, in this directory. */
const innerTmp = Deno.args.find((a) => a.startsWith("--inner="))?.slice(8);
const baselineDir = Deno.args.find((a) => a.startsWith("--baseline="))?.slice(11);
const KNOWN = ["--runs=", "--inner=", "--baseline="];
const unknown = Deno.args.filter((a) => !KNOWN.some((k) => a.startsWith(k)));
if (unknown.length > 0) {
  console.error(
    `bench:helper: unknown argument ${unknown[0]} (known: --runs=N, --baseline=DIR)`,
  );
  Deno.exit(2);
}
const RUNS = Math.min(Math.max(Number(runsArg?.slice(7) ?? 20) || 20, 3), 100);
/** Set-up plus up to 8 s a round: eight variants on a loaded machine take 2-4 s. */
const BUDGET_MS = BUDGET_MS_BASE + RUNS * 8_000;

/** The deno flags of bin/qemu-bridge-helper (and of `deno compile` in deno.json). */
const DENO_FLAGS = "--quiet --no-config --no-lock --no-prompt --no-code-cache --allow-ffi " +
  "--v8-flags=--single-threaded,--jitless";

interface Variant {
  label: string;
  /** The command. */
  argv: string[];
  /** True when the variant sends an fd (a helper); false when it just exits. */
  sendsFd: boolean;
  /** Wall-clock milliseconds, one per round. */
  times: number[];
  /** CPU milliseconds (user + system of the child and its children), one per round. */
  cpu: number[];
}

/**
 * The main module of each step, written as helper.ts beside a copy of guard.ts. `imports` is the
 * import block of the real helper.ts, so "+ module graph" loads exactly its graph.
 */
function stepModules(
  imports: string,
): { graph: string; dlopen: string; guard: string; netlink: string } {
  // The symbols sys/libc.ts binds on first use, reached the way the helper reaches them:
  // getresuid (step 1) and getpid (step 3, the --fd peer) bind the `sys` group (syscall(2) and
  // errno), through which every call on the helper's way to the fd goes. The check after them
  // keeps this step honest: should the helper's path ever bind more, it must show here.
  const bind = [
    `import { boundSymbols as __bound, getpid as __getpid, getresuid as __getresuid } from "./sys/libc.ts";`,
    "__getresuid();",
    "__getpid();",
    `if (__bound().length !== 2) throw new Error("bound " + __bound().join(", "));`,
  ].join("\n");
  // Step 4 and the master re-check, on br0, the way helper.ts does them.
  const netlink = [
    `import { checkName as __checkName, Links as __Links } from "./net/link.ts";`,
    "{",
    "  using links = new __Links();",
    `  const found = __checkName(links, "br0");`,
    `  if (found.kind !== "canonical") throw new Error("br0 is not there");`,
    `  if (links.get({ index: found.index })?.name !== "br0") throw new Error("br0 by index");`,
    "}",
  ].join("\n");
  // TypeScript drops an import whose bindings are never used, and with it the module's loading
  // and evaluation: every imported value is used once, so the step loads what helper.ts loads.
  const graph = `${imports}\n${useAll(imports)}`;
  return {
    graph,
    dlopen: `${graph}\n${bind}\n`,
    guard: `${graph}\n${bind}\n`,
    netlink: `${graph}\n${bind}\n${netlink}\n`,
  };
}

/** A statement that uses every value `imports` binds (type-only imports are left out). */
function useAll(imports: string): string {
  const names: string[] = [];
  for (const statement of imports.match(/^import(?! type\b)[^;]*;$/gm) ?? []) {
    const list = /\{([^}]*)\}/.exec(statement)?.[1] ?? "";
    for (const item of list.split(",")) {
      const name = item.trim();
      if (name === "" || name.startsWith("type ")) continue;
      names.push(name.split(/\s+as\s+/).pop()!);
    }
  }
  if (names.length === 0) throw new Error("found no imported values in helper.ts");
  return `void [${names.join(", ")}];`;
}

/** Repository-relative paths of every local module helper.ts and guard.ts load. */
async function helperModules(): Promise<string[]> {
  const paths = new Set<string>();
  for (const entry of ["helper.ts", "guard.ts"]) {
    const out = await runBounded(
      [Deno.execPath(), "info", "--json", "--no-config", "--no-lock", `${ROOT}/${entry}`],
      30_000,
    );
    const info = JSON.parse(out) as { modules: { specifier: string }[] };
    for (const m of info.modules) {
      const path = new URL(m.specifier).pathname;
      if (!m.specifier.startsWith("file://") || !path.startsWith(`${ROOT}/`)) {
        throw new Error(`${entry} loads ${m.specifier}, outside the repository`);
      }
      paths.add(path.slice(ROOT.length + 1));
    }
  }
  return [...paths].sort();
}

/** A tree with copies of `modules` and `helper.ts` replaced by `main`; returns its wrapper. */
async function stepTree(
  dir: string,
  modules: readonly string[],
  main: string,
  preload: boolean,
): Promise<string> {
  for (const rel of modules) {
    if (rel === "helper.ts") continue;
    const to = `${dir}/${rel}`;
    await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true, mode: 0o755 });
    await Deno.copyFile(`${ROOT}/${rel}`, to);
    await Deno.chmod(to, 0o644);
  }
  await Deno.writeTextFile(`${dir}/helper.ts`, main, { mode: 0o644 });
  await Deno.chmod(`${dir}/helper.ts`, 0o644);
  const guardFlag = preload ? `--preload "${dir}/guard.ts" ` : "";
  return await wrapper(`${dir}/run`, `${guardFlag}"${dir}/helper.ts"`);
}

/** An sh wrapper like bin/qemu-bridge-helper that runs deno with DENO_FLAGS and `tail`. */
async function wrapper(path: string, tail: string): Promise<string> {
  await Deno.writeTextFile(
    path,
    `#!/bin/sh\nexec "\${DENO:-deno}" run ${DENO_FLAGS} ${tail} "$@"\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
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
  if (baselineDir !== undefined) {
    try {
      await Deno.stat(`${baselineDir}/bin/qemu-bridge-helper`);
    } catch {
      problems.push(`--baseline=${baselineDir}: no bin/qemu-bridge-helper there`);
    }
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(`bench:helper: ${p}`);
    Deno.exit(1);
  }
}

/** One spawn → fd (or → exit) through run_helper.ts: wall-clock and CPU milliseconds. */
async function once(v: Variant): Promise<[number, number]> {
  const cpu0 = childrenCpuMs();
  const t0 = performance.now();
  try {
    const fd = await runHelper({
      helper: v.argv,
      bridge: "br0",
      vnetHdr: false,
      signal: AbortSignal.timeout(RUN_TIMEOUT_MS),
    });
    const ms = performance.now() - t0;
    // Closing the fd removes the tap (the helpers make non-persistent taps).
    fd.close();
    if (!v.sendsFd) throw new Error(`${v.label} sent an fd, which it never should`);
    return [ms, childrenCpuMs() - cpu0];
  } catch (e) {
    const ms = performance.now() - t0;
    const expected = e instanceof BridgeHelperError && e.status?.exited === true &&
      e.status.code === 0 && /without sending a file descriptor/.test(e.message);
    if (!v.sendsFd && expected) return [ms, childrenCpuMs() - cpu0];
    throw e;
  }
}

const f1 = (x: number) => x.toFixed(1);
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)]!;
const load = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");

/** The variants, in table order; the ladder first. Paths are those the outer process made. */
function variantsIn(tmp: string): { ladder: Variant[]; others: Variant[] } {
  const v = (label: string, argv: string[], sendsFd = false): Variant => ({
    label,
    argv,
    sendsFd,
    times: [],
    cpu: [],
  });
  return {
    // Each row adds one thing to the row above it.
    ladder: [
      v("bare deno run, empty module", [`${tmp}/bare-deno`]),
      v("+ module graph (helper's imports)", [`${tmp}/graph/run`]),
      v("+ dlopen groups the helper binds", [`${tmp}/dlopen/run`]),
      v("+ guard (preload guard.ts)", [`${tmp}/guard/run`]),
      v("+ netlink check (2 RTM_GETLINK)", [`${tmp}/netlink/run`]),
      v("full helper (bin/qemu-bridge-helper)", [HELPER_FROM_SOURCE], true),
    ],
    others: [
      v("QEMU's C helper", [C_HELPER], true),
      v("spawn alone (/bin/true)", ["/bin/true"]),
      ...(baselineDir === undefined
        ? []
        : [v("baseline helper (--baseline)", [`${baselineDir}/bin/qemu-bridge-helper`], true)]),
    ],
  };
}

/** The measuring part, inside the sandbox: prints one JSON line, label → times and CPU. */
async function inner(tmp: string): Promise<void> {
  const { ladder, others } = variantsIn(tmp);
  const variants = [...ladder, ...others];
  for (const x of variants) await once(x); // warm-up: page cache, first-run costs
  for (let i = 0; i < RUNS; i++) {
    // Rotate the order so no variant always follows the same one.
    for (let j = 0; j < variants.length; j++) {
      const x = variants[(i + j) % variants.length]!;
      const [ms, cpu] = await once(x);
      x.times.push(ms);
      x.cpu.push(cpu);
    }
  }
  console.log(JSON.stringify(variants.map((x) => [x.label, x.times, x.cpu])));
}

if (innerTmp !== undefined) {
  await inner(innerTmp);
  Deno.exit(0);
}

await preflight();
guard(BUDGET_MS);
const started = performance.now();
let failure: unknown;
let report = "";
try {
  const tmp = await Deno.makeTempDir({ prefix: "vmb-bench-helper-" });
  onCleanup(() => Deno.remove(tmp, { recursive: true }));
  await Deno.chmod(tmp, 0o755);
  await Deno.writeTextFile(`${tmp}/empty.ts`, "");
  await Deno.chmod(`${tmp}/empty.ts`, 0o644);
  await wrapper(`${tmp}/bare-deno`, `"${tmp}/empty.ts"`);
  const modules = await helperModules();
  const helperSource = await Deno.readTextFile(`${ROOT}/helper.ts`);
  const imports = helperSource.match(/^import[^;]*;$/gm)?.join("\n") ?? "";
  if (!imports.includes("./sys/libc.ts")) throw new Error("found no imports in helper.ts");
  const mains = stepModules(imports);
  for (const name of Object.keys(mains) as (keyof typeof mains)[]) {
    await Deno.mkdir(`${tmp}/${name}`, { mode: 0o755 });
    const preload = name === "guard" || name === "netlink";
    await stepTree(`${tmp}/${name}`, modules, mains[name], preload);
  }

  const ns = await NetNs.create("vmbh");
  onCleanup(() => ns[Symbol.asyncDispose]());
  await ns.bridge("br0");
  const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  onCleanup(sb.cleanup);
  const denoPath = (await runBounded(["sh", "-c", "command -v deno"], 5000)).trim();

  const { ladder, others } = variantsIn(tmp);
  const variants = [...ladder, ...others];
  const loadBefore = load();
  console.log(
    `bench:helper in namespace ${ns.name} (${navigator.hardwareConcurrency} CPUs, load ` +
      `${loadBefore}): ${RUNS} rounds of ${variants.length} variants, interleaved, after one ` +
      `warm-up each; deno on PATH: ${denoPath}`,
  );
  const out = await runBounded(
    [
      ...sb.argv,
      Deno.execPath(),
      "run",
      "--allow-all",
      "--no-prompt",
      `${ROOT}/bench/helper.ts`,
      `--runs=${RUNS}`,
      `--inner=${tmp}`,
      ...(baselineDir === undefined ? [] : [`--baseline=${baselineDir}`]),
    ],
    BUDGET_MS,
  );
  const measured = JSON.parse(out.trim().split("\n").pop() ?? "") as [string, number[], number[]][];
  for (const x of variants) {
    const m = measured.find(([label]) => label === x.label);
    if (m === undefined || m[1].length !== RUNS) throw new Error(`no results for ${x.label}`);
    [, x.times, x.cpu] = m;
  }
  const loadAfter = load();
  const taps = await ns.taps();
  if (taps.length > 0) throw new Error(`taps left behind: ${taps.join(", ")}`);

  const w = Math.max(...variants.map((x) => x.label.length));
  const spread = (xs: number[], lo: number, hi: number) => `${f1(pct(xs, lo))}…${f1(pct(xs, hi))}`;
  const diffs = (a: number[], b: number[]) => a.map((x, i) => x - b[i]!);
  const cells = (x: Variant, prev?: Variant) => {
    const d = prev && diffs(x.times, prev.times);
    const dc = prev && diffs(x.cpu, prev.cpu);
    return [
      x.label.padEnd(w),
      f1(median(x.times)).padStart(6),
      spread(x.times, 0.1, 0.9).padStart(13),
      (d ? f1(median(d)) : "").padStart(6),
      (d ? spread(d, 0.25, 0.75) : "").padStart(12),
      f1(median(x.cpu)).padStart(6),
      (dc ? f1(median(dc)) : "").padStart(8),
    ];
  };
  const row = (c: string[]) => `| ${c.join(" | ")} |`;
  const [bareV, ours] = [ladder[0]!, ladder[ladder.length - 1]!];
  const over = diffs(ours.times, bareV.times);
  const overCpu = diffs(ours.cpu, bareV.cpu);
  const verdict = RUNS < 10
    ? `too few rounds (${RUNS}) to judge`
    : median(over) <= TARGET_MS
    ? "met"
    : "MISSED";
  const lines = [
    `\nSpawn → fd received (→ exit for the steps that send none), ms, ${RUNS} rounds, load ` +
    `${loadBefore} before, ${loadAfter} after:\n`,
    row([
      "variant".padEnd(w),
      "median",
      "p10…p90".padStart(13),
      "  step",
      "step p25…p75",
      "   CPU",
      "CPU step",
    ]),
    row(["-".repeat(w), "-----:", "------------:", "-----:", "-----------:", "-----:", "-------:"]),
    ...ladder.map((x, i) => row(cells(x, ladder[i - 1]))),
    ...others.map((x) => row(cells(x))),
    "",
    "step: median over the rounds of (this row − the row above) in the same round, with the",
    "middle half of those differences; CPU: user + system time of the variant's process tree,",
    "which load inflates far less than wall-clock time.",
    "",
    `ours − bare deno: ${f1(median(over))} ms (p25…p75 ${spread(over, 0.25, 0.75)}; CPU ${
      f1(median(overCpu))
    } ms); target ≤ ${TARGET_MS} ms: ${verdict}`,
    `ours / C helper: ${(median(ours.times) / median(others[0]!.times)).toFixed(2)}x; ` +
    `above the spawn alone: ours ${f1(median(ours.times) - median(others[1]!.times))} ms, C ${
      f1(median(others[0]!.times) - median(others[1]!.times))
    } ms, bare deno ${f1(median(bareV.times) - median(others[1]!.times))} ms`,
  ];
  const baseline = others[2];
  if (baseline !== undefined) {
    const d = diffs(ours.times, baseline.times);
    lines.push(
      `ours − baseline (${baselineDir}): ${f1(median(d))} ms (p25…p75 ${
        spread(d, 0.25, 0.75)
      }; CPU ${f1(median(diffs(ours.cpu, baseline.cpu)))} ms)`,
    );
  }
  report = lines.join("\n");
} catch (e) {
  failure = e ?? new Error("unknown failure");
}
await finish("bench:helper", started, report, failure);
