// Hardening of the privileged path (issue 8, items 1-3): an alternative interface name cannot
// get around the ACL, the fd is delivered to someone else or the helper fails, and the final
// sendmsg waits a bounded time. Each test runs our helper from source in its own network
// namespace with a private /etc/qemu, the way QEMU runs it. Needs root.

import assert from "node:assert/strict";
import { bridgeNetdev } from "../../net/open.ts";
import { BridgeHelperError } from "../../net/run_helper.ts";
import {
  C_HELPER,
  HELPER_FROM_SOURCE,
  NetNs,
  ROOT,
  rootTest,
  run,
  sandbox,
} from "../_support/ns.ts";
import type { SandboxOptions } from "../_support/ns.ts";
import { closeAll, describeStatus, type RawRun, runRaw, type SocketMode } from "./_spawn.ts";

const TIMEOUT_MS = 60_000;

/** Runs our helper with `args` in a sandbox of `ns`, fd 3 as `socket`. */
async function runHelperIn(
  ns: NetNs,
  opts: SandboxOptions,
  args: readonly string[],
  socket: SocketMode = "pair",
): Promise<RawRun & { ms: number }> {
  const sb = await sandbox(ns, opts);
  try {
    const t0 = performance.now();
    const run = await runRaw([...sb.argv, HELPER_FROM_SOURCE, ...args], {
      socket,
      timeoutMs: TIMEOUT_MS,
    });
    return { ...run, ms: performance.now() - t0 };
  } finally {
    await sb.cleanup();
  }
}

/** Waits until the namespace holds no tap (only the kernel's asynchronous teardown). */
async function assertNoTaps(ns: NetNs, why: string): Promise<void> {
  const deadline = Date.now() + 3000;
  let taps = await ns.taps();
  while (taps.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    taps = await ns.taps();
  }
  assert.deepEqual(taps, [], `taps left behind ${why}`);
}

/** Asserts a failed run: exit 1, exactly `stderr`, nothing on stdout, no fd received. */
function assertRefused(run: RawRun, stderr: string | RegExp, label: string): void {
  try {
    assert.equal(run.timedOut, false, `${label}: still running after ${TIMEOUT_MS} ms`);
    assert.deepEqual(
      run.status,
      { exited: true, code: 1 },
      `${label}: ${describeStatus(run.status)}, stderr ${JSON.stringify(run.stderr)}`,
    );
    if (typeof stderr === "string") assert.equal(run.stderr, stderr, label);
    else assert.match(run.stderr, stderr, label);
    assert.equal(run.stdout, "", label);
    assert.equal(run.fds.length, 0, `${label}: an fd was sent`);
  } finally {
    closeAll(run);
  }
}

// ---------------------------------------------------------------------------------------------
// 1. Alternative names

/** A namespace with br-prod (alternative name prod0) and br0. */
async function altnameNs(): Promise<NetNs> {
  const ns = await NetNs.create();
  await ns.bridge("br-prod");
  await ns.bridge("br0", { mac: "02:00:00:00:00:02" });
  await ns.ip("link", "property", "add", "dev", "br-prod", "altname", "prod0");
  return ns;
}

const ALTNAME_REFUSED = "bridge `prod0' is an alternative name of `br-prod': use its name\n";

rootTest(
  "helper refuses an alternative name of a denied bridge (allow all, deny br-prod, --br=prod0)",
  async () => {
    await using ns = await altnameNs();
    const etc = { etcQemu: { "bridge.conf": "allow all\ndeny br-prod\n" } };
    for (const vnet of [[], ["--use-vnet"]]) {
      const run = await runHelperIn(ns, etc, [...vnet, "--br=prod0", "--fd=3"]);
      assertRefused(run, ALTNAME_REFUSED, `--br=prod0 ${vnet.join(" ")}`);
      await assertNoTaps(ns, "after --br=prod0");
    }
    // The canonical name is still denied, and another bridge still works.
    assertRefused(
      await runHelperIn(ns, etc, ["--br=br-prod", "--fd=3"]),
      "access denied by acl file\n",
      "--br=br-prod",
    );
    const ok = await runHelperIn(ns, etc, ["--br=br0", "--fd=3"]);
    closeAll(ok);
    assert.deepEqual(ok.status, { exited: true, code: 0 }, ok.stderr);
    await assertNoTaps(ns, "after the allowed run");
  },
);

