// Tests for net/run_helper.ts through bridgeNetdev(): the helper is run as QEMU runs it (argv,
// fd 3, no shell), and every way a helper can fail gives a BridgeHelperError carrying its stderr
// while leaking no fd and leaving no process. Fake helpers live in tests/_support/fake_helpers/;
// the ones that create a tun or tap need root and run inside a throwaway namespace.

import assert from "node:assert/strict";
import { bridgeNetdev } from "../../net/open.ts";
import { BridgeHelperError, DEFAULT_HELPER_TIMEOUT_MS, runHelper } from "../../net/run_helper.ts";
import { OsError } from "../../sys/libc.ts";
import {
  children,
  FAKE_HELPER,
  fakeHelper,
  forkingHelper,
  hangingHelper,
  LIST_FDS,
  newFds,
  openFds,
  procInfo,
} from "../_support/fake_helpers/mod.ts";
import { NetNs, rootTest } from "../_support/ns.ts";

/** Awaits `p`, which must reject, and returns what it rejected with. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new assert.AssertionError({ message: "expected a rejection, got a Netdev" });
}

/**
 * Runs `fn`, which must reject, and checks that it left no new fd in this process and no child
 * process (running or zombie). Returns the error, how long the call took and when it started.
 */
async function failsCleanly(
  fn: () => Promise<unknown>,
): Promise<{ error: unknown; ms: number; start: number }> {
  const before = await openFds();
  const t0 = performance.now();
  const error = await rejection(fn());
  const ms = performance.now() - t0;
  assert.deepEqual(newFds(before, await openFds()), [], "fds leaked by the failed helper run");
  assert.deepEqual(await children(), [], "a helper process was left behind");
  return { error, ms, start: t0 };
}

/** Asserts a BridgeHelperError whose message has `summary` and the helper's stderr `said`. */
function assertHelperError(error: unknown, summary: RegExp, said?: string): BridgeHelperError {
  assert.ok(error instanceof BridgeHelperError, `not a BridgeHelperError: ${error}`);
  assert.equal(error.name, "BridgeHelperError");
  assert.match(error.message, summary);
  if (said !== undefined) {
    assert.ok(error.stderr.includes(said), `stderr lacks ${JSON.stringify(said)}: ${error.stderr}`);
    assert.ok(error.message.includes(said), `message lacks the stderr: ${error.message}`);
  }
  return error;
}

// Warm up what Deno opens lazily and keeps (the child-process machinery, the FFI worker pool),
// so that the fd counts below compare like with like.
await new Deno.Command("true").output();
await runHelper({ helper: ["false"], bridge: "br0", vnetHdr: false }).catch(() => {});

// ---------------------------------------------------------------------------------------------
// Helpers that cannot be started

Deno.test("bridgeNetdev() rejects a helper path that does not exist, with the reason", async () => {
  const { error } = await failsCleanly(() =>
    bridgeNetdev({ helper: "/nonexistent/qemu-bridge-helper" })
  );
  const e = assertHelperError(
    error,
    /^Failed to start the bridge helper "\/nonexistent\/qemu-bridge-helper": No such file or directory$/,
  );
  assert.equal(e.status, undefined);
  assert.ok(e.cause instanceof OsError);
  assert.equal(e.cause.code, "ENOENT");
});

Deno.test("bridgeNetdev() runs a string helper as a path, never searching PATH (execv)", async () => {
  // "sh" is on PATH, but QEMU execv()s helper=sh relative to the cwd, where there is none.
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: "sh" }));
  assertHelperError(error, /^Failed to start the bridge helper "sh": No such file or directory$/);
});

Deno.test("bridgeNetdev() rejects a helper that is not executable", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: FAKE_HELPER }));
  assertHelperError(error, /^Failed to start the bridge helper ".*": Permission denied$/);
});

Deno.test("bridgeNetdev() rejects an argv helper whose program is not on PATH", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: ["vmb-no-such-helper"] }));
  // execvp reports EACCES instead of ENOENT when some PATH directory was not searchable.
  assertHelperError(
    error,
    /^Failed to start the bridge helper "vmb-no-such-helper": (No such file or directory|Permission denied)$/,
  );
});

