// `deno task bench:netdev`: frames/s and Gbit/s through a tap on a bridge, for our Netdev, a
// minimal C loop (bench/tap_loop.c) and a naive Deno loop, all in one run, in a throwaway
// network namespace. trafgen generates the received traffic; kernel counters are the truth.
//
// Topology (namespace vmbb-PID-N, deleted at the end, on Ctrl-C, on any error and on overrun):
//
//   trafgen → vB ══ vA ─┐
//                       br0 ── tapb ⇄ contender (C, ours or naive; each attaches by name)
//
// RX drain: the tap's queue (txqueuelen) holds N frames generated while the contender waits;
//   then it reads them all: its own ceiling, with the generator out of the measurement.
// RX live: trafgen sends N frames as fast as it can while the contender reads; what it could
//   not take in time is the tap's tx_dropped.
// TX: the contender writes N frames; vB's rx counters say what arrived.
// Every contender runs pinned to CPU 1 and trafgen to CPU 0 (a 2-CPU machine is assumed).
// Memory: our Netdev moves 1,000,000 frames each way while VmRSS is sampled.
//
// Frame sizes are the bytes on the tap (Ethernet header included, no FCS); Gbit/s counts those.
//
// Each contender is measured over the same window: from frame 51,200 (after a fresh Deno
// process has compiled its loop) to the last frame, by wall clock (fps, Gbit/s) and by the CPU
// time of its process (µs per frame, which other load on the machine disturbs far less).
//
// Every Netdev path is measured, written as a user writes the loop (bench/_netdev_worker.ts):
// receiving with listen(), for await, frames({ reuse: true }), readable and batches(); sending
// with send(), write(), writable and writeBatch(). One table shows them all next to C and naive.
//
// Usage: deno task bench:netdev [--rounds=N] [--baseline=GIT-REF] [--cases=LIST] [--smoke]
//   --rounds     rounds of C and ours, alternating, best kept (default 2; later rounds are
//                skipped when the time budget runs short)
//   --baseline   also run net/netdev.ts as of GIT-REF (in the tree as of it), or a copy of it in
//                a file ("base"), for before/after in one run
//   --cases      a subset of drain,live,tx,memory (default drain,tx,memory)
//   --smoke      a few seconds per contender, 64-byte frames only, one round, no memory soak:
//                proves the bench runs (tests/privileged/bench_test.ts), measures nothing

import { NetNs } from "../scripts/_netns.ts";
import { PATHS } from "./_netdev_paths.ts";
import type { NetdevPath } from "./_netdev_paths.ts";
import type { WorkerConfig, WorkerResult } from "./_netdev_worker.ts";
import { Child, finish, guard, onCleanup, runBounded, sleep } from "./_proc.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const BUDGET_MS = 420_000;
/** No new round starts after this much of the budget. */
const ROUND_CUTOFF_MS = 190_000;
const TAP = "tapb";
const GUEST_MAC = "52:54:00:12:34:56";
/** The largest tun queue: ptr_ring refuses more than KMALLOC_MAX_SIZE / 8 entries. */
const MAX_TXQUEUELEN = 524_288;
/**
 * A receiver stops when no frame came for this long. Long, because on a loaded 2-CPU machine
 * trafgen itself can stall for a few hundred ms, and a receiver must not quit before it ends.
 */
const IDLE_MS = 1000;
/** The naive loop is 10-30x slower: bound it in time rather than wait for all N frames. */
const NAIVE_TIMEOUT_MS = 2000;
const SOAK_FRAMES = 1_000_000;
/**
 * The measuring window opens after this many frames, for every contender alike: a fresh Deno
 * process runs its first ~10^4 frames in the interpreter and baseline tiers and compiles the
 * loop on a background thread (whose CPU time counts too). The cost of those frames is still
 * reported, as "all frames". A multiple of 64 (the contenders read the clock every 64 frames).
 */
let WARM = 51_200;

type Who = "C" | "base" | "naive" | NetdevPath;
type Mode = "drain" | "live" | "tx";

interface Case {
  label: string;
  mode: Mode;
  size: number;
  frames: number;
  /** Measurement bound for one contender run. */
  timeoutMs: number;
}

