// End-to-end tests of our helper (bin/qemu-bridge-helper, helper.ts from source) run the way
// QEMU runs it: a socketpair end as fd 3, `[--use-vnet] --fd=3 --br=BR`, the tap fd sent back.
// Every test has its own network namespace and a private /etc/qemu (sandbox()); needs root.

import assert from "node:assert/strict";
import { USAGE } from "../../cli/args.ts";
import { BridgeHelperError, runHelper } from "../../net/run_helper.ts";
import { tapInfo, vnetHdrSize } from "../../net/tap.ts";
import type { Fd } from "../../sys/fd.ts";
import { F, fcntl, O } from "../../sys/libc.ts";
import {
  HELPER_FROM_SOURCE,
  type Link,
  NetNs,
  rootTest,
  sandbox,
  type SandboxOptions,
} from "../_support/ns.ts";
import { closeAll, describeStatus, runRaw } from "./_spawn.ts";

const TIMEOUT_MS = 60_000;

/** sandbox() as an AsyncDisposable, so the staging directory goes with `await using`. */
async function box(ns: NetNs, opts: SandboxOptions): Promise<{ argv: string[] } & AsyncDisposable> {
  const sb = await sandbox(ns, opts);
  return { argv: sb.argv, [Symbol.asyncDispose]: sb.cleanup };
}

/** Runs our helper in `argv` (a sandbox prefix) exactly as QEMU does. */
function helper(prefix: readonly string[], bridge: string, vnetHdr = false): Promise<Fd> {
  return runHelper({
    helper: [...prefix, HELPER_FROM_SOURCE],
    bridge,
    vnetHdr,
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
}

async function link(ns: NetNs, name: string): Promise<Link> {
  const found = (await ns.links()).find((l) => l.ifname === name);
  assert.ok(found, `no interface ${name} in ${ns.name}`);
  return found;
}

/**
 * Waits until the namespace holds no tap. A tap that is leaked stays forever, so polling for a
 * short while only absorbs the kernel's asynchronous teardown, never hides a leak.
 */
async function assertNoTaps(ns: NetNs, why: string): Promise<void> {
  const deadline = Date.now() + 3000;
  let taps = await ns.taps();
  while (taps.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    taps = await ns.taps();
  }
  assert.deepEqual(taps, [], `taps left behind ${why}`);
}

/** Expects runHelper() to fail with exit status 1 and this first stderr line. */
async function assertHelperFails(
  run: Promise<Fd>,
  firstLine: string | RegExp,
): Promise<BridgeHelperError> {
  let caught: unknown;
  try {
    (await run).close();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BridgeHelperError, `expected a BridgeHelperError, got ${caught}`);
  assert.deepEqual(caught.status, { exited: true, code: 1 }, caught.message);
  const first = caught.stderr.split("\n")[0] ?? "";
  if (typeof firstLine === "string") assert.equal(first, firstLine);
  else assert.match(first, firstLine);
  return caught;
}

for (const vnetHdr of [false, true]) {
  for (const mtu of [1400, 9000]) {
    const flags = vnetHdr ? 0x5002 : 0x1002;
    rootTest(
      `helper${vnetHdr ? " --use-vnet" : ""} sends a tap with flags 0x${
        flags.toString(16)
      } on br0, MTU ${mtu} copied, fe: MAC, UP; it vanishes when the fd closes`,
      async () => {
        await using ns = await NetNs.create();
        await ns.bridge("br0", { mtu });
        await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
        const fd = await helper(sb.argv, "br0", vnetHdr);
        try {
          const info = tapInfo(fd.value);
          assert.deepEqual(info, { name: "tap0", flags, tap: true, vnetHdr });
          if (vnetHdr) assert.equal(vnetHdrSize(fd.value), 10);
          // QEMU sets O_NONBLOCK itself: the fd arrives blocking and read-write, as from C.
          const fl = fcntl(fd.value, F.GETFL);
          assert.equal(fl & 3, O.RDWR);
          assert.equal(fl & O.NONBLOCK, 0);
          const tap = await link(ns, "tap0");
          assert.equal(tap.kind, "tun");
          assert.equal(tap.mtu, mtu);
          assert.match(tap.address, /^fe(:[0-9a-f]{2}){5}$/);
          assert.equal(tap.master, "br0");
          assert.ok(tap.flags.includes("UP"), `tap0 flags: ${tap.flags}`);
          assert.deepEqual(await ns.taps(), ["tap0"]);
        } finally {
          fd.close();
        }
        await assertNoTaps(ns, "after the fd was closed");
      },
    );
  }
}

rootTest("helper leaves a DOWN bridge DOWN and its MTU unchanged", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0", { mtu: 1400, up: false });
  const before = await link(ns, "br0");
  assert.ok(!before.flags.includes("UP"));
  await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  const fd = await helper(sb.argv, "br0", true);
  try {
    const after = await link(ns, "br0");
    assert.deepEqual(after.flags, before.flags);
    assert.equal(after.mtu, 1400);
    const tap = await link(ns, "tap0");
    assert.equal(tap.master, "br0");
    assert.ok(tap.flags.includes("UP"));
  } finally {
    fd.close();
  }
  await assertNoTaps(ns, "after the fd was closed");
  assert.deepEqual((await link(ns, "br0")).flags, before.flags);
});

rootTest("helper picks the next free tapN when tap0 exists", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  await ns.ip("tuntap", "add", "dev", "tap0", "mode", "tap");
  await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
  const fd = await helper(sb.argv, "br0");
  try {
    assert.equal(tapInfo(fd.value).name, "tap1");
    assert.equal((await link(ns, "tap1")).master, "br0");
    assert.equal((await link(ns, "tap0")).master, undefined);
  } finally {
    fd.close();
  }
  await ns.ip("tuntap", "del", "dev", "tap0", "mode", "tap");
  await assertNoTaps(ns, "after the fd was closed");
});

