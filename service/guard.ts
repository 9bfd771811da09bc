// Preloaded before service/main.ts (deno compile --preload): refuses to run any other main
// module and makes the process non-dumpable before a line of the service runs. The same hazard
// as guard.ts for the helper: a compiled Deno binary can be told by its environment to run
// another entry point, which would hand CAP_NET_ADMIN to the caller's code.

import { forbidExecutableMemory, PR, prctl } from "../sys/libc.ts";

const expected = new URL("./main.ts", import.meta.url).href;
if (Deno.mainModule !== expected) {
  const msg = `vm-bridged: refusing to run ${Deno.mainModule}: only service/main.ts may run\n`;
  Deno.stderr.writeSync(new TextEncoder().encode(msg));
  Deno.exit(70);
}
prctl(PR.SET_DUMPABLE, 0, "PR_SET_DUMPABLE");

// No memory of this process can become executable from here on (Linux 6.3 and later; an older
// kernel lacks the option): the service runs --jitless and calls libc through addresses, so it
// never makes machine code. The unit's MemoryDenyWriteExecute=yes asks systemd for the same.
forbidExecutableMemory();