rootTest(
  "helper refuses an alternative name even where the ACL would allow it, before the ACL",
  async () => {
    await using ns = await altnameNs();
    // `allow prod0' names the alternative name; no bridge.conf at all must not matter either:
    // the name is settled before the ACL is read.
    for (const etc of [{ "bridge.conf": "allow all\n" }, { "bridge.conf": "allow prod0\n" }, {}]) {
      const run = await runHelperIn(ns, { etcQemu: etc }, ["--br=prod0", "--fd=3"]);
      assertRefused(run, ALTNAME_REFUSED, JSON.stringify(etc));
    }
    await assertNoTaps(ns, "after the refusals");
  },
);

// ---------------------------------------------------------------------------------------------
// 2. --fd must reach someone else

rootTest(
  "helper refuses --fd of its own runtime's Unix sockets: exit 1, no fd, no tap",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const etc = { etcQemu: { "bridge.conf": "allow br0\n" } };
    // Deno opens its own fds after 0-3 (epoll, eventfd, internal socket pairs; 7-9 on this
    // machine): every one of them must be refused, sockets with the new message.
    const runs = await Promise.all(
      Array.from({ length: 9 }, (_, i) => i + 4).map(async (fd) => ({
        fd,
        run: await runHelperIn(ns, etc, ["--br=br0", `--fd=${fd}`]),
      })),
    );
    let selfSockets = 0;
    for (const { fd, run } of runs) {
      const self = `invalid --fd=${fd}: the socket's peer is this helper itself\n`;
      if (run.stderr === self) selfSockets++;
      // Deno also copies stdout and stderr to higher fds (16 and 17 here, lower when it opened
      // fewer cache files): those are sockets to this process, refused as the streams they are.
      assertRefused(
        run,
        new RegExp(
          `^invalid --fd=${fd}: (not an open Unix socket|the socket's peer is this helper itself|` +
            `the socket is this helper's standard (output|error))\\n$`,
        ),
        `--fd=${fd}`,
      );
    }
    // The scenario is real: the runtime does hold such sockets.
    assert.ok(selfSockets >= 1, "no --fd between 4 and 12 was one of the runtime's sockets");
    await assertNoTaps(ns, "after --fd of the runtime's own sockets");
  },
);

rootTest(
  "helper refuses --fd of its own stdout or stderr, a socket whose reader need not be the caller",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const etc = { etcQemu: { "bridge.conf": "allow br0\n" } };
    // runRaw gives the helper socket pairs as stdout and stderr, as a log collector would.
    for (const [fd, name] of [[1, "output"], [2, "error"]] as const) {
      assertRefused(
        await runHelperIn(ns, etc, ["--br=br0", `--fd=${fd}`]),
        `invalid --fd=${fd}: the socket is this helper's standard ${name}\n`,
        `--fd=${fd}`,
      );
    }
    await assertNoTaps(ns, "after --fd of stdout and stderr");
  },
);

rootTest("helper refuses --fd of an unconnected socket before making a tap", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  const run = await runHelperIn(
    ns,
    { etcQemu: { "bridge.conf": "allow br0\n" } },
    ["--br=br0", "--fd=3"],
    "unconnected",
  );
  assertRefused(run, "invalid --fd=3: the socket is not connected\n", "unconnected");
  await assertNoTaps(ns, "after an unconnected --fd");
});

// ---------------------------------------------------------------------------------------------
// 3. A caller that never reads

rootTest(
  "helper gives up on a caller that never reads: exit 1 within seconds, no tap left",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const run = await runHelperIn(
      ns,
      { etcQemu: { "bridge.conf": "allow br0\n" } },
      ["--br=br0", "--fd=3"],
      "full",
    );
    assertRefused(
      run,
      "failed to write fd to unix socket: the caller did not read it within 5 seconds\n",
      "full socket",
    );
    // 5 s of waiting plus start-up; far below the 60 s after which the harness kills it.
    assert.ok(run.ms >= 5000 && run.ms < 30_000, `took ${run.ms.toFixed(0)} ms`);
    await assertNoTaps(ns, "after the bounded wait");
  },
);