const FAILURES: ReadonlyArray<{
  name: string;
  /** The bridge.conf text (default `allow all`), or null for no bridge.conf at all. */
  conf?: string | null;
  bridge: string;
  stderr: string | RegExp;
}> = [
  {
    name: "a missing bridge",
    bridge: "brX",
    stderr: "failed to get mtu of bridge `brX': No such device",
  },
  {
    name: "a veth given as the bridge",
    bridge: "veth0",
    stderr: "failed to add interface `tap0' to bridge `veth0': Operation not supported",
  },
  {
    name: "lo as the bridge (MTU 65536 is too big for a tap)",
    bridge: "lo",
    stderr: "failed to set mtu of device `tap0' to 65536: Invalid argument",
  },
  {
    name: "a bridge the ACL does not allow",
    conf: "allow br1\n",
    bridge: "br0",
    stderr: "access denied by acl file",
  },
  {
    name: "a bridge the ACL denies",
    conf: "allow all\ndeny br0\n",
    bridge: "br0",
    stderr: "access denied by acl file",
  },
  {
    name: "no /etc/qemu/bridge.conf",
    conf: null,
    bridge: "br0",
    // C's wording, with the reason after a colon.
    stderr:
      /^failed to parse default acl file `\/etc\/qemu\/bridge\.conf': cannot open .*: No such file or directory$/,
  },
];

for (const f of FAILURES) {
  rootTest(`helper fails with C's message and leaves no tap for ${f.name}`, async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await ns.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
    const conf = f.conf === undefined ? "allow all\n" : f.conf;
    await using sb = await box(ns, { etcQemu: conf === null ? {} : { "bridge.conf": conf } });
    for (const vnetHdr of [false, true]) {
      await assertHelperFails(helper(sb.argv, f.bridge, vnetHdr), f.stderr);
      await assertNoTaps(ns, `after failing for ${f.name}`);
    }
  });
}

rootTest(
  "helper denies, as for a broken ACL, when a directory above an ACL file is group-writable",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const refused = (dir: string, file: string) =>
      `failed to parse default acl file \`/etc/qemu/bridge.conf': \`${dir}' is writable by its ` +
      `group (mode 0775), so \`${file}' cannot be trusted: refusing it`;
    // /etc/qemu itself: whoever may write it may replace bridge.conf.
    {
      await using sb = await box(ns, {
        etcQemu: { "bridge.conf": "allow br0\n" },
        setup: "chmod 0775 /etc/qemu",
      });
      await assertHelperFails(
        helper(sb.argv, "br0"),
        refused("/etc/qemu", "/etc/qemu/bridge.conf"),
      );
    }
    // An include's directory: its `deny` could be removed, so the whole ACL is refused.
    {
      await using sb = await box(ns, {
        etcQemu: {
          "bridge.conf": "allow all\ninclude /etc/qemu/d/deny.conf\n",
          "d/deny.conf": "deny br0\n",
        },
        setup: "chmod 0775 /etc/qemu/d",
      });
      await assertHelperFails(
        helper(sb.argv, "br0"),
        refused("/etc/qemu/d", "/etc/qemu/d/deny.conf"),
      );
    }
    await assertNoTaps(ns, "after refusing the ACL");
  },
);

rootTest(
  "helper refuses an --fd that is not an open Unix socket, before making a tap",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    // Run directly (no socketpair): 0 is /dev/null, 1 and 2 are pipes, 99 is not open.
    await Promise.all(["0", "1", "2", "99"].map(async (fd) => {
      const [cmd, ...args] = [...sb.argv, HELPER_FROM_SOURCE, "--br=br0", `--fd=${fd}`];
      const out = await new Deno.Command(cmd!, {
        args,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(TIMEOUT_MS),
      }).output();
      assert.equal(out.code, 1, `--fd=${fd}`);
      assert.equal(new TextDecoder().decode(out.stdout), "");
      assert.equal(
        new TextDecoder().decode(out.stderr),
        `invalid --fd=${fd}: not an open Unix socket\n`,
      );
    }));
    await assertNoTaps(ns, "after bad --fd values");
  },
);