interface Run {
  who: Who;
  result: WorkerResult;
  fps: number;
  gbps: number;
  /** Kernel: frames generated on vB (RX) or frames that reached vB (TX). */
  kernelFrames: number;
  /** Kernel: frames the tap dropped because its queue was full (RX). */
  kernelDrops: number;
  /** Kernel: frames the tap delivered to the reader (RX) or took from the writer (TX). */
  tapFrames: number;
  /** trafgen's own rate, for live runs. */
  genFps?: number;
}

const args = new Map(Deno.args.map((a) => {
  const [k, v] = a.replace(/^--/, "").split("=");
  return [k!, v ?? "true"];
}));
for (const key of args.keys()) {
  if (key !== "rounds" && key !== "baseline" && key !== "cases" && key !== "smoke") {
    console.error(
      `bench:netdev: unknown option --${key} (known: --rounds=N, --baseline=REF, --cases=LIST, ` +
        `--smoke)`,
    );
    Deno.exit(2);
  }
}
const SMOKE = args.has("smoke");
const ROUNDS = SMOKE ? 1 : Math.min(Math.max(Number(args.get("rounds") ?? 2) || 2, 1), 5);
const BASELINE = args.get("baseline");

const ALL_CASES: Case[] = [
  { label: "RX drain", mode: "drain", size: 64, frames: 350_000, timeoutMs: 4000 },
  { label: "RX drain", mode: "drain", size: 1500, frames: 150_000, timeoutMs: 4000 },
  { label: "RX live", mode: "live", size: 64, frames: 500_000, timeoutMs: 6000 },
  { label: "RX live", mode: "live", size: 1500, frames: 200_000, timeoutMs: 6000 },
  { label: "TX", mode: "tx", size: 64, frames: 500_000, timeoutMs: 4000 },
  { label: "TX", mode: "tx", size: 1500, frames: 200_000, timeoutMs: 4000 },
];
const SMOKE_CASES: Case[] = [
  { label: "RX drain", mode: "drain", size: 64, frames: 20_000, timeoutMs: 3000 },
  { label: "TX", mode: "tx", size: 64, frames: 20_000, timeoutMs: 3000 },
];
if (SMOKE) WARM = 2048;
const only = args.get("cases")?.split(",") ?? ["drain", "tx", "memory"];
const CASES = SMOKE ? SMOKE_CASES : ALL_CASES.filter((c) => only.includes(c.mode));
const SOAK = !SMOKE && only.includes("memory");

async function preflight(): Promise<void> {
  const problems: string[] = [];
  if (Deno.uid() !== 0) problems.push("run it as root (it creates a network namespace)");
  for (
    const [cmd, pkg] of [["ip", "iproute2"], ["bridge", "iproute2"], ["trafgen", "netsniff-ng"], [
      "cc",
      "gcc",
    ], ["taskset", "util-linux"]]
  ) {
    try {
      await runBounded(["sh", "-c", `command -v ${cmd}`], 5000);
    } catch {
      problems.push(`${cmd} is missing: apt-get install ${pkg}`);
    }
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(`bench:netdev: ${p}`);
    Deno.exit(1);
  }
}

/** The namespace, the bridge, the veth pair and the persistent tap. */
async function topology(ns: NetNs): Promise<{ vbMac: string }> {
  // No IPv6: its router and neighbour solicitations would be stray frames on the tap.
  await runBounded(
    ns.exec([
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.disable_ipv6=1",
      "net.ipv6.conf.default.disable_ipv6=1",
    ]),
    5000,
  );
  await ns.ip("link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0");
  await ns.ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0");
  await ns.ip("link", "add", "vA", "type", "veth", "peer", "name", "vB");
  await ns.ip("link", "set", "vA", "master", "br0");
  await ns.ip("tuntap", "add", "dev", TAP, "mode", "tap");
  await ns.ip("link", "set", TAP, "master", "br0");
  for (const dev of ["br0", "vA", "vB", TAP]) await ns.ip("link", "set", dev, "up");
  const vbMac = JSON.parse(await ns.ip("-j", "link", "show", "vB"))[0].address as string;
  // Static entries, so each frame is forwarded to one port instead of flooded: the guest MAC
  // behind the tap, vB behind vA (the bridge would treat vA's own MAC as its local address).
  await runBounded(
    ns.exec(["bridge", "fdb", "add", GUEST_MAC, "dev", TAP, "master", "static"]),
    5000,
  );
  await runBounded(ns.exec(["bridge", "fdb", "add", vbMac, "dev", "vA", "master", "static"]), 5000);
  return { vbMac };
}

