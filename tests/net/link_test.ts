// net/link.ts's Links: a question to the kernel leaves no garbage read buffer behind.

import assert from "node:assert/strict";
import { Links } from "../../net/link.ts";

Deno.test("Links.get() leaves no 64 KiB garbage buffer per question", () => {
  // Each question used to read into a fresh 64 KiB buffer: garbage V8 collects late, so the
  // bridge service, which asks several per request, held about 200 MiB of such buffers after a
  // few hundred requests. 400 questions would add 25 MiB of external memory that way.
  using links = new Links();
  const before = Deno.memoryUsage().external;
  for (let i = 0; i < 400; i++) assert.equal(links.get({ name: "lo" })?.name, "lo");
  const grown = Deno.memoryUsage().external - before;
  assert.ok(grown < 2 * 1024 * 1024, `external memory grew by ${(grown / 1048576).toFixed(1)} MiB`);
});
