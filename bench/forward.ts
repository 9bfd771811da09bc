// `deno task bench:forward`: TCP throughput (iperf3) from one network namespace to another
// through an L2 forwarder between two taps, for our forwarder (examples/forward.ts) without and
// with offloads, a C forwarder with the same offloads (bench/tap_forward.c), and the kernel's own
// path (the two namespaces joined by a veth: no user space, the limit). All in one run.
//
// Topology (namespaces vmbf-PID-N, deleted at the end, on Ctrl-C, on any error and on overrun):
//
//   A: brA 10.77.0.1 ── fA ⇄ forwarder (in F, where fA and fB were made) ⇄ fB ── brB 10.77.0.2 :B
//   A: kA 10.78.0.1 ══════════════════ veth ══════════════════════════════ kB 10.78.0.2 :B
//
// The forwarder attaches to the persistent taps fA and fB in namespace F, then the taps move to
// A and B and join their bridges (a tap keeps its fd across the move). The forwarder runs on CPU
// 1, both iperf3 ends on CPU 0. Its CPU time per gigabyte is reported next to the rate.
//
// Usage: deno task bench:forward [--seconds=N] [--rounds=N] [--baseline=DIR] [--smoke]
//   --seconds   length of each iperf3 run (default 5)
//   --rounds    rounds of every contender, alternating, best kept (default 2)
//   --baseline  also run DIR/examples/forward.ts (another checkout, e.g. `git worktree add DIR
//               main`), without and with offloads, in the same rounds ("base" rows)
//   --smoke     1-second runs: proves the bench works (tests/privileged/bench_test.ts)

import { NetNs } from "../scripts/_netns.ts";
import { Child, finish, guard, onCleanup, runBounded, sleep } from "./_proc.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
/** TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN: what examples/forward.ts asks. */
const OFFLOAD_BITS = 0x0f;

const args = new Map(Deno.args.map((a) => {
  const [k, v] = a.replace(/^--/, "").split("=");
  return [k!, v ?? "true"];
}));
for (const key of args.keys()) {
  if (key !== "seconds" && key !== "rounds" && key !== "smoke" && key !== "baseline") {
    console.error(
      `bench:forward: unknown option --${key} ` +
        "(known: --seconds=N, --rounds=N, --baseline=DIR, --smoke)",
    );
    Deno.exit(2);
  }
}
const BASELINE = args.get("baseline")?.replace(/\/$/, "");
const SMOKE = args.has("smoke");
const SECONDS = SMOKE ? 1 : Math.min(Math.max(Number(args.get("seconds") ?? 5) || 5, 1), 30);
const ROUNDS = SMOKE ? 1 : Math.min(Math.max(Number(args.get("rounds") ?? 2) || 2, 1), 5);
/** Every run costs its seconds plus about 10 s of set-up; the budget leaves room for more. */
const BUDGET_MS = 60_000 + ROUNDS * (BASELINE === undefined ? 4 : 6) * (SECONDS + 20) * 1000;

type Who = "ours" | "ours+offloads" | "base" | "base+offloads" | "C+offloads" | "kernel veth";

interface Result {
  who: Who;
  gbps: number;
  /** CPU seconds of the forwarder per GB forwarded (none for the kernel path). */
  cpuPerGB?: number;
  retransmits: number;
  /**
   * Frames the two taps dropped toward the forwarder because their queues (txqueuelen) were full:
   * the forwarder did not read in time (the kernel's tx_dropped; none for the kernel path).
   */
  tapDrops?: number;
}

/** A tap's tx_dropped: frames its queue toward the reader had no room for. */
async function tapDrops(ns: NetNs, tap: string): Promise<number> {
  const out = await ns.sh(`cat /sys/class/net/${tap}/statistics/tx_dropped`);
  return Number(out.stdout.trim()) || 0;
}

async function preflight(): Promise<void> {
  const problems: string[] = [];
  if (Deno.uid() !== 0) problems.push("run it as root (it creates network namespaces)");
  for (const [cmd, pkg] of [["iperf3", "iperf3"], ["cc", "gcc"], ["taskset", "util-linux"]]) {
    try {
      await runBounded(["sh", "-c", `command -v ${cmd}`], 5000);
    } catch {
      problems.push(`${cmd} is missing: apt-get install ${pkg}`);
    }
  }
  if (BASELINE !== undefined) {
    try {
      await Deno.stat(`${BASELINE}/examples/forward.ts`);
    } catch {
      problems.push(`--baseline=${BASELINE}: no examples/forward.ts there`);
    }
  }
  if (problems.length > 0) {
    for (const p of problems) console.error(`bench:forward: ${p}`);
    Deno.exit(1);
  }
}

const pin = (cpu: number) =>
  navigator.hardwareConcurrency >= 2 ? ["taskset", "-c", String(cpu)] : [];

/** utime + stime of a process, in seconds. */
async function cpuOf(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, in USER_HZ (100)
}