interface Stats {
  rxPackets: number;
  rxDropped: number;
  txPackets: number;
  txDropped: number;
}

async function stats(ns: NetNs, dev: string): Promise<Stats> {
  const s = JSON.parse(await ns.ip("-s", "-j", "link", "show", dev))[0].stats64;
  return {
    rxPackets: s.rx.packets,
    rxDropped: s.rx.dropped,
    txPackets: s.tx.packets,
    txDropped: s.tx.dropped,
  };
}

/** Waits until the bridge forwards to the tap (its carrier came up when the contender attached). */
async function forwarding(ns: NetNs): Promise<void> {
  for (let i = 0; i < 150; i++) {
    const l = JSON.parse(await ns.ip("-j", "-d", "link", "show", TAP))[0];
    if (l?.linkinfo?.info_slave_data?.state === "forwarding") return;
    await sleep(20);
  }
  throw new Error(`${TAP} never reached the forwarding state`);
}

async function trafgen(ns: NetNs, cfg: string, frames: number, cpu: number): Promise<number> {
  const t0 = performance.now();
  await runBounded(
    ns.exec([
      ...pin(cpu),
      "trafgen",
      // Leave the machine's socket memory sysctls and IRQ affinities alone.
      "--no-sock-mem",
      "--notouch-irq",
      "--cpus",
      "1",
      "--no-cpu-stats",
      "--dev",
      "vB",
      "--conf",
      cfg,
      "--num",
      String(frames),
    ]),
    30_000,
  );
  return frames / ((performance.now() - t0) / 1000);
}

/** taskset prefix for `cpu`; nothing on a single-CPU machine. */
function pin(cpu: number): string[] {
  return navigator.hardwareConcurrency >= 2 ? ["taskset", "-c", String(cpu)] : [];
}

interface Paths {
  cLoop: string;
  cfg: (size: number) => string;
  baseModule: string | undefined;
}

async function runOne(
  ns: NetNs,
  c: Case,
  who: Who,
  paths: Paths,
  vbMac: string,
  rssSamples?: number,
): Promise<Run> {
  const timeoutMs = who === "naive" ? Math.min(NAIVE_TIMEOUT_MS, c.timeoutMs) : c.timeoutMs;
  const dir = c.mode === "tx" ? "tx" : "rx";
  let program: string[];
  if (who === "C") {
    const tail = dir === "tx" ? [vbMac, GUEST_MAC] : [String(IDLE_MS)];
    const sizes = [String(c.size), String(c.frames), String(timeoutMs), String(WARM)];
    program = [paths.cLoop, dir, TAP, ...sizes, ...tail];
  } else {
    const cfg: WorkerConfig = {
      role: who === "naive" || who === "base" ? who : "ours",
      ...(who !== "naive" && who !== "base" ? { path: who } : {}),
      dir,
      ifname: TAP,
      size: c.size,
      frames: c.frames,
      timeoutMs,
      warm: WARM,
      idleMs: IDLE_MS,
      dst: vbMac,
      src: GUEST_MAC,
      ...(who === "base" && paths.baseModule ? { netdevModule: paths.baseModule } : {}),
      ...(rssSamples ? { rssSamples } : {}),
    };
    program = [
      Deno.execPath(),
      "run",
      "--allow-all",
      "--no-prompt",
      "--quiet",
      `${ROOT}/bench/_netdev_worker.ts`,
      JSON.stringify(cfg),
    ];
  }
  // Every contender on CPU 1, trafgen on CPU 0: the same placement for all, and the generator
  // never steals the receiver's CPU.
  const child = new Child(ns.exec([...pin(1), ...program]), ROOT);
  try {
    const hello = await child.line(20_000);
    if (hello !== "ready") {
      throw new Error(`${who}: expected "ready", got ${JSON.stringify(hello)}`);
    }
    await forwarding(ns);
    const tap0 = await stats(ns, TAP);
    const vb0 = await stats(ns, "vB");
    let genFps: number | undefined;
    if (c.mode === "drain") {
      await trafgen(ns, paths.cfg(c.size), c.frames, 0);
      // Let the softirq backlog reach the tap's queue before the reader starts.
      await sleep(200);
      await child.send("go\n");
    } else if (c.mode === "live") {
      await child.send("go\n");
      await sleep(100);
      genFps = await trafgen(ns, paths.cfg(c.size), c.frames, 0);
    } else {
      await child.send("go\n");
    }
    const result = JSON.parse(await child.line(timeoutMs + 20_000)) as WorkerResult;
    await child.done(10_000);
    await sleep(50);
    const tap1 = await stats(ns, TAP);
    const vb1 = await stats(ns, "vB");
    const fps = result.seconds > 0 ? result.windowFrames / result.seconds : 0;
    const run: Run = {
      who,
      result,
      fps,
      gbps: result.frames > 0 ? (fps * (result.bytes / result.frames) * 8) / 1e9 : 0,
      kernelFrames: dir === "rx" ? vb1.txPackets - vb0.txPackets : vb1.rxPackets - vb0.rxPackets,
      kernelDrops: dir === "rx" ? tap1.txDropped - tap0.txDropped : 0,
      tapFrames: dir === "rx" ? tap1.txPackets - tap0.txPackets : tap1.rxPackets - tap0.rxPackets,
    };
    if (genFps !== undefined) run.genFps = genFps;
    return run;
  } finally {
    child.kill();
  }
}