rootTest(
  "deno task doctor --br=prod0 names the bridge's own name instead of 'does not exist'",
  async () => {
    await using ns = await altnameNs();
    const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow all\n" } });
    try {
      const doctor = [
        Deno.execPath(),
        "run",
        "--allow-all",
        "--no-prompt",
        `${ROOT}/scripts/doctor.ts`,
      ];
      const out = await run([...sb.argv, ...doctor, "--br=prod0"]);
      assert.equal(out.code, 1, out.stdout + out.stderr);
      assert.match(
        out.stdout,
        /^FAIL `prod0' is an alternative name of `br-prod': the helper refuses it; fix: use --br=br-prod \(QEMU: br=br-prod\)$/m,
      );
      assert.doesNotMatch(out.stdout, /prod0' does not exist/);
    } finally {
      await sb.cleanup();
    }
  },
);

rootTest(
  "helper refuses, and leaves no tap, when the bridge is renamed and replaced before SIOCBRADDIF",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    try {
      // strace delays every ioctl by 0.4 s: after TUNSETIFF makes tap0 there are five more
      // (MTU, MAC) before SIOCBRADDIF, time for an administrator's rename to land in between.
      const slow = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=ioctl"];
      const running = runRaw([
        ...slow,
        "-e",
        "inject=ioctl:delay_enter=400000",
        "--",
        ...sb.argv,
        HELPER_FROM_SOURCE,
        "--br=br0",
        "--fd=3",
      ], { timeoutMs: TIMEOUT_MS });
      let settled = false;
      void running.finally(() => settled = true);
      while (!settled && (await ns.taps()).length === 0) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.ok(!settled, "the helper ended before it made its tap");
      await ns.ip("link", "set", "br0", "down");
      await ns.ip("link", "set", "br0", "name", "br-old");
      await ns.bridge("br0", { mac: "02:00:00:00:00:02" });
      const run = await running;
      assertRefused(
        run,
        "bridge `br0' changed while `tap0' was added to it: refusing\n",
        "renamed bridge",
      );
      await assertNoTaps(ns, "after the refusal");
    } finally {
      await sb.cleanup();
    }
  },
);

// ---------------------------------------------------------------------------------------------
// The library: the tap it returns is a port of the bridge asked for, by that bridge's own name

rootTest(
  "bridgeNetdev() rejects the tap QEMU's C helper gives for an alternative name, and closes it",
  async () => {
    await using ns = await altnameNs();
    const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow all\ndeny br-prod\n" } });
    try {
      let caught: unknown;
      try {
        const nic = await bridgeNetdev({
          br: "prod0",
          helper: [...sb.argv, C_HELPER],
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        await nic.close();
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof BridgeHelperError, `expected a BridgeHelperError: ${caught}`);
      assert.equal(
        caught.message,
        "Bridge helper sent a tap that is not a port of bridge `prod0': `tap0' is a port of " +
          "`br-prod', not of `prod0'",
      );
      await assertNoTaps(ns, "after the library refused the tap");
    } finally {
      await sb.cleanup();
    }
  },
);

rootTest(
  "bridgeNetdev() refuses an alternative name in its own namespace before running any helper",
  async () => {
    await using ns = await altnameNs();
    const dir = await Deno.makeTempDir({ prefix: "vmb-altname-" });
    try {
      const code = `
        import { bridgeNetdev } from ${JSON.stringify(`${ROOT}/net/open.ts`)};
        try {
          await bridgeNetdev({ br: "prod0", helper: ["touch", ${JSON.stringify(`${dir}/ran`)}] });
          console.log("resolved");
        } catch (e) {
          console.log(e.name + ": " + e.message);
        }`;
      const out = await run(ns.exec([Deno.execPath(), "eval", "--no-config", code]));
      assert.equal(out.code, 0, out.stderr);
      assert.equal(
        out.stdout,
        "RangeError: bridge `prod0' is an alternative name of `br-prod': use its name\n",
      );
      await assert.rejects(Deno.stat(`${dir}/ran`), Deno.errors.NotFound);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
