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
// Usage: deno task bench:netdev [--rounds=N] [--baseline=GIT-REF] [--cases=LIST]
//   --rounds     rounds of C and ours, alternating, best kept (default 2; later rounds are
//                skipped when the time budget runs short)
//   --baseline   also run net/netdev.ts as of GIT-REF, or a copy of it in a file ("base"), for
//                before/after in one run
//   --cases      a subset of drain,live,tx,memory

import { NetNs } from "../scripts/_netns.ts";
import type { WorkerConfig, WorkerResult } from "./_netdev_worker.ts";
import { Child, finish, guard, onCleanup, runBounded, sleep } from "./_proc.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const BUDGET_MS = 175_000;
/** No new round starts after this much of the budget. */
const ROUND_CUTOFF_MS = 95_000;
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
const WARM = 51_200;

type Who = "C" | "ours" | "base" | "naive";
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
  if (key !== "rounds" && key !== "baseline" && key !== "cases") {
    console.error(
      `bench:netdev: unknown option --${key} (known: --rounds=N, --baseline=REF, --cases=LIST)`,
    );
    Deno.exit(2);
  }
}
const ROUNDS = Math.min(Math.max(Number(args.get("rounds") ?? 2) || 2, 1), 5);
const BASELINE = args.get("baseline");