// ---------------------------------------------------------------------------------------------
// Output

const k = (fps: number) => `${(fps / 1000).toFixed(1)}k`;
const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(0)}%` : "-");
const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);
const mib = (kb: number) => `${(kb / 1024).toFixed(1)}`;

function best(runs: Run[], who: Who): Run | undefined {
  return runs.filter((r) => r.who === who).sort((a, b) => b.fps - a.fps)[0];
}

/** The table, and how many rows met or missed the target. */
interface Table {
  text: string;
  met: number;
  missed: number;
  /** Every path's ratios, for the summary line. */
  ratios: { c: Case; who: Who; fps: number; cpu: number }[];
}

/** Every path at least 95% of the C loop (issue 9), by wall-clock rate or by CPU time. */
const TARGET = 0.95;

/** CPU time per frame in the measuring window. */
const perFrame = (r: Run | undefined) =>
  r && r.result.windowFrames > 0 ? r.result.cpuSeconds / r.result.windowFrames : NaN;

/** The leanest run of a contender (least CPU per frame). */
function leanest(runs: Run[], who: Who): Run | undefined {
  return runs.filter((r) => r.who === who && r.result.windowFrames > 0)
    .sort((a, b) => perFrame(a) - perFrame(b))[0];
}

/**
 * One table, one row per case and contender: C, every Netdev path, naive (and base). Frames/s
 * is the best of the rounds, CPU time per frame the least; each with its ratio to C's. A path
 * meets the target when either ratio is at least TARGET (the wall clock on a shared machine is
 * noisy; CPU per frame is what other load disturbs least).
 */
function table(results: Map<Case, Run[]>, contenders: (c: Case) => Who[]): Table {
  const cols: [string, number][] = [
    ["fps", 9],
    ["Gbit/s", 7],
    ["fps/C", 6],
    ["CPU µs/fr", 10],
    ["C/CPU", 6],
  ];
  const head = [pad("case", 15), pad("path", 20), ...cols.map(([h, w]) => lpad(h, w)), " verdict"]
    .join(" ");
  const out = [head, "-".repeat(head.length)];
  let met = 0, missed = 0;
  const ratios: Table["ratios"] = [];
  const us = (x: number) => (Number.isFinite(x) ? (x * 1e6).toFixed(2) : "-");
  for (const [c, runs] of results) {
    const cb = best(runs, "C");
    const cCpu = perFrame(leanest(runs, "C"));
    for (const who of contenders(c)) {
      const b = best(runs, who);
      if (!b) continue;
      const fpsRatio = cb ? b.fps / cb.fps : NaN;
      const cpu = perFrame(leanest(runs, who));
      const cpuRatio = cCpu / cpu;
      let verdict = "";
      if (who !== "C" && who !== "naive" && who !== "base") {
        ratios.push({ c, who, fps: fpsRatio, cpu: cpuRatio });
        const ok = fpsRatio >= TARGET || cpuRatio >= TARGET;
        verdict = ok ? "met" : "MISSED";
        if (ok) met++;
        else missed++;
      }
      const name = who === "C" ? "C loop" : who === "naive" ? "naive (await/frame)" : who;
      out.push(
        [
          pad(`${c.label} ${c.size} B`, 15),
          pad(name, 20),
          ...[k(b.fps), b.gbps.toFixed(3), who === "C" ? "" : pct(fpsRatio), us(cpu)]
            .map((x, i) => lpad(x, cols[i]![1])),
          lpad(who === "C" ? "" : pct(cpuRatio), cols[4]![1]),
        ].join(" ") + (verdict ? `  ${verdict}` : ""),
      );
    }
    out.push("");
  }
  return { text: out.join("\n"), met, missed, ratios };
}

function details(results: Map<Case, Run[]>): string {
  const out: string[] = [];
  for (const [c, runs] of results) {
    out.push(`${c.label} ${c.size} B (N = ${c.frames.toLocaleString("en")}):`);
    for (const r of runs) {
      const res = r.result;
      const what = c.mode === "tx"
        ? `wrote ${res.frames}; the tap took ${r.tapFrames}, vB received ${r.kernelFrames}`
        : `read ${res.frames} of ${r.kernelFrames} generated; the tap delivered ${r.tapFrames}, ` +
          `dropped ${r.kernelDrops}`;
      const gen = r.genFps ? `; trafgen ran at ${k(r.genFps)} fps` : "";
      const own = res.retries ? `; own drops/retries ${res.retries}` : "";
      const us = (cpu: number, n: number) => (n > 0 ? ((cpu / n) * 1e6).toFixed(2) : "-");
      const cpu = `${us(res.cpuSeconds, res.windowFrames)} µs CPU/frame (all frames ` +
        `${us(res.allCpuSeconds, res.frames)})`;
      out.push(`  ${pad(r.who, 16)} ${lpad(k(r.fps), 8)} fps, ${cpu}: ${what}${gen}${own}`);
    }
  }
  return out.join("\n");
}

function memory(label: string, run: Run): string {
  const samples = run.result.rssKb ?? [];
  if (samples.length === 0) return `  ${label}: no samples`;
  const first = samples[0]!.kb, last = samples[samples.length - 1]!.kb;
  const warm = samples[1]?.kb ?? first;
  const series = samples.map((s) => `${mib(s.kb)}@${(s.frames / 1000).toFixed(0)}k`).join(" ");
  return `  ${pad(label, 8)} ${run.result.frames.toLocaleString("en")} frames at ${
    k(run.fps)
  } fps, ` +
    `VmRSS MiB@frames: ${series}\n` +
    `           start→end ${(last - first) / 1024 >= 0 ? "+" : ""}${mib(last - first)} MiB; ` +
    `after the first quarter ${(last - warm) / 1024 >= 0 ? "+" : ""}${mib(last - warm)} MiB`;
}

// ---------------------------------------------------------------------------------------------

await preflight();
guard(BUDGET_MS);
const started = performance.now();
const tmp = await Deno.makeTempDir({ prefix: "vmb-bench-" });
onCleanup(() => Deno.remove(tmp, { recursive: true }));
let failure: unknown;
let report = "";
try {
  const cLoop = `${tmp}/tap_loop`;
  await runBounded(["cc", "-O2", "-Wall", "-o", cLoop, `${ROOT}/bench/tap_loop.c`], 60_000);
  const cfg = (size: number) => `${tmp}/frame${size}.cfg`;
  for (const size of new Set([64, ...CASES.map((c) => c.size)])) {
    // dst = the guest MAC behind the tap, src = a locally administered MAC, type 0x88b5.
    const mac = GUEST_MAC.split(":").map((h) => `0x${h}`).join(", ");
    await Deno.writeTextFile(
      cfg(size),
      `{ ${mac}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, c16(0x88b5), fill(0x00, ${size - 14}) }\n`,
    );
  }
  let baseModule: string | undefined;
  if (BASELINE) {
    const file = await Deno.stat(BASELINE).then((s) => s.isFile, () => false);
    if (file) {
      // A copy of net/netdev.ts in a file: its relative imports pointed back into this tree.
      baseModule = `${tmp}/base_netdev.ts`;
      const text = await Deno.readTextFile(BASELINE);
      await Deno.writeTextFile(
        baseModule,
        text.replaceAll(`from "../`, `from "${ROOT}/`).replaceAll(`from "./`, `from "${ROOT}/net/`),
      );
    } else {
      // The whole tree as of the ref, so net/netdev.ts runs with the sys/ it was written for.
      const dir = `${tmp}/base`;
      await Deno.mkdir(dir);
      await runBounded(
        ["sh", "-c", 'git -C "$1" archive "$2" | tar -x -C "$3"', "sh", ROOT, BASELINE, dir],
        30_000,
      );
      baseModule = `${dir}/net/netdev.ts`;
      await Deno.stat(baseModule);
    }
  }
  const paths: Paths = { cLoop, cfg, baseModule };

  const ns = await NetNs.create("vmbb");
  onCleanup(() => ns[Symbol.asyncDispose]());
  const { vbMac } = await topology(ns);
  console.log(
    `bench:netdev in namespace ${ns.name} (${navigator.hardwareConcurrency} CPUs): up to ${ROUNDS} ` +
      `round(s) of C and ours${baseModule ? ` and base (${BASELINE})` : ""}, alternating, best ` +
      `kept; naive once, bounded to ${NAIVE_TIMEOUT_MS / 1000} s`,
  );

  const results = new Map<Case, Run[]>(CASES.map((c) => [c, []]));
  const contenders = (c: Case): Who[] => [
    "C",
    ...PATHS[c.mode === "tx" ? "tx" : "rx"],
    ...(baseModule ? ["base" as const] : []),
    "naive",
  ];
  let rounds = 0;
  for (let r = 0; r < ROUNDS; r++) {
    if (r > 0 && performance.now() - started > ROUND_CUTOFF_MS) {
      console.log(`  (round ${r + 1} skipped: the time budget is running short)`);
      break;
    }
    rounds++;
    for (const c of CASES) {
      await ns.ip(
        "link",
        "set",
        TAP,
        "txqueuelen",
        String(c.mode === "drain" ? Math.min(c.frames, MAX_TXQUEUELEN) : 1000),
      );
      // Alternate the order, so no contender always runs first after the tap was reset; the
      // naive loop (10-30x slower, bounded in time) runs in the first round only.
      const all: Who[] = contenders(c).filter((w) => w !== "naive");
      const order = r % 2 ? all.reverse() : all;
      if (r === 0) order.push("naive");
      for (const who of order) {
        const run = await runOne(ns, c, who, paths, vbMac);
        results.get(c)!.push(run);
        console.log(
          `  round ${r + 1}  ${pad(`${c.label} ${c.size} B`, 16)} ${pad(who, 16)} ${
            lpad(k(run.fps), 8)
          } fps`,
        );
      }
    }
  }

  // Memory: 1,000,000 frames each way through our Netdev, VmRSS sampled along the way.
  await ns.ip("link", "set", TAP, "txqueuelen", "1000");
  const soakTx = SOAK && await runOne(
    ns,
    { label: "TX", mode: "tx", size: 64, frames: SOAK_FRAMES, timeoutMs: 12_000 },
    "send()",
    paths,
    vbMac,
    4,
  );
  const soakRx = SOAK && await runOne(
    ns,
    { label: "RX", mode: "live", size: 64, frames: SOAK_FRAMES, timeoutMs: 15_000 },
    "listen()",
    paths,
    vbMac,
    4,
  );

  const t = table(results, contenders);
  const worst = (key: "fps" | "cpu") =>
    t.ratios.reduce((m, x) => Number.isFinite(x[key]) ? Math.min(m, x[key]) : m, Infinity);
  report = [
    `\nEvery path against the C loop, best of ${rounds} round(s) (fps: wall clock, frame bytes ` +
    `on the tap; CPU: user + system of the contender's process, every thread, per frame, least ` +
    `of the rounds; C/CPU = C's CPU per frame over the path's):\n`,
    t.text,
    `Target (every path >= ${pct(TARGET)} of C by fps or by CPU per frame): met in ${t.met} of ` +
    `${t.met + t.missed} rows; the lowest ratios were ${pct(worst("fps"))} (fps) and ` +
    `${pct(worst("cpu"))} (CPU).${SMOKE ? " (--smoke: too short to mean anything)" : ""}`,
    "\nEvery run, with the kernel's counters (RX: generated on vB, delivered and dropped by the " +
    "tap; TX: taken by the tap, received by vB):",
    details(results),
    ...(soakTx && soakRx
      ? [
        "\nResident memory of our process over a million frames (64 B):",
        memory("TX send", soakTx),
        memory("RX listen", soakRx),
      ]
      : []),
  ].join("\n");
} catch (e) {
  failure = e ?? new Error("unknown failure");
}
await finish("bench:netdev", started, report, failure);
