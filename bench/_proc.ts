// Child processes and cleanup for the benchmarks: every child is tracked so Ctrl-C, an error or
// the time budget kills it and removes the namespace; lines are read with a timeout, so no step
// can hang the bench.

const live = new Set<Deno.ChildProcess>();
const cleanups: (() => Promise<void>)[] = [];
let cleaning: Promise<void> | undefined;
let stopping = false;

/** True once a signal or the time budget started the cleanup: later errors are its echoes. */
export function isStopping(): boolean {
  return stopping;
}

/** Registers cleanup work, run once in reverse order by {@linkcode cleanupAll}. */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

/** Kills every tracked child and runs the cleanups; idempotent. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const child of live) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }
    await Promise.allSettled([...live].map((c) => c.status));
    for (const fn of cleanups.reverse()) {
      try {
        await fn();
      } catch (e) {
        console.error(`bench: cleanup failed: ${e instanceof Error ? e.message : e}`);
      }
    }
  })();
  return cleaning;
}

/**
 * Cleans up and exits on SIGINT, SIGTERM or when `budgetMs` has passed, whichever comes first.
 * Returns a function that disarms the budget timer.
 */
export function guard(budgetMs: number): () => void {
  const bail = (why: string, code: number) => {
    // `deno task` forwards the signal the process group already got: act on the first.
    if (stopping) return;
    stopping = true;
    console.error(`\nbench: ${why}: cleaning up`);
    cleanupAll().finally(() => Deno.exit(code));
  };
  Deno.addSignalListener("SIGINT", () => bail("interrupted", 130));
  Deno.addSignalListener("SIGTERM", () => bail("terminated", 143));
  const timer = setTimeout(() => bail(`over the ${budgetMs / 1000} s budget`, 1), budgetMs);
  Deno.unrefTimer(timer);
  return () => clearTimeout(timer);
}

/** A tracked child with line-oriented stdout, piped stdin and collected stderr. */
export class Child {
  readonly argv: readonly string[];
  #proc: Deno.ChildProcess;
  #lines: string[] = [];
  #partial = "";
  #notify: (() => void) | undefined;
  #eof = false;
  #stderr = "";
  #stdin: WritableStreamDefaultWriter<Uint8Array>;

  /** Starts `argv` (no shell). */
  constructor(argv: readonly string[], cwd?: string) {
    this.argv = argv;
    this.#proc = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      ...(cwd ? { cwd } : {}),
    }).spawn();
    live.add(this.#proc);
    this.#proc.status.finally(() => live.delete(this.#proc));
    this.#stdin = this.#proc.stdin.getWriter();
    this.#pump();
    this.#collectStderr();
  }

  async #pump(): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of this.#proc.stdout) {
      const parts = (this.#partial + dec.decode(chunk, { stream: true })).split("\n");
      this.#partial = parts.pop() ?? "";
      this.#lines.push(...parts);
      this.#notify?.();
    }
    this.#eof = true;
    this.#notify?.();
  }

  async #collectStderr(): Promise<void> {
    const dec = new TextDecoder();
    for await (const chunk of this.#proc.stderr) {
      if (this.#stderr.length < 65536) this.#stderr += dec.decode(chunk, { stream: true });
    }
  }

  /** The next stdout line; throws (with the child's stderr) on EOF or after `timeoutMs`. */
  async line(timeoutMs: number): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    while (this.#lines.length === 0) {
      if (this.#eof) throw this.#fail("exited before printing a line");
      const left = deadline - performance.now();
      if (left <= 0) throw this.#fail(`printed nothing for ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#notify = r;
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
      this.#notify = undefined;
    }
    return this.#lines.shift()!;
  }

  /** Writes `text` to the child's stdin. */
  async send(text: string): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  /** Waits for the exit (killing the child after `timeoutMs`); throws on a non-zero exit. */
  async done(timeoutMs: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<"timeout">((
      r,
    ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
    const status = await Promise.race([this.#proc.status, killed]);
    clearTimeout(timer);
    try {
      await this.#stdin.close();
    } catch { /* the child is gone */ }
    if (status === "timeout") {
      this.kill();
      await this.#proc.status;
      throw this.#fail(`did not exit within ${timeoutMs} ms`);
    }
    if (!status.success) throw this.#fail(`exited with ${status.code}`);
  }

  /** The child's pid (an `ip netns exec` or `taskset` prefix execs into the program: its pid). */
  get pid(): number {
    return this.#proc.pid;
  }

  /** SIGKILL, if it still runs. */
  kill(): void {
    try {
      this.#proc.kill("SIGKILL");
    } catch { /* already gone */ }
  }

  #fail(what: string): Error {
    const err = this.#stderr.trim();
    return new Error(`${this.argv.join(" ")} ${what}${err ? `: ${err}` : ""}`);
  }
}

/** Runs a command to completion within `timeoutMs`; throws with stderr on failure. */
export async function runBounded(argv: readonly string[], timeoutMs: number): Promise<string> {
  const proc = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).spawn();
  live.add(proc);
  try {
    const out = await proc.output();
    const dec = new TextDecoder();
    if (!out.success) {
      throw new Error(
        `${argv.join(" ")} failed (${out.signal ?? out.code}): ${dec.decode(out.stderr).trim()}`,
      );
    }
    return dec.decode(out.stdout);
  } finally {
    live.delete(proc);
  }
}

/** Median of a non-empty list. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Ends a benchmark: reports a failure unless it is an echo of Ctrl-C, removes everything it
 * made, prints the report and exits (130 after Ctrl-C).
 */
export async function finish(
  name: string,
  started: number,
  report: string,
  failure: unknown,
): Promise<never> {
  let exitCode = 0;
  if (failure !== undefined) {
    // After Ctrl-C the children die first: their errors are echoes of the signal, not news.
    if (!isStopping()) {
      console.error(
        `${name}: ${failure instanceof Error ? failure.stack ?? failure.message : failure}`,
      );
    }
    exitCode = 1;
  }
  await cleanupAll();
  if (isStopping()) Deno.exit(130);
  if (report) console.log(report);
  console.log(
    `\n${name} ${exitCode === 0 ? "done" : "FAILED"} in ${
      ((performance.now() - started) / 1000).toFixed(0)
    } s; namespace and temporary files removed`,
  );
  Deno.exit(exitCode);
}
