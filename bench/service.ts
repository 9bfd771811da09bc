// `deno task bench:service`: the bridge service against the helper, in one run and one
// throwaway network namespace: request-to-fd latency (p50, p99), sustained taps per second
// (taps held, and taps closed at once as VMs that come and go), the helper's spawn-to-fd, and
// the service's resident memory over many requests.
//
// Usage: deno task bench:service [--quick]   (--quick: fewer requests, for CI)

import { runHelper } from "../net/run_helper.ts";
import { HELPER_FROM_SOURCE, NetNs, ROOT, sandbox } from "../scripts/_netns.ts";
import { requestTap, requestTapSync } from "../service/client.ts";
import type { Fd } from "../sys/fd.ts";
import { finish, guard, median, onCleanup, sleep } from "./_proc.ts";

const unknown = Deno.args.filter((a) => a !== "--quick");
if (unknown.length > 0) {
  console.error(`bench:service: unknown argument ${unknown[0]} (known: --quick)`);
  Deno.exit(2);
}
const QUICK = Deno.args.includes("--quick");
const LATENCY_RUNS = QUICK ? 200 : 1000;
const THROUGHPUT_RUNS = QUICK ? 200 : 1000;
const CONCURRENCY = 8;
const HELPER_RUNS = QUICK ? 5 : 20;
const RSS_RUNS = QUICK ? 1000 : 10_000;
const BUDGET_MS = QUICK ? 300_000 : 1_800_000;
const TARGETS = { p50: 2, tapsPerSecond: 300 };

const pct = (xs: readonly number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+) kB$/m);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** Closes a batch of held taps (not timed: the kernel's teardown is the holder's cost). */
function closeAll(fds: Fd[]): void {
  for (const fd of fds.splice(0)) fd.close();
}

async function throughput(socket: string, runs: number, hold: boolean): Promise<number> {
  const held: Fd[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < runs) {
      next++;
      const fd = await requestTap("br0", false, { socket, timeoutMs: 60_000 });
      if (hold) held.push(fd);
      else fd.close();
    }
  }));
  const s = (performance.now() - t0) / 1000;
  closeAll(held);
  return runs / s;
}