Deno.test("bridgeNetdev() rejects an empty helper argv with a TypeError", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: [] }));
  assert.ok(error instanceof TypeError);
  assert.equal(error.message, "The helper command is empty");
});

// ---------------------------------------------------------------------------------------------
// Helpers that run and misbehave (no root needed: nothing here makes a tun or tap)

Deno.test("bridgeNetdev() rejects a helper that exits non-zero, with its stderr and status", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: fakeHelper("fail") }));
  const e = assertHelperError(
    error,
    /^Bridge helper failed \(exit status 1\): /,
    "fake-helper(fail): access denied by acl file",
  );
  assert.deepEqual(e.status, { exited: true, code: 1 });
});

Deno.test("bridgeNetdev() rejects a helper that exits 0 without sending an fd", async () => {
  // QEMU's recv_fd returns 0 on EOF here and adopts its own stdin as the tap.
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: fakeHelper("silent") }));
  const e = assertHelperError(
    error,
    /^Bridge helper exited 0 without sending a file descriptor: /,
    "fake-helper(silent): exiting 0 without sending anything",
  );
  assert.deepEqual(e.status, { exited: true, code: 0 });
});

Deno.test("bridgeNetdev() rejects a helper that sends /dev/null, and closes that fd", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: fakeHelper("devnull") }));
  assertHelperError(
    error,
    /^Bridge helper sent a file descriptor that is not a tap: ioctl\(TUNGETIFF\): Inappropriate ioctl for device: /,
    "fake-helper(devnull): sent /dev/null",
  );
});

Deno.test("bridgeNetdev() rejects a helper that sends a socket, and closes that fd", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: fakeHelper("socket") }));
  assertHelperError(
    error,
    /^Bridge helper sent a file descriptor that is not a tap: /,
    "fake-helper(socket): sent one end of a socketpair",
  );
});

Deno.test("bridgeNetdev() rejects a helper that sends data with no fd", async () => {
  // QEMU would read an uninitialised int out of its control buffer and use it as the tap.
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: fakeHelper("data") }));
  assertHelperError(
    error,
    /^Bridge helper sent a bad control message: expected one fd, got 0: /,
    "fake-helper(data): sent a data byte with no fd",
  );
});

Deno.test("bridgeNetdev() kills and reaps a hanging helper when the signal aborts", async () => {
  const pidFile = await Deno.makeTempFile({ prefix: "vmb-hang-" });
  try {
    // Timed from the signal's creation: failsCleanly's own clock starts later (it lists fds
    // first), which made "rejected after 285 ms" a spurious failure under load.
    const t0 = performance.now();
    const signal = AbortSignal.timeout(300);
    const { error, ms: took, start } = await failsCleanly(() =>
      bridgeNetdev({ helper: hangingHelper(pidFile), signal })
    );
    const ms = start - t0 + took;
    // The signal's own reason, not a wrapper and not a waitpid error.
    assert.equal(error, signal.reason);
    assert.ok(error instanceof DOMException && error.name === "TimeoutError", String(error));
    assert.ok(ms >= 290 && ms < 1000, `rejected after ${ms.toFixed(0)} ms`);
    const pid = Number(await Deno.readTextFile(pidFile));
    assert.ok(pid > 0, "the fake helper never ran");
    assert.equal(await procInfo(pid), undefined, `helper ${pid} still exists (not reaped)`);
  } finally {
    await Deno.remove(pidFile);
  }
});

Deno.test("bridgeNetdev() rejects with the abort reason given to AbortController.abort()", async () => {
  const pidFile = await Deno.makeTempFile({ prefix: "vmb-hang-" });
  try {
    const ac = new AbortController();
    const reason = new Error("the emulator is shutting down");
    setTimeout(() => ac.abort(reason), 100);
    const { error } = await failsCleanly(() =>
      bridgeNetdev({ helper: hangingHelper(pidFile), signal: ac.signal })
    );
    assert.equal(error, reason);
  } finally {
    await Deno.remove(pidFile);
  }
});