const ALL_CASES: Case[] = [
  { label: "RX drain", mode: "drain", size: 64, frames: 350_000, timeoutMs: 4000 },
  { label: "RX drain", mode: "drain", size: 1500, frames: 150_000, timeoutMs: 4000 },
  { label: "RX live", mode: "live", size: 64, frames: 500_000, timeoutMs: 6000 },
  { label: "RX live", mode: "live", size: 1500, frames: 200_000, timeoutMs: 6000 },
  { label: "TX", mode: "tx", size: 64, frames: 500_000, timeoutMs: 4000 },
  { label: "TX", mode: "tx", size: 1500, frames: 200_000, timeoutMs: 4000 },
];
const only = args.get("cases")?.split(",");
const CASES = only ? ALL_CASES.filter((c) => only.includes(c.mode)) : ALL_CASES;
const SOAK = !only || only.includes("memory");

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
  const timeoutMs = who === "naive" ? NAIVE_TIMEOUT_MS : c.timeoutMs;
  const dir = c.mode === "tx" ? "tx" : "rx";
  let program: string[];
  if (who === "C") {
    const tail = dir === "tx" ? [vbMac, GUEST_MAC] : [String(IDLE_MS)];
    const sizes = [String(c.size), String(c.frames), String(timeoutMs), String(WARM)];
    program = [paths.cLoop, dir, TAP, ...sizes, ...tail];
  } else {
    const cfg: WorkerConfig = {
      role: who,
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

/** A table, and how many rows met or missed the target. */
interface Table {
  text: string;
  met: number;
  missed: number;
}

/** The target for a frame size: >= 80% of C at 64 bytes, >= 90% at 1500. */
const targetFor = (size: number) => (size <= 64 ? 0.8 : 0.9);

/**
 * Renders one row per case: the case, its cells, the target and the verdict of `ratio` (ours
 * relative to C) against it; counts the rows that met or missed it.
 */
function renderTable(
  results: Map<Case, Run[]>,
  cols: [string, number][],
  row: (c: Case, runs: Run[]) => { cells: string[]; ratio: number },
): Table {
  const all: [string, number][] = [...cols, ["target", 7]];
  const head = [pad("case", 9), lpad("size", 6), ...all.map(([h, w]) => lpad(h, w)), " verdict"]
    .join(" ");
  const out = [head, "-".repeat(head.length)];
  let met = 0, missed = 0;
  for (const [c, runs] of results) {
    const { cells, ratio } = row(c, runs);
    const target = targetFor(c.size);
    const verdict = Number.isNaN(ratio) ? "-" : ratio >= target ? "met" : "MISSED";
    if (verdict === "met") met++;
    if (verdict === "MISSED") missed++;
    out.push(
      [
        pad(c.label, 9),
        lpad(`${c.size} B`, 6),
        ...[...cells, `>=${pct(target)}`].map((x, i) => lpad(x, all[i]![1])),
      ].join(" ") + `  ${verdict}`,
    );
  }
  return { text: out.join("\n"), met, missed };
}

function table(results: Map<Case, Run[]>, withBase: boolean): Table {
  const cols: [string, number][] = [
    ["C fps", 9],
    ["Gbit/s", 7],
    ["ours fps", 9],
    ["Gbit/s", 7],
    ["naive fps", 10],
    ["Gbit/s", 7],
    ["ours/C", 7],
    ["naive/C", 8],
    ...(withBase ? [["base fps", 9], ["base/C", 7]] as [string, number][] : []),
  ];
  return renderTable(results, cols, (_c, runs) => {
    const cb = best(runs, "C"), ob = best(runs, "ours"), nb = best(runs, "naive");
    const bb = best(runs, "base");
    const ratio = cb && ob ? ob.fps / cb.fps : NaN;
    const cells = [
      cb ? k(cb.fps) : "-",
      cb ? cb.gbps.toFixed(3) : "-",
      ob ? k(ob.fps) : "-",
      ob ? ob.gbps.toFixed(3) : "-",
      nb ? k(nb.fps) : "-",
      nb ? nb.gbps.toFixed(3) : "-",
      pct(ratio),
      cb && nb ? pct(nb.fps / cb.fps) : "-",
      ...(withBase ? [bb ? k(bb.fps) : "-", cb && bb ? pct(bb.fps / cb.fps) : "-"] : []),
    ];
    return { cells, ratio };
  });
}

/** CPU time per frame, the measure that other load on the machine disturbs least. */
function cpuTable(results: Map<Case, Run[]>, withBase: boolean): Table {
  const per = (
    r: Run | undefined,
  ) => (r && r.result.windowFrames > 0 ? r.result.cpuSeconds / r.result.windowFrames : NaN);
  const leanest = (runs: Run[], who: Who) =>
    runs.filter((r) => r.who === who && r.result.windowFrames > 0).sort((a, b) =>
      per(a) - per(b)
    )[0];
  const us = (x: number) => (Number.isFinite(x) ? (x * 1e6).toFixed(2) : "-");
  const cols: [string, number][] = [
    ["C µs", 7],
    ["ours µs", 8],
    ["naive µs", 9],
    ["ours/C", 7],
    ["naive/C", 8],
    ...(withBase ? [["base µs", 8], ["base/C", 7]] as [string, number][] : []),
  ];
  return renderTable(results, cols, (_c, runs) => {
    const cpu = per(leanest(runs, "C")), ours = per(leanest(runs, "ours"));
    const naive = per(leanest(runs, "naive")), base = per(leanest(runs, "base"));
    // Frames per CPU-second relative to C: C's cost per frame over ours.
    const ratio = cpu / ours;
    const cells = [
      us(cpu),
      us(ours),
      us(naive),
      pct(ratio),
      pct(cpu / naive),
      ...(withBase ? [us(base), pct(cpu / base)] : []),
    ];
    return { cells, ratio };
  });
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
      out.push(`  ${pad(r.who, 5)} ${lpad(k(r.fps), 8)} fps, ${cpu}: ${what}${gen}${own}`);
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
    // net/netdev.ts as of the ref (or a copy of it in a file), its relative imports pointed
    // back into this tree.
    const file = await Deno.stat(BASELINE).then((s) => s.isFile, () => false);
    const text = file
      ? await Deno.readTextFile(BASELINE)
      : await runBounded(["git", "-C", ROOT, "show", `${BASELINE}:net/netdev.ts`], 10_000);
    baseModule = `${tmp}/base_netdev.ts`;
    await Deno.writeTextFile(
      baseModule,
      text.replaceAll(`from "../`, `from "${ROOT}/`).replaceAll(`from "./`, `from "${ROOT}/net/`),
    );
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
  const contenders: Who[] = baseModule ? ["C", "ours", "base"] : ["C", "ours"];
  let rounds = 0;
  for (let r = 0; r < ROUNDS; r++) {
    if (r > 0 && performance.now() - started > ROUND_CUTOFF_MS) {
      console.log(`  (round ${r + 1} skipped: the time budget is running short)`);
      break;
    }
    rounds++;
    // Alternate the order, so neither side always runs first after the tap was reset.
    const order = r % 2 ? [...contenders].reverse() : [...contenders];
    if (r === 0) order.splice(1, 0, "naive");
    for (const c of CASES) {
      await ns.ip(
        "link",
        "set",
        TAP,
        "txqueuelen",
        String(c.mode === "drain" ? Math.min(c.frames, MAX_TXQUEUELEN) : 1000),
      );
      for (const who of order) {
        const run = await runOne(ns, c, who, paths, vbMac);
        results.get(c)!.push(run);
        console.log(
          `  round ${r + 1}  ${pad(`${c.label} ${c.size} B`, 16)} ${pad(who, 5)} ${
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
    "ours",
    paths,
    vbMac,
    4,
  );
  const soakRx = SOAK && await runOne(
    ns,
    { label: "RX", mode: "live", size: 64, frames: SOAK_FRAMES, timeoutMs: 15_000 },
    "ours",
    paths,
    vbMac,
    4,
  );

  const wall = table(results, baseModule !== undefined);
  const cpu = cpuTable(results, baseModule !== undefined);
  report = [
    `\nFrames/s and Gbit/s (frame bytes on the tap, no FCS), best of ${rounds} round(s) for C and ` +
    `ours; ratios from this run:\n`,
    wall.text,
    "\nCPU time per frame (user + system of the contender's process, every thread, from go to " +
    "end; least of the rounds).\nThe ratio is frames per CPU-second relative to C; other load " +
    "on the machine disturbs it far less than wall-clock rates:\n",
    cpu.text,
    `\nTargets (ours >= 80% of C at 64 B, >= 90% at 1500 B): by wall-clock fps met in ${wall.met} ` +
    `of ${wall.met + wall.missed} cases, by CPU time per frame met in ${cpu.met} of ` +
    `${cpu.met + cpu.missed}.`,
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