rootTest(
  "helper reports EPIPE for a closed peer, never dies of SIGPIPE, leaves no tap",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    // QEMU's child inherits SIGPIPE ignored; `env --default-signal=PIPE` restores the default,
    // under which the C helper is killed by signal 13 (see the differential test).
    for (const prefix of [[], ["env", "--default-signal=PIPE"]]) {
      const run = await runRaw([...sb.argv, ...prefix, HELPER_FROM_SOURCE, "--fd=3", "--br=br0"], {
        socket: "closed-peer",
        timeoutMs: TIMEOUT_MS,
      });
      closeAll(run);
      const label = prefix.length ? "SIGPIPE default" : "SIGPIPE ignored";
      assert.deepEqual(
        run.status,
        { exited: true, code: 1 },
        `${label}: ${describeStatus(run.status)}`,
      );
      assert.equal(run.stderr, "failed to write fd to unix socket: Broken pipe\n", label);
      assert.equal(run.stdout, "", label);
      await assertNoTaps(ns, `after EPIPE (${label})`);
    }
  },
);

const USAGE_ERRORS: ReadonlyArray<readonly string[]> = [
  [],
  ["--help"],
  ["-h"],
  ["--br=br0"],
  ["--fd=3"],
  ["--use-vnet"],
  ["--br", "br0", "--fd=3"],
  ["--br=br0", "--fd=3", "extra"],
  ["--use-vnet=1", "--br=br0", "--fd=3"],
  ["--br=br0", "--fd=abc"],
  ["--br=br0", "--fd="],
  ["--br=br0", "--fd=3junk"],
  ["--br=br0", "--fd= 3"],
  ["--br=br0", "--fd=+3"],
  ["--br=br0", "--fd=-1"],
  ["--br=br0", "--fd=0x3"],
  ["--br=br0", "--fd=2147483648"],
  ["--br=br0", "--br=br0", "--fd=3"],
  ["--br=br0", "--fd=3", "--fd=3"],
  ["--br=" + "a".repeat(20)],
  ["--br=" + "a".repeat(20), "--fd=3", "--x"],
];

rootTest(
  "helper prints only the usage line, on stderr, for every malformed command line",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow all\n" } });
    await Promise.all(USAGE_ERRORS.map(async (args) => {
      const run = await runRaw([...sb.argv, HELPER_FROM_SOURCE, ...args], {
        timeoutMs: TIMEOUT_MS,
      });
      closeAll(run);
      const label = JSON.stringify(args);
      assert.deepEqual(run.status, { exited: true, code: 1 }, label);
      assert.equal(run.stderr, USAGE + "\n", label);
      assert.equal(run.stdout, "", label);
      assert.equal(run.fds.length, 0, label);
      assert.equal(run.bytes, 0, label);
    }));
    await assertNoTaps(ns, "after usage errors");
  },
);

rootTest("helper rejects a --br of 16 bytes with C's message, before the ACL", async () => {
  await using ns = await NetNs.create();
  await using sb = await box(ns, {}); // no bridge.conf: the name check must come first
  for (const br of ["0123456789abcdef", "é".repeat(8)]) {
    await assertHelperFails(
      helper(sb.argv, br),
      `name \`${br}' too long: ${new TextEncoder().encode(br).length}`,
    );
  }
  await assertNoTaps(ns, "after too-long names");
});

rootTest(
  "32 helpers started at once on one bridge all get distinct taps, gone after close",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0", { mtu: 1500 });
    await using sb = await box(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    const runs = await Promise.allSettled(
      Array.from({ length: 32 }, (_, i) => helper(sb.argv, "br0", i % 2 === 1)),
    );
    const fds = runs.flatMap((r) => r.status === "fulfilled" ? [r.value] : []);
    try {
      const failed = runs.flatMap((r) => r.status === "rejected" ? [String(r.reason)] : []);
      assert.deepEqual(failed, []);
      const names = fds.map((fd) => tapInfo(fd.value).name);
      assert.equal(new Set(names).size, 32, `names: ${names}`);
      for (const name of names) assert.match(name, /^tap\d+$/);
      fds.forEach((fd, i) => assert.equal(tapInfo(fd.value).vnetHdr, i % 2 === 1));
      const links = (await ns.links()).filter((l) => l.kind === "tun");
      assert.deepEqual(links.map((l) => l.ifname).sort(), [...names].sort());
      for (const l of links) {
        assert.equal(l.master, "br0", l.ifname);
        assert.ok(l.flags.includes("UP"), l.ifname);
        assert.match(l.address, /^fe:/, l.ifname);
      }
    } finally {
      for (const fd of fds) fd.close();
    }
    await assertNoTaps(ns, "after all 32 fds were closed");
  },
);
