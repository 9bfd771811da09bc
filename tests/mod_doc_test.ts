// What `deno doc mod.ts` shows a first user: only names the package exports, links that
// resolve, examples that import the package (not a file inside it), and the documented
// defaults. Runs `deno doc --json` on mod.ts and checks the JSON.

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

interface DocNode {
  name: string;
  declarations: Record<string, unknown>[];
}

async function docJson(): Promise<{ symbols: DocNode[]; text: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", "mod.ts"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const text = new TextDecoder().decode(out.stdout);
  const json = JSON.parse(text) as { nodes: Record<string, { symbols: DocNode[] }> };
  const mod = Object.entries(json.nodes).find(([k]) => k.endsWith("/mod.ts"))![1];
  return { symbols: mod.symbols, text };
}

/** Every value of `key` anywhere in `v`. */
function collect(v: unknown, key: string, out: unknown[] = []): unknown[] {
  if (Array.isArray(v)) { for (const x of v) collect(x, key, out); }
  else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      if (k === key) out.push(x);
      collect(x, key, out);
    }
  }
  return out;
}

const BUILTINS = new Set([
  "AbortSignal",
  "AsyncDisposable",
  "AsyncGenerator",
  "AsyncIterableIterator",
  "AsyncIterator",
  "Disposable",
  "Error",
  "ErrorOptions",
  "Iterable",
  "IterableIterator",
  "IteratorResult",
  "Promise",
  "RangeError",
  "ReadableStream",
  "SyntaxError",
  "TypeError",
  "Uint8Array",
  "Uint32Array",
  "WritableStream",
]);

Deno.test("deno doc mod.ts names only exported or built-in types", async () => {
  const { symbols } = await docJson();
  const exported = new Set(symbols.map((s) => s.name));
  const unknown = new Set(
    (collect(symbols, "typeName") as string[]).filter((n) =>
      !exported.has(n) && !BUILTINS.has(n) && !n.includes(".")
    ),
  );
  assert.deepEqual([...unknown], [], "types shown by deno doc that mod.ts does not export");
});

Deno.test("deno doc mod.ts: parseNetdev() returns the exported ParsedNetdevOptions", async () => {
  const { symbols } = await docJson();
  const parse = symbols.find((s) => s.name === "parseNetdev")!;
  const ret = collect(parse.declarations, "returnType")[0] as { repr?: string };
  assert.equal(ret.repr, "ParsedNetdevOptions");
  // And the union's members are the exported names, not the file's internal ones.
  const union = symbols.find((s) => s.name === "ParsedNetdevOptions")!;
  const members = (collect(union.declarations, "typeName") as string[]).sort();
  assert.deepEqual(members, [
    "ParsedBridgeOptions",
    "TapFdNetdevOptions",
    "TapHelperNetdevOptions",
    "TapIfnameNetdevOptions",
  ]);
});

Deno.test("deno doc mod.ts: every {@link} names an exported symbol", async () => {
  const { symbols, text } = await docJson();
  const exported = new Set(symbols.map((s) => s.name));
  const links = [...text.matchAll(/\{@link(?:code)? ([A-Za-z_$][\w$]*)/g)].map((m) => m[1]!);
  assert.ok(links.length > 5, "no links found: the check would prove nothing");
  assert.deepEqual([...new Set(links.filter((l) => !exported.has(l)))], []);
});

Deno.test("deno doc mod.ts: examples import the package, never a file inside it", async () => {
  const { text } = await docJson();
  const imports = [...text.matchAll(/from \\"([^"\\]+)\\"/g)].map((m) => m[1]!);
  assert.ok(imports.length > 3, "no example imports found: the check would prove nothing");
  assert.deepEqual(imports.filter((i) => i.startsWith(".")), []);
});

Deno.test("deno doc mod.ts documents the queue and burst defaults and the copy in send()", async () => {
  const { text } = await docJson();
  for (
    const phrase of [
      "Default 1024",
      "Default 512",
      "copies the frame",
      "rx.frames",
      "snapshot",
      "handler throws",
    ]
  ) {
    assert.ok(text.includes(phrase), `deno doc mod.ts does not say ${JSON.stringify(phrase)}`);
  }
});