guard(BUDGET_MS);
const started = performance.now();
let failure: unknown;
let report = "";
try {
  if (Deno.uid() !== 0) throw new Error("run it as root (it creates a network namespace)");
  const dir = await Deno.makeTempDir({ prefix: "vmb-bench-svc-" });
  onCleanup(() => Deno.remove(dir, { recursive: true }));
  await Deno.chmod(dir, 0o755);
  const socket = `${dir}/socket`;
  const ns = await NetNs.create("vmbs");
  onCleanup(() => ns[Symbol.asyncDispose]());
  await ns.bridge("br0");
  const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  onCleanup(sb.cleanup);

  // The service, as the tests start it: only CAP_NET_ADMIN, its own socket.
  const child = new Deno.Command(sb.argv[0]!, {
    args: [
      ...sb.argv.slice(1),
      "setpriv",
      "--bounding-set=-all,+net_admin",
      "--inh-caps=-all",
      `${ROOT}/bin/vm-bridged`,
      "--listen",
      socket,
      "--max-taps-per-user",
      "100000",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null", // one audit line per request: not what is measured
  }).spawn();
  onCleanup(async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  });
  for (let i = 0;; i++) {
    try {
      requestTapSync("br0", false, { socket, timeoutMs: 30_000 }).close();
      break;
    } catch (e) {
      if (i > 600) throw e;
      await sleep(50);
    }
  }
  console.log(
    `bench:service in namespace ${ns.name} (${navigator.hardwareConcurrency} CPUs), service pid ` +
      `${child.pid}${QUICK ? ", quick mode" : ""}`,
  );
  for (let i = 0; i < 20; i++) requestTapSync("br0", false, { socket }).close();

  // 1. Request → fd, one client, sequential; taps held in batches of 50 and closed untimed.
  const lat: number[] = [];
  const held: Fd[] = [];
  for (let i = 0; i < LATENCY_RUNS; i++) {
    const t0 = performance.now();
    const fd = requestTapSync("br0", false, { socket, timeoutMs: 30_000 });
    lat.push(performance.now() - t0);
    held.push(fd);
    if (held.length === 50) closeAll(held);
  }
  closeAll(held);
  console.log(`  latency: ${LATENCY_RUNS} requests`);

  // 2. Sustained taps per second, 8 concurrent clients: holding every tap, and closing each.
  const heldRate = await throughput(socket, THROUGHPUT_RUNS, true);
  const churnRate = await throughput(socket, THROUGHPUT_RUNS, false);
  console.log(`  throughput: 2 x ${THROUGHPUT_RUNS} requests`);

  // 3. The helper's spawn → fd, same namespace and ACL (root: it holds the capability).
  const helper: number[] = [];
  for (let i = 0; i < HELPER_RUNS + 1; i++) {
    const t0 = performance.now();
    const fd = await runHelper({
      helper: [...sb.argv, HELPER_FROM_SOURCE],
      bridge: "br0",
      vnetHdr: false,
      signal: AbortSignal.timeout(30_000),
    });
    if (i > 0) helper.push(performance.now() - t0); // the first is a warm-up
    fd.close();
  }
  console.log(`  helper: ${HELPER_RUNS} runs`);

  // 4. Resident memory over many requests (4 clients, taps closed at once).
  const rss: number[] = [rssKiB(child.pid)];
  const step = RSS_RUNS / 10;
  for (let i = 0; i < 10; i++) {
    await throughput(socket, step, false);
    rss.push(rssKiB(child.pid));
  }
  console.log(`  memory: ${RSS_RUNS} requests`);
  const taps = await ns.taps();
  if (taps.length > 0) throw new Error(`taps left behind: ${taps.join(", ")}`);

  const p50 = pct(lat, 0.5);
  const p99 = pct(lat, 0.99);
  const h50 = median(helper);
  // The runtime's heap grows in steps while it warms up; a leak keeps growing to the end. So the
  // verdict looks at the second half; the first half's growth is printed too.
  const half = rss[Math.floor(rss.length / 2)]!;
  const growth = rss[rss.length - 1]! - half;
  const f = (x: number) => x.toFixed(2);
  report = [
    "",
    "| path                                  | p50 ms | p99 ms | taps/s |",
    "| ------------------------------------- | -----: | -----: | -----: |",
    `| service, request → fd (1 client)      | ${f(p50).padStart(6)} | ${f(p99).padStart(6)} | ${
      (1000 / median(lat)).toFixed(0).padStart(6)
    } |`,
    `| service, 8 clients, taps held         |        |        | ${
      heldRate.toFixed(0).padStart(6)
    } |`,
    `| service, 8 clients, each tap closed   |        |        | ${
      churnRate.toFixed(0).padStart(6)
    } |`,
    `| helper, spawn → fd (${String(HELPER_RUNS).padStart(2)} runs)          | ${
      f(h50).padStart(6)
    } | ${f(pct(helper, 0.99)).padStart(6)} | ${(1000 / h50).toFixed(0).padStart(6)} |`,
    "",
    `helper / service at p50: ${(h50 / p50).toFixed(0)}x`,
    `p50 target ≤ ${TARGETS.p50} ms: ${p50 <= TARGETS.p50 ? "met" : "MISSED"}; ` +
    `taps/s target ≥ ${TARGETS.tapsPerSecond} (taps held): ${
      heldRate >= TARGETS.tapsPerSecond ? "met" : "MISSED"
    }`,
    `service RSS over ${RSS_RUNS} requests (MiB, start then every 10%): ${
      rss.map((k) => (k / 1024).toFixed(1)).join(" ")
    }`,
    `RSS growth over the first half: ${((half - rss[0]!) / 1024).toFixed(1)} MiB (warm-up), ` +
    `over the second half: ${(growth / 1024).toFixed(1)} MiB (${
      Math.abs(growth) < 4 * 1024 ? "flat" : "GROWING"
    })`,
  ].join("\n");
} catch (e) {
  failure = e ?? new Error("unknown failure");
}
await finish("bench:service", started, report, failure);
