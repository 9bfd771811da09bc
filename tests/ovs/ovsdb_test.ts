// The OVSDB client's I/O against a scripted fake server on a Unix socket: errors when the
// database is down, bounded waits, echo, framing; and the kernel-and-database bridge verdict.

import assert from "node:assert/strict";
import {
  classifyBridge,
  Ovsdb,
  OvsdbError,
  OvsdbUnreachableError,
  withOvsdb,
} from "../../ovs/ovsdb.ts";

const UUID = "11111111-1111-4111-8111-111111111111";

/** A fake ovsdb-server: `serve` gets each connection. */
async function fakeServer(
  serve: (conn: Deno.UnixConn) => Promise<void>,
): Promise<{ path: string; received: string[]; [Symbol.asyncDispose](): Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "vmb-ovsdb-test-" });
  const path = `${dir}/db.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const received: string[] = [];
  const conns: Deno.UnixConn[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      conns.push(conn);
      serve(conn).catch(() => {});
    }
  })();
  return {
    path,
    received,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed by serve */ }
      }
      await loop.catch(() => {});
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Reads until one complete JSON object arrived (the tests send small requests). */
async function readRequest(conn: Deno.UnixConn): Promise<Record<string, unknown>> {
  let text = "";
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("client closed");
    text += new TextDecoder().decode(buf.subarray(0, n));
    try {
      return JSON.parse(text);
    } catch { /* incomplete */ }
  }
}

const send = (conn: Deno.UnixConn, v: unknown) =>
  conn.write(new TextEncoder().encode(JSON.stringify(v)));

Deno.test("Ovsdb.connect() says the database is not reachable when the socket is missing", () => {
  const err = assert.throws(
    () => Ovsdb.connect({ path: "/nonexistent/vmb/db.sock" }),
    OvsdbUnreachableError,
  );
  void err;
  assert.throws(
    () => Ovsdb.connect({ path: "/nonexistent/vmb/db.sock" }),
    {
      message:
        "Open vSwitch database not reachable at '/nonexistent/vmb/db.sock': No such file or directory",
    },
  );
});

Deno.test("Ovsdb.connect() says so when nobody listens on the socket (OVS stopped)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmb-ovsdb-test-" });
  const path = `${dir}/db.sock`;
  // A socket file left behind by a stopped ovsdb-server: a hard link keeps the socket inode
  // after Deno's listener unlinks its own name on close.
  const listener = Deno.listen({ transport: "unix", path: `${dir}/live.sock` });
  await Deno.link(`${dir}/live.sock`, path);
  listener.close();
  try {
    assert.throws(() => Ovsdb.connect({ path }), {
      message: `Open vSwitch database not reachable at '${path}': Connection refused`,
    });
    assert.throws(() => Ovsdb.connect({ path: `${dir}/${"x".repeat(120)}` }), {
      name: "OvsdbUnreachableError",
      message: /Unix socket path is too long/,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Ovsdb.connect() rejects a timeout that is not a positive number", () => {
  assert.throws(() => Ovsdb.connect({ timeoutMs: 0 }), RangeError);
  assert.throws(() => Ovsdb.connect({ timeoutMs: NaN }), RangeError);
});

Deno.test("Ovsdb.transact() gives up after the timeout when the server never answers", async () => {
  await using srv = await fakeServer(async (conn) => {
    await readRequest(conn); // and never answer
    await new Promise((r) => setTimeout(r, 3000));
  });
  using db = Ovsdb.connect({ path: srv.path, timeoutMs: 300 });
  const t0 = Date.now();
  await assert.rejects(() => db.isOvsBridge("br0"), {
    name: "OvsdbUnreachableError",
    message: `Open vSwitch database not reachable at '${srv.path}': no answer within 300 ms`,
  });
  const took = Date.now() - t0;
  assert.ok(took >= 290 && took < 2500, `took ${took} ms`);
  // The connection is closed now: the next request fails at once.
  await assert.rejects(() => db.isOvsBridge("br0"), /no answer within 300 ms/);
});

Deno.test("Ovsdb answers the server's echo and reads a reply sent byte by byte", async () => {
  let echoAnswer: Record<string, unknown> | undefined;
  await using srv = await fakeServer(async (conn) => {
    const req = await readRequest(conn);
    assert.deepEqual((req.params as unknown[])[0], "Open_vSwitch");
    await send(conn, { method: "echo", params: ["ping"], id: "echo" });
    echoAnswer = await readRequest(conn);
    const reply = JSON.stringify({
      id: req.id,
      error: null,
      result: [{ rows: [{ _uuid: ["uuid", UUID], name: "br0", datapath_type: "netdev" }] }],
    });
    for (const b of new TextEncoder().encode(reply)) await conn.write(new Uint8Array([b]));
  });
  using db = Ovsdb.connect({ path: srv.path, timeoutMs: 5000 });
  assert.deepEqual(await db.findBridge("br0"), {
    uuid: UUID,
    name: "br0",
    datapathType: "netdev",
  });
  assert.deepEqual(echoAnswer, { result: ["ping"], error: null, id: "echo" });
});

Deno.test("Ovsdb reports a server that closes the connection or sends garbage", async () => {
  {
    await using srv = await fakeServer(async (conn) => {
      await readRequest(conn);
      conn.close();
    });
    using db = Ovsdb.connect({ path: srv.path });
    await assert.rejects(() => db.isOvsBridge("br0"), {
      message:
        `Open vSwitch database not reachable at '${srv.path}': the server closed the connection`,
    });
  }
  {
    await using srv = await fakeServer(async (conn) => {
      await readRequest(conn);
      await conn.write(new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"));
    });
    using db = Ovsdb.connect({ path: srv.path });
    await assert.rejects(() => db.isOvsBridge("br0"), /not reachable at .*: malformed message/);
  }
});

Deno.test("Ovsdb.removePort() refuses a port that vm-bridge did not add", async () => {
  await using srv = await fakeServer(async (conn) => {
    const req = await readRequest(conn);
    await send(conn, {
      id: req.id,
      error: null,
      result: [{
        rows: [{
          _uuid: ["uuid", UUID],
          name: "vxlan0",
          external_ids: ["map", []],
          interfaces: ["set", []],
        }],
      }],
    });
    // A second request (the removal) must not come.
    await readRequest(conn).then(() => srv.received.push("second request"), () => {});
  });
  using db = Ovsdb.connect({ path: srv.path });
  await assert.rejects(
    () => db.removePort("vxlan0"),
    (e: unknown) =>
      e instanceof OvsdbError &&
      e.message ===
        "Refusing to remove Open vSwitch port 'vxlan0': it was not added by vm-bridge (no external_ids:vm-bridge-uid)",
  );
  db.close();
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(srv.received, []);
});

Deno.test("withOvsdb() closes the connection when the callback throws", async () => {
  let closed = false;
  await using srv = await fakeServer(async (conn) => {
    const buf = new Uint8Array(16);
    closed = (await conn.read(buf)) === null;
  });
  await assert.rejects(() => withOvsdb({ path: srv.path }, () => Promise.reject(new Error("x"))));
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(closed);
});

Deno.test({
  name: "classifyBridge() decides from the kernel and the database together",
  permissions: "none",
  fn() {
    const row = { uuid: UUID, name: "br0", datapathType: "netdev" };
    assert.deepEqual(classifyBridge("br0", { exists: true, linuxBridge: true }, undefined), {
      kind: "linux",
    });
    assert.deepEqual(classifyBridge("br0", { exists: true, linuxBridge: false }, row), {
      kind: "ovs",
      bridge: row,
    });
    assert.deepEqual(classifyBridge("br0", { exists: true, linuxBridge: true }, row), {
      kind: "none",
      reason: "'br0' is both a Linux bridge and an Open vSwitch bridge in the database",
    });
    assert.deepEqual(classifyBridge("br0", { exists: false, linuxBridge: false }, row), {
      kind: "none",
      reason: "Open vSwitch bridge 'br0' has no kernel device: is ovs-vswitchd running?",
    });
    assert.deepEqual(classifyBridge("eth0", { exists: true, linuxBridge: false }, undefined), {
      kind: "none",
      reason: "'eth0' is not a bridge",
    });
    // A name that looks like an OVS bridge means nothing by itself.
    assert.deepEqual(classifyBridge("br-int", { exists: false, linuxBridge: false }, undefined), {
      kind: "none",
      reason: "no bridge named 'br-int'",
    });
  },
});
