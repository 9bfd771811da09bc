// Test support: root-only tests that skip visibly (and fail under CI=true), plus the namespace
// and sandbox tools that the demo and the benchmarks share (scripts/_netns.ts).

export * from "../../scripts/_netns.ts";

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