async function quiet(ns: NetNs): Promise<void> {
  await runBounded(
    ns.exec([
      "sysctl",
      "-qw",
      "net.ipv6.conf.all.disable_ipv6=1",
      "net.ipv6.conf.default.disable_ipv6=1",
    ]),
    5000,
  );
}

/** iperf3 TCP from A to B's `server` address; returns Gbit/s received and retransmits. */
async function iperf(
  a: NetNs,
  b: NetNs,
  server: string,
): Promise<{ gbps: number; retransmits: number; bytes: number }> {
  const srv = new Child(b.exec([...pin(0), "iperf3", "-s", "-1", "-B", server]), ROOT);
  try {
    await sleep(300);
    const out = await runBounded(
      a.exec([...pin(0), "iperf3", "-c", server, "-t", String(SECONDS), "-J", "-O", "1"]),
      (SECONDS + 20) * 1000,
    );
    const j = JSON.parse(out);
    const recv = j.end.sum_received;
    return {
      gbps: recv.bits_per_second / 1e9,
      retransmits: j.end.sum_sent.retransmits ?? 0,
      bytes: recv.bytes,
    };
  } finally {
    srv.kill();
  }
}

async function waitForwarding(ns: NetNs, dev: string): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const l = JSON.parse(await ns.ip("-j", "-d", "link", "show", dev))[0];
    if (l?.linkinfo?.info_slave_data?.state === "forwarding") return;
    await sleep(20);
  }
  throw new Error(`${dev} never reached the forwarding state`);
}

/** One forwarder run: taps made in F, the forwarder attached, the taps moved, iperf3. */
async function throughForwarder(
  f: NetNs,
  a: NetNs,
  b: NetNs,
  who: Who,
  cForwarder: string,
): Promise<Result> {
  const offloads = who.endsWith("+offloads");
  for (const tap of ["fA", "fB"]) {
    await f.ip("tuntap", "add", "dev", tap, "mode", "tap", ...(offloads ? ["vnet_hdr"] : []));
  }
  const program = who === "C+offloads" ? [cForwarder, "fA", "fB", "1", String(OFFLOAD_BITS)] : [
    Deno.execPath(),
    "run",
    "--allow-ffi",
    "--no-prompt",
    "--quiet",
    `${who.startsWith("base") ? BASELINE : ROOT}/examples/forward.ts`,
    "--a=fA",
    "--b=fB",
    ...(offloads ? ["--offloads"] : []),
  ];
  const fwd = new Child(f.exec([...pin(1), ...program]), ROOT);
  try {
    await fwd.line(20_000);
    await f.ip("link", "set", "fA", "netns", a.name);
    await f.ip("link", "set", "fB", "netns", b.name);
    await a.ip("link", "set", "fA", "master", "brA", "up");
    await b.ip("link", "set", "fB", "master", "brB", "up");
    await waitForwarding(a, "fA");
    await waitForwarding(b, "fB");
    const cpu0 = await cpuOf(fwd.pid);
    const r = await iperf(a, b, "10.77.0.2");
    const cpu = (await cpuOf(fwd.pid)) - cpu0;
    return {
      who,
      gbps: r.gbps,
      retransmits: r.retransmits,
      tapDrops: (await tapDrops(a, "fA")) + (await tapDrops(b, "fB")),
      ...(r.bytes > 0 ? { cpuPerGB: cpu / (r.bytes / 1e9) } : {}),
    };
  } finally {
    fwd.kill();
    await sleep(100);
    // The taps are persistent: remove them wherever they are now.
    for (const [ns, tap] of [[a, "fA"], [b, "fB"], [f, "fA"], [f, "fB"]] as const) {
      await ns.ip("link", "del", tap).catch(() => {});
    }
  }
}

