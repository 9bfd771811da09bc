// Test support: root-only tests that skip visibly (and fail under CI=true), plus the namespace
// and sandbox tools that the demo and the benchmarks share (scripts/_netns.ts).

export * from "../../scripts/_netns.ts";
import { ROOT, run } from "../../scripts/_netns.ts";

/** True when the tests run as root (namespaces, bridges and taps need it). */
export const IS_ROOT: boolean = Deno.uid() === 0;

/** True under CI, where a test that would skip must fail instead. */
export const IN_CI: boolean = Deno.env.get("CI") === "true";

/**
 * Deno.test for tests that need root: skipped with a visible reason when not root, and failing
 * under CI=true, where a skip would hide that nothing was tested.
 */
export function rootTest(name: string, fn: (t: Deno.TestContext) => Promise<void> | void): void {
  if (IS_ROOT) {
    Deno.test({ name, fn, sanitizeResources: false, sanitizeOps: false });
  } else if (IN_CI) {
    Deno.test(name, () => {
      throw new Error("needs root, and CI=true turns this skip into a failure");
    });
  } else {
    Deno.test({ name: `${name} (skipped: needs root)`, ignore: true, fn });
  }
}

/** The network namespaces that exist now. */
export async function namespaces(): Promise<string[]> {
  const out = await run(["ip", "-j", "netns", "list"]);
  if (out.code !== 0 || out.stdout.trim() === "") return [];
  return (JSON.parse(out.stdout) as { name: string }[]).map((n) => n.name);
}

/** What `deno task ...` printed, and both streams as context for an assertion message. */
export interface TaskOutput {
  /** Exit code (killed: non-zero). */
  code: number;
  /** stdout as text. */
  stdout: string;
  /** stdout and stderr, labelled, for assertion messages. */
  context: string;
}

/** Runs `deno task ARGS` from the checkout as a user would (no colour), killed after `ms`. */
export async function runTask(args: readonly string[], ms: number): Promise<TaskOutput> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["task", ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const killer = setTimeout(() => child.kill("SIGKILL"), ms);
  const out = await child.output();
  clearTimeout(killer);
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  return {
    code: out.code,
    stdout,
    context: `\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`,
  };
}
