// Preloaded before helper.ts (deno compile --preload): refuses to run any other main module and
// makes the process non-dumpable before a line of the helper runs.
//
// A compiled Deno binary can be told by its environment to run a different module as the entry
// point (DENO_INTERNAL_CHILD_ENTRYPOINT with NODE_CHANNEL_FD); with CAP_NET_ADMIN embedded that
// would hand the capability to the caller's code. Preload modules run before the main module, so
// this check stops it.

import { forbidExecutableMemory, PR, prctl } from "./sys/libc.ts";

const expected = new URL("./helper.ts", import.meta.url).href;
if (Deno.mainModule !== expected) {
  const msg = `qemu-bridge-helper: refusing to run ${Deno.mainModule}: only helper.ts may run\n`;
  Deno.stderr.writeSync(new TextEncoder().encode(msg));
  Deno.exit(70);
}
prctl(PR.SET_DUMPABLE, 0, "PR_SET_DUMPABLE");

// From here on no memory of this process can become executable (Linux 6.3 and later): the helper
// runs --jitless and calls libc through addresses, so it never makes machine code, and code that
// an attacker writes into its memory cannot be made to run either. An older kernel lacks the
// option, and the helper runs without it; any other failure ends the run.
forbidExecutableMemory();