Deno.test("bridgeNetdev() with an already aborted signal starts no helper", async () => {
  const marker = `${await Deno.makeTempDir({ prefix: "vmb-aborted-" })}/ran`;
  try {
    const reason = new Error("aborted before the start");
    const { error } = await failsCleanly(() =>
      bridgeNetdev({
        helper: ["sh", "-c", 'touch "$1"', "fake", marker],
        signal: AbortSignal.abort(reason),
      })
    );
    assert.equal(error, reason);
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  } finally {
    await Deno.remove(marker.slice(0, marker.lastIndexOf("/")), { recursive: true });
  }
});

Deno.test("bridgeNetdev() finishes when the helper exits, though a grandchild keeps the socket", async (t) => {
  for (const code of [1, 0]) {
    await t.step(`helper exits ${code}`, async () => {
      const pidFile = await Deno.makeTempFile({ prefix: "vmb-fork-" });
      let grandchild = 0;
      try {
        const { error, ms } = await failsCleanly(() =>
          bridgeNetdev({ helper: forkingHelper(pidFile, code) })
        );
        grandchild = Number(await Deno.readTextFile(pidFile));
        // The scenario is real: the grandchild holds the helper's end of the socket.
        assert.match(await Deno.readLink(`/proc/${grandchild}/fd/3`), /^socket:/);
        assertHelperError(
          error,
          code === 0 ? /exited 0 without sending/ : /failed \(exit status 1\)/,
          "fake-forking: started grandchild",
        );
        // QEMU's recv_fd would block until the grandchild's `sleep 30` ends.
        assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
      } finally {
        if (grandchild > 0) Deno.kill(grandchild, "SIGKILL");
        await Deno.remove(pidFile);
      }
    });
  }
});

Deno.test("bridgeNetdev() kills and reaps a helper that outlives timeoutMs, with a BridgeHelperError", async () => {
  const pidFile = await Deno.makeTempFile({ prefix: "vmb-hang-" });
  try {
    // The signal only guards this test: the deadline must act long before it.
    const guard = AbortSignal.timeout(10_000);
    const { error, ms } = await failsCleanly(() =>
      bridgeNetdev({ helper: hangingHelper(pidFile), timeoutMs: 300, signal: guard })
    );
    const e = assertHelperError(error, /^Bridge helper did not finish within 0\.3 s$/);
    assert.deepEqual(e.status, { exited: false, signal: 9 });
    assert.ok(ms >= 290 && ms < 5000, `rejected after ${ms.toFixed(0)} ms`);
    const pid = Number(await Deno.readTextFile(pidFile));
    assert.equal(await procInfo(pid), undefined, `helper ${pid} still exists (not reaped)`);
  } finally {
    await Deno.remove(pidFile);
  }
});

Deno.test({
  name: "runHelper() has a default deadline of 10 to 30 s",
  permissions: "none",
  fn() {
    assert.ok(DEFAULT_HELPER_TIMEOUT_MS >= 10_000 && DEFAULT_HELPER_TIMEOUT_MS <= 30_000);
  },
});

Deno.test("bridgeNetdev() stops reading a helper that floods its socket, and kills it", async () => {
  const guard = AbortSignal.timeout(20_000);
  const { error, ms } = await failsCleanly(() =>
    bridgeNetdev({ helper: fakeHelper("flood"), signal: guard })
  );
  const e = assertHelperError(
    error,
    /^Bridge helper kept writing to its socket: more than \d+ bytes/,
  );
  assert.deepEqual(e.status, { exited: false, signal: 9 });
  assert.ok(ms < 15_000, `took ${ms.toFixed(0)} ms`);
});

Deno.test("bridgeNetdev() keeps at most 64 KiB of a stderr flood, and the deadline ends it", async () => {
  const guard = AbortSignal.timeout(20_000);
  const { error } = await failsCleanly(() =>
    bridgeNetdev({ helper: fakeHelper("flood-stderr"), timeoutMs: 1500, signal: guard })
  );
  const e = assertHelperError(error, /^Bridge helper did not finish within 1\.5 s: A{100}/);
  assert.ok(e.stderr.length <= 64 * 1024, `kept ${e.stderr.length} bytes of stderr`);
});

