// spawn(): the child gets exactly the fds it was given, even when a source fd number is also a
// target that an earlier dup2 overwrites (the order glibc applies file actions in).

import assert from "node:assert/strict";
import { close, POLL, pollAsync, read, setNonBlocking, SOCK, socketpair } from "../../sys/libc.ts";
import { spawn, tryWait } from "../../sys/io.ts";

async function reap(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const status = tryWait(pid);
    if (status !== undefined) {
      assert.deepEqual(status, { exited: true, code: 0 });
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("child did not exit");
}

async function readLine(fd: number): Promise<string> {
  setNonBlocking(fd, true);
  await pollAsync([fd], [POLL.IN], 5000);
  const buf = new Uint8Array(new ArrayBuffer(64));
  const n = read(fd, buf);
  return new TextDecoder().decode(buf.subarray(0, Math.max(n, 0))).trim();
}

Deno.test("spawn() maps swapped fds correctly: {a: c, c: a} gives each child fd the right socket", async () => {
  const [a, aPeer] = socketpair(SOCK.AF_UNIX, SOCK.STREAM);
  const [c, cPeer] = socketpair(SOCK.AF_UNIX, SOCK.STREAM);
  try {
    // Child fd `a` gets the socket `c`, and child fd `c` gets the socket `a`: applied in order,
    // the first dup2 would overwrite `a` before it is copied.
    const pid = spawn({
      // bash, not dash: dash cannot redirect to fds above 9.
      argv: ["bash", "-c", `echo to-c-peer >&${a}; echo to-a-peer >&${c}`],
      searchPath: true,
      fds: new Map([[a, c], [c, a]]),
      devNull: [0],
    });
    await reap(pid);
    assert.equal(await readLine(cPeer), "to-c-peer");
    assert.equal(await readLine(aPeer), "to-a-peer");
  } finally {
    for (const fd of [a, aPeer, c, cPeer]) close(fd);
  }
});