await preflight();
guard(BUDGET_MS);
const started = performance.now();
const tmp = await Deno.makeTempDir({ prefix: "vmb-bench-fwd-" });
onCleanup(() => Deno.remove(tmp, { recursive: true }));
let failure: unknown;
let report = "";
try {
  const cForwarder = `${tmp}/tap_forward`;
  await runBounded(["cc", "-O2", "-Wall", "-o", cForwarder, `${ROOT}/bench/tap_forward.c`], 60_000);
  const [f, a, b] = [
    await NetNs.create("vmbf"),
    await NetNs.create("vmbf"),
    await NetNs.create("vmbf"),
  ];
  for (const ns of [f, a, b]) {
    onCleanup(() => ns[Symbol.asyncDispose]());
    await quiet(ns);
  }
  for (const [ns, br, addr] of [[a, "brA", "10.77.0.1/24"], [b, "brB", "10.77.0.2/24"]] as const) {
    await ns.ip("link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0");
    await ns.ip("link", "set", br, "type", "bridge", "mcast_snooping", "0");
    await ns.ip("addr", "add", addr, "dev", br);
    await ns.ip("link", "set", br, "up");
  }
  // The kernel's own path: a veth between A and B.
  await a.ip("link", "add", "kA", "type", "veth", "peer", "name", "kB", "netns", b.name);
  await a.ip("addr", "add", "10.78.0.1/24", "dev", "kA");
  await b.ip("addr", "add", "10.78.0.2/24", "dev", "kB");
  await a.ip("link", "set", "kA", "up");
  await b.ip("link", "set", "kB", "up");
  console.log(
    `bench:forward in namespaces ${f.name}, ${a.name}, ${b.name} ` +
      `(${navigator.hardwareConcurrency} CPUs): iperf3 TCP for ${SECONDS} s per contender`,
  );

  const runs: Result[] = [];
  const whos: Who[] = [
    "ours",
    "ours+offloads",
    ...(BASELINE === undefined ? [] : ["base", "base+offloads"] as const),
    "C+offloads",
    "kernel veth",
  ];
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate the order, so no contender always runs first.
    for (const who of round % 2 ? [...whos].reverse() : whos) {
      let r: Result;
      if (who === "kernel veth") {
        const k = await iperf(a, b, "10.78.0.2");
        r = { who, gbps: k.gbps, retransmits: k.retransmits };
      } else {
        r = await throughForwarder(f, a, b, who, cForwarder);
      }
      runs.push(r);
      console.log(`  round ${round + 1}  ${who.padEnd(14)} ${r.gbps.toFixed(2)} Gbit/s`);
    }
  }
  // The best round of each (the machine may be shared: the others were disturbed more), and
  // the median CPU time per GB (what other load disturbs least).
  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  };
  const results = whos.map((w) => {
    const mine = runs.filter((r) => r.who === w);
    const best = mine.sort((x, y) => y.gbps - x.gbps)[0]!;
    const cpus = mine.flatMap((r) => r.cpuPerGB === undefined ? [] : [r.cpuPerGB]);
    return {
      ...best,
      medianGbps: median(mine.map((r) => r.gbps)),
      ...(cpus.length > 0 ? { cpuPerGB: median(cpus) } : {}),
    };
  });

  const by = (w: Who) => results.find((r) => r.who === w)!;
  const ratio = (x: number, y: number) => `${((x / y) * 100).toFixed(0)}%`;
  const x = (a: number, b: number) => `${(a / b).toFixed(1)}x`;
  const lines = [
    `\nTCP through a forwarder between two taps (iperf3, ${SECONDS} s each, best of ${ROUNDS} ` +
    `round(s); median Gbit/s and median CPU time of the forwarder per GB beside it; TCP ` +
    `retransmits and the taps' drops toward the forwarder, its queues full, in the best round):\n`,
    `${"path".padEnd(16)} ${"Gbit/s".padStart(7)} ${"of C".padStart(6)} ${"of veth".padStart(8)} ` +
    `${"median".padStart(7)} ${"CPU s/GB".padStart(9)} ${"retr".padStart(6)} ` +
    `${"tap drops".padStart(9)}`,
    "-".repeat(76),
    ...results.map((r) =>
      `${r.who.padEnd(16)} ${r.gbps.toFixed(2).padStart(7)} ${
        ratio(r.gbps, by("C+offloads").gbps).padStart(6)
      } ${ratio(r.gbps, by("kernel veth").gbps).padStart(8)} ${
        r.medianGbps.toFixed(2).padStart(7)
      } ${(r.cpuPerGB === undefined ? "-" : r.cpuPerGB.toFixed(3)).padStart(9)} ${
        String(r.retransmits).padStart(6)
      } ${(r.tapDrops === undefined ? "-" : String(r.tapDrops)).padStart(9)}`
    ),
    "",
    `Goals: ours with offloads >= 90% of the C forwarder with the same offloads: ` +
    `${ratio(by("ours+offloads").gbps, by("C+offloads").gbps)}; >= 5x ours without: ` +
    `${x(by("ours+offloads").gbps, by("ours").gbps)} (by CPU per GB: ` +
    `${x(by("ours").cpuPerGB!, by("ours+offloads").cpuPerGB!)}).` +
    (SMOKE ? " (--smoke: too short to mean anything)" : ""),
    ...(BASELINE === undefined ? [] : [
      `Baseline ${BASELINE}: ours/base by rate ${
        x(by("ours+offloads").gbps, by("base+offloads").gbps)
      } with offloads, ${x(by("ours").gbps, by("base").gbps)} without; base's CPU per GB / ` +
      `ours ${x(by("base+offloads").cpuPerGB!, by("ours+offloads").cpuPerGB!)} with offloads, ${
        x(by("base").cpuPerGB!, by("ours").cpuPerGB!)
      } without.`,
    ]),
  ];
  report = lines.join("\n");
} catch (e) {
  failure = e ?? new Error("unknown failure");
}
await finish("bench:forward", started, report, failure);