// ---------------------------------------------------------------------------------------------
// QEMU's argv and fd contract

/** Runs LIST_FDS as the helper and parses its report. */
async function listFds(vnetHdr: boolean, br = "br0") {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: LIST_FDS, vnetHdr, br }));
  const e = assertHelperError(error, /^Bridge helper failed \(exit status 1\): /);
  const lines = e.stderr.split("\n");
  const args = lines.filter((l) => l.startsWith("arg:")).map((l) => l.slice(4));
  const fds = new Map<number, string>();
  for (const l of lines) {
    const m = / (\d+) -> (.*)$/.exec(l);
    if (m) fds.set(Number(m[1]), m[2]!);
  }
  return { args, fds };
}

Deno.test("bridgeNetdev() appends exactly --fd=3 --br=BR to the helper argv", async () => {
  const { args } = await listFds(false, "virbr7");
  assert.deepEqual(args, ["--fd=3", "--br=virbr7"]);
});

Deno.test("bridgeNetdev({ vnetHdr: true }) puts --use-vnet first, as QEMU", async () => {
  const { args } = await listFds(true);
  assert.deepEqual(args, ["--use-vnet", "--fd=3", "--br=br0"]);
});

Deno.test("bridgeNetdev() gives the helper stdin /dev/null, its socket as fd 3 and no other fd", async () => {
  const { fds } = await listFds(false);
  assert.deepEqual([...fds.keys()].sort((a, b) => a - b), [0, 1, 2, 3]);
  assert.equal(fds.get(0), "/dev/null");
  assert.match(fds.get(1)!, /^socket:\[\d+\]$/);
  assert.equal(fds.get(2), fds.get(1), "stdout and stderr are both captured");
  assert.match(fds.get(3)!, /^socket:\[\d+\]$/);
  assert.notEqual(fds.get(3), fds.get(2));
});

Deno.test("bridgeNetdev() gives the helper a connected Unix stream socket as fd 3", async () => {
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: fakeHelper("sockinfo") }));
  const e = assertHelperError(error, /^Bridge helper failed \(exit status 1\): sockinfo /);
  const info = JSON.parse(e.stderr.slice(e.stderr.indexOf("{")));
  assert.deepEqual(info, {
    fd: 3,
    isSocket: true,
    type: 1, // SOCK_STREAM
    domain: 1, // AF_UNIX
    stdin: "/dev/null",
  });
});

