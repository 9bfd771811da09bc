// A residual risk, reproduced and pinned down (SECURITY.md, "Residual risks"): whoever holds a
// tap fd from the helper can make the tap persistent and their own with TUNSETPERSIST and
// TUNSETOWNER, no capability needed, and later re-attach to it through a 0666 /dev/net/tun
// without the helper, whatever the ACL says by then. The test asserts today's behaviour.

import assert from "node:assert/strict";
import { exposeDeno, privilegedDeno, tempDirFor } from "../_support/deno_copy.ts";
import { HELPER_FROM_SOURCE, NetNs, rootTest, run, sandbox } from "../_support/ns.ts";

const NOBODY = { uid: 65534, gid: 65534 };
const module = (rel: string) => JSON.stringify(new URL(`../../${rel}`, import.meta.url).href);

/** As QEMU would: take a tap from the helper, then make it persistent and ours, and exit. */
const KEEP = `
  import { runHelper } from ${module("net/run_helper.ts")};
  import { tapInfo } from ${module("net/tap.ts")};
  import { ioctlValue, readSmallFile } from ${module("sys/libc.ts")};
  import { IOCTL } from ${module("sys/structs.ts")};
  const capEff = readSmallFile("/proc/self/status").match(/^CapEff:\\s*(\\S+)/m)?.[1];
  const fd = await runHelper({
    helper: Deno.args[0], bridge: "br0", vnetHdr: false, signal: AbortSignal.timeout(60_000),
  });
  const { name } = tapInfo(fd.value);
  ioctlValue(fd.value, IOCTL.TUNSETPERSIST, 1, "TUNSETPERSIST");
  ioctlValue(fd.value, IOCTL.TUNSETOWNER, Deno.uid(), "TUNSETOWNER");
  fd.close();
  console.log(JSON.stringify({ name, capEff, uid: Deno.uid() }));
`;

/** Later, without the helper: open /dev/net/tun, TUNSETIFF by name, then clean up as owner. */
const REATTACH = `
  import { attachTap, openTun, tapInfo } from ${module("net/tap.ts")};
  import { ioctlValue, readSmallFile } from ${module("sys/libc.ts")};
  import { IFF, IOCTL } from ${module("sys/structs.ts")};
  const capEff = readSmallFile("/proc/self/status").match(/^CapEff:\\s*(\\S+)/m)?.[1];
  using tun = openTun();
  const got = attachTap(tun, IFF.TAP | IFF.NO_PI, Deno.args[0]);
  const { name } = tapInfo(tun.value);
  const master = Deno.readLinkSync(\`/sys/class/net/\${name}/master\`).split("/").pop();
  // The owner may also end it: not persistent any more, it goes with this fd.
  ioctlValue(tun.value, IOCTL.TUNSETPERSIST, 0, "TUNSETPERSIST");
  console.log(JSON.stringify({ got, name, master, capEff, uid: Deno.uid() }));
`;

rootTest(
  "residual risk: a tap fd holder keeps a persistent port on the bridge and re-attaches without the helper",
  async () => {
    await using copy = await privilegedDeno("filecaps");
    await using home = await tempDirFor(NOBODY.uid, 0o700, "vmb-persist-home-");
    const setup = exposeDeno(copy, { DENO_DIR: `${home.path}/deno`, HOME: home.path });
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const deno = [Deno.execPath(), "eval", "--no-config", "--no-lock"];

    /** Runs `script` as uid 65534 in a sandbox whose bridge.conf is `acl`; returns its JSON. */
    const asNobody = async (acl: string, script: string, arg: string) => {
      const sb = await sandbox(ns, {
        user: NOBODY,
        tun0666: true,
        etcQemu: { "bridge.conf": acl },
        setup,
      });
      try {
        const r = await run([...sb.argv, ...deno, script, arg]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        return JSON.parse(r.stdout) as Record<string, unknown>;
      } finally {
        await sb.cleanup();
      }
    };

    let tap: string | undefined;
    try {
      // 1. Allowed today: the helper hands over a tap, which the caller keeps past its exit.
      const kept = await asNobody("allow br0\n", KEEP, HELPER_FROM_SOURCE);
      assert.deepEqual(
        { capEff: kept.capEff, uid: kept.uid },
        { capEff: "0000000000000000", uid: NOBODY.uid },
        "the fd holder has no capability",
      );
      tap = String(kept.name);
      assert.match(tap, /^tap\d+$/);
      const link = (await ns.links()).find((l) => l.ifname === tap);
      assert.equal(link?.master, "br0", "the tap outlived its fd, still a port of br0");

      // 2. Denied now: no helper and no capability, yet the caller gets the same port back.
      const back = await asNobody("deny all\n", REATTACH, tap);
      assert.deepEqual(back, {
        got: tap,
        name: tap,
        master: "br0",
        capEff: "0000000000000000",
        uid: NOBODY.uid,
      });
      // Its owner cleared TUNSETPERSIST, so it went with the second fd.
      assert.deepEqual(await ns.taps(), []);
    } finally {
      if (tap !== undefined && (await ns.taps()).includes(tap)) {
        await ns.ip("link", "del", tap);
      }
    }
  },
);
