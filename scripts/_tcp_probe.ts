// Moves bytes over TCP between two namespaces and proves they arrived intact; run inside a
// namespace (`ip netns exec NS deno run --allow-net scripts/_tcp_probe.ts ...`) by
// scripts/_hosts.ts.
//
//   server PORT              accept one connection, read to EOF, print {"bytes":N,"sha256":H}
//   client HOST PORT BYTES   send BYTES deterministic bytes, print {"bytes":N,"sha256":H,"ms":T}

async function sha256(chunks: Uint8Array[]): Promise<string> {
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return [...h].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic, incompressible-looking bytes (xorshift32), so corruption cannot hide. */
function payload(n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = 0x9e3779b9;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const [mode, ...rest] = Deno.args;
if (mode === "server") {
  const listener = Deno.listen({ hostname: "0.0.0.0", port: Number(rest[0]) });
  console.log("listening");
  const conn = await listener.accept();
  const chunks: Uint8Array[] = [];
  for await (const c of conn.readable) chunks.push(c);
  listener.close();
  console.log(JSON.stringify({
    bytes: chunks.reduce((n, c) => n + c.length, 0),
    sha256: await sha256(chunks),
  }));
} else if (mode === "client") {
  const [host, port, bytes] = rest as [string, string, string];
  const data = payload(Number(bytes));
  const t0 = performance.now();
  const conn = await Deno.connect({ hostname: host, port: Number(port) });
  const w = conn.writable.getWriter();
  await w.write(data);
  await w.close();
  console.log(JSON.stringify({
    bytes: data.length,
    sha256: await sha256([data]),
    ms: Math.round(performance.now() - t0),
  }));
} else {
  console.error("usage: _tcp_probe.ts server PORT | client HOST PORT BYTES");
  Deno.exit(2);
}
