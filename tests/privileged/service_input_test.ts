// The bridge service against bad clients: silent, half or oversized messages, garbage, a wrong
// version, fds of their own, a disconnect before the reply, SIGKILL in the middle of requests.
// Each gets an error or a timeout, its fds are closed, others are served meanwhile.

import assert from "node:assert/strict";
import { requestTap, requestTapSync } from "../../service/client.ts";
import { decodeReply, encodeRequest, OP, STATUS } from "../../service/protocol.ts";
import { Fd } from "../../sys/fd.ts";
import {
  connectUnix,
  POLL,
  poll,
  recvMessage,
  sendMessage,
  SOCK,
  socket,
  socketpair,
} from "../../sys/libc.ts";
import { NetNs, rootTest } from "../_support/ns.ts";
import { noTapsLeft, startIn, startService } from "./_service.ts";

const ACL = { "bridge.conf": "allow br0\n" };

function connect(path: string): Fd {
  const fd = new Fd(socket(SOCK.AF_UNIX, SOCK.SEQPACKET));
  connectUnix(fd.value, path);
  return fd;
}

/** Waits for the reply on `sock` and decodes it; closes any fd that came with it. */
function reply(sock: Fd, ms = 30_000): { status: number; text: string; fds: number } {
  const ready = poll([sock.value], POLL.IN, ms)[0];
  assert.ok(ready, "no reply in time");
  const msg = recvMessage(sock.value, 8192)!;
  for (const fd of msg.fds) new Fd(fd).close();
  return { ...decodeReply(msg.data), fds: msg.fds.length };
}

rootTest(
  "service: bad messages get BAD_REQUEST or VERSION replies, a silent client a timeout, and others are served meanwhile",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using svc = await startService(ns, { etcQemu: ACL, args: ["--timeout-ms", "1500"] });
    // Warm up (the service starts at the first connection) and take the fd baseline.
    requestTapSync("br0", false, { socket: svc.socket, timeoutMs: 30_000 }).close();
    const baseline = await svc.idleFdCount();

    using silent = connect(svc.socket);
    const started = Date.now();

    const cases: Array<[string, Uint8Array<ArrayBuffer>, number, RegExp]> = [
      [
        "half a header",
        new TextEncoder().encode("VMBR"),
        STATUS.BAD_REQUEST,
        /shorter than the header/,
      ],
      ["oversized", new Uint8Array(65536), STATUS.BAD_REQUEST, /longer than 152 bytes/],
      [
        "garbage",
        new TextEncoder().encode("GET / HTTP/1.1\r\n"),
        STATUS.BAD_REQUEST,
        /not a vm-bridge message/,
      ],
      [
        "wrong version",
        (() => {
          const m = encodeRequest({ op: OP.OPEN, bridge: "br0", vnetHdr: false });
          m[4] = 9;
          return m;
        })(),
        STATUS.VERSION,
        /^unsupported protocol version 9: this service speaks version 1$/,
      ],
      [
        "length mismatch",
        (() => {
          const m = encodeRequest({ op: OP.OPEN, bridge: "br0", vnetHdr: false });
          return m.slice(0, m.length - 1);
        })(),
        STATUS.BAD_REQUEST,
        /does not match the name length/,
      ],
    ];
    for (const [what, bytes, status, text] of cases) {
      using sock = connect(svc.socket);
      sendMessage(sock.value, bytes);
      const r = reply(sock);
      assert.equal(r.status, status, `${what}: ${r.text}`);
      assert.match(r.text, text, what);
      assert.equal(r.fds, 0, what);
    }

    // Fds sent by a client are refused and closed: our end of a socketpair sees the hang-up
    // once the service closed the copy it received.
    {
      const [mine, theirs] = socketpair(SOCK.AF_UNIX, SOCK.STREAM);
      using a = new Fd(mine);
      {
        using b = new Fd(theirs);
        using sock = connect(svc.socket);
        sendMessage(
          sock.value,
          encodeRequest({ op: OP.OPEN, bridge: "br0", vnetHdr: false }),
          b.value,
        );
        b.close();
        const r = reply(sock);
        assert.equal(r.status, STATUS.BAD_REQUEST);
        assert.equal(r.text, "bad request: file descriptors are not accepted");
      }
      assert.ok(poll([a.value], POLL.IN, 5000)[0]! & POLL.HUP, "the service kept our fd");
    }

    // A well-formed request is served while the silent client still waits.
    requestTapSync("br0", false, { socket: svc.socket, timeoutMs: 30_000 }).close();
    assert.ok(Date.now() - started < 1500, "served while the silent client was connected");

    // The silent client gets a timeout reply.
    const r = reply(silent, 10_000);
    assert.equal(r.status, STATUS.TIMEOUT);
    assert.equal(r.text, "no request within 1500 ms");
    silent.close();

    assert.deepEqual(await noTapsLeft(ns), []);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(
      await svc.fdCountSettles(baseline),
      baseline,
      `fds leaked in the service: ${svc.fdTable()}`,
    );
    await svc.waitFor(/decision=timeout/);
  },
);

rootTest("service: a client that disconnects before the reply leaves no tap", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  await using svc = await startService(ns, { etcQemu: ACL });
  requestTapSync("br0", false, { socket: svc.socket, timeoutMs: 30_000 }).close();
  const baseline = await svc.idleFdCount();
  for (let i = 0; i < 20; i++) {
    const sock = connect(svc.socket);
    sendMessage(sock.value, encodeRequest({ op: OP.OPEN, bridge: "br0", vnetHdr: false }));
    sock.close();
  }
  // Still serving, and the abandoned taps are gone.
  requestTapSync("br0", false, { socket: svc.socket, timeoutMs: 30_000 }).close();
  assert.deepEqual(await noTapsLeft(ns), []);
  assert.equal(
    await svc.fdCountSettles(baseline),
    baseline,
    `fds leaked in the service: ${svc.fdTable()}`,
  );
  await svc.waitFor(/decision=error reason="client gone before the reply, tap destroyed/);
});

rootTest(
  "service: SIGKILL in the middle of requests leaves no tap, and a restart serves at once",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using first = await startService(ns, { etcQemu: ACL, activation: "listen" });
    const inflight = Array.from(
      { length: 30 },
      () =>
        requestTap("br0", false, { socket: first.socket, timeoutMs: 30_000 }).then(
          (fd) => fd.close(),
          () => {},
        ),
    );
    await new Promise((r) => setTimeout(r, 30));
    first.kill("SIGKILL");
    await first.exited();
    await Promise.all(inflight);
    assert.deepEqual(await noTapsLeft(ns), [], "taps left after SIGKILL");
    await using second = await startIn(ns, first.dir, { etcQemu: ACL, activation: "listen" });
    const t0 = performance.now();
    requestTapSync("br0", false, { socket: second.socket, timeoutMs: 30_000 }).close();
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `first request after restart took ${ms.toFixed(0)} ms`);
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);