Deno.test("bridgeNetdev() rejects a bridge name with a space before running anything", async () => {
  // With a helper string containing a space, QEMU runs `sh -c "HELPER --use-vnet --fd=N
  // --br=BR"` and this name runs `touch`. Here the name is invalid for the kernel anyway.
  const dir = await Deno.makeTempDir({ prefix: "vmb-inject-" });
  try {
    for (const br of ["br0;touch /tmp/x", `br0;touch ${dir}/x`]) {
      const { error } = await failsCleanly(() =>
        bridgeNetdev({ br, helper: ["sh", "-c", 'touch "$0"', `${dir}/spawned`] })
      );
      assert.ok(error instanceof RangeError, String(error));
      assert.match(error.message, /^(invalid interface name|name) `br0;touch/);
    }
    await assert.rejects(Deno.stat(`${dir}/spawned`), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(`${dir}/x`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bridgeNetdev() passes an odd but valid bridge name as one argv element, unexecuted", async () => {
  // Valid interface names (no space, no "/"), each of which a shell would act on.
  const dir = await Deno.makeTempDir({ prefix: "vmb-inject-" });
  const cwd = Deno.cwd();
  Deno.chdir(dir);
  try {
    for (const br of ["br0;>pwned", "$(>pwned2)", "`>pwned3`", "b|tee${IFS}x"]) {
      const { args } = await listFds(false, br);
      assert.deepEqual(args, ["--fd=3", `--br=${br}`]);
    }
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), [], "a shell ran the name");
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Helpers that send a tun or tap (root; each in its own namespace)

/** The fake helper in mode `mode`, run inside `ns`, where its tun or tap is created. */
function inNs(ns: NetNs, mode: string): string[] {
  return ns.exec(fakeHelper(mode));
}

rootTest("bridgeNetdev() rejects a helper that sends a tun, and closes it", async () => {
  await using ns = await NetNs.create();
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: inNs(ns, "tun") }));
  assertHelperError(
    error,
    /^Bridge helper sent a file descriptor that is not a tap: it is a tun, not a tap: /,
    "fake-helper(tun): sent a tun fd",
  );
  // Its only fd is closed, so the non-persistent tun is gone.
  assert.deepEqual(await ns.taps(), []);
});

rootTest("bridgeNetdev() closes the tap of a helper that sends it and exits 1", async () => {
  // QEMU says "bridge helper failed" and leaks the fd (and with it the tap) on this path.
  await using ns = await NetNs.create();
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: inNs(ns, "tap-fail") }));
  assertHelperError(
    error,
    /^Bridge helper failed \(exit status 1\): /,
    "fake-helper(tap-fail): sent a tap fd, then failed",
  );
  assert.deepEqual(await ns.taps(), []);
});

rootTest("bridgeNetdev() rejects a helper that sends two fds, and closes both", async () => {
  await using ns = await NetNs.create();
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: inNs(ns, "two-taps") }));
  assertHelperError(
    error,
    /^Bridge helper sent a bad control message: more than one message: /,
    "fake-helper(two-taps): sent two tap fds",
  );
  assert.deepEqual(await ns.taps(), []);
});

rootTest("bridgeNetdev() adopts the tap a helper sends; close() gives back every fd", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  const before = await openFds();
  const nic = await bridgeNetdev({ helper: inNs(ns, "tap") });
  assert.deepEqual(await children(), []);
  assert.match(nic.name, /^tap\d+$/);
  assert.deepEqual(await ns.taps(), [nic.name]);
  // The tap lives in the namespace, so its MTU cannot be read by name from here.
  assert.equal(nic.mtu, undefined);
  await nic.close();
  assert.deepEqual(newFds(before, await openFds()), []);
  assert.deepEqual(await ns.taps(), []);
});

rootTest(
  "bridgeNetdev() succeeds as soon as the helper exits, though a grandchild keeps the socket",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    const pidFile = await Deno.makeTempFile({ prefix: "vmb-fork-" });
    let grandchild = 0;
    try {
      const t0 = performance.now();
      await using nic = await bridgeNetdev({
        helper: ns.exec(forkingHelper(pidFile, fakeHelper("tap"))),
      });
      const ms = performance.now() - t0;
      grandchild = Number(await Deno.readTextFile(pidFile));
      assert.match(await Deno.readLink(`/proc/${grandchild}/fd/3`), /^socket:/);
      assert.ok(ms < 5000, `took ${ms.toFixed(0)} ms`);
      assert.deepEqual(await ns.taps(), [nic.name]);
    } finally {
      if (grandchild > 0) Deno.kill(grandchild, "SIGKILL");
      await Deno.remove(pidFile);
    }
  },
);

rootTest("bridgeNetdev() rejects and closes a tap that is a port of no bridge", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  const { error } = await failsCleanly(() => bridgeNetdev({ helper: inNs(ns, "tap-loose") }));
  assertHelperError(
    error,
    /^Bridge helper sent a tap that is not a port of bridge `br0': `tap0' is not a port of any bridge: /,
    "fake-helper(tap-loose): sent a tap that is on no bridge",
  );
  assert.deepEqual(await ns.taps(), []);
});

rootTest(
  "bridgeNetdev() rejects and closes a tap on another bridge than the one asked for",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await ns.bridge("br1", { mac: "02:00:00:00:00:02" });
    const { error } = await failsCleanly(() => bridgeNetdev({ helper: inNs(ns, "tap-other") }));
    assertHelperError(
      error,
      /^Bridge helper sent a tap that is not a port of bridge `br0': `tap0' is a port of `br1', not of `br0': /,
      "fake-helper(tap-other): sent a tap on br1",
    );
    assert.deepEqual(await ns.taps(), []);
  },
);
