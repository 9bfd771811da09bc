// The OVSDB messages and their parsing, without a server.

import assert from "node:assert/strict";
import {
  addPortError,
  addPortOps,
  type AddPortRequest,
  checkExternalIds,
  echoReply,
  findBridgeOps,
  JsonStreamSplitter,
  listPortsOps,
  mapEntries,
  type Operation,
  OvsdbError,
  parseAddPort,
  parseFindBridge,
  parseListPorts,
  parseMessage,
  removePortOps,
  setMembers,
  staleVmPorts,
  transactRequest,
  transactResults,
  waitAttachedOps,
} from "../../ovs/protocol.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

const U1 = "11111111-1111-4111-8111-111111111111";
const U2 = "22222222-2222-4222-8222-222222222222";
const U3 = "33333333-3333-4333-8333-333333333333";

const req: AddPortRequest = {
  bridge: "br-int",
  ifname: "tap7",
  externalIds: new Map([["vm-bridge-uid", "1000"], ["vm-bridge-pid", "4242"]]),
  ifaceId: "alice:web1",
};

test("transactRequest() names the Open_vSwitch database before the operations", () => {
  const ops: Operation[] = [{ op: "select", table: "Bridge", where: [] }];
  assert.deepEqual(JSON.parse(transactRequest(7, ops)), {
    method: "transact",
    params: ["Open_vSwitch", { op: "select", table: "Bridge", where: [] }],
    id: 7,
  });
});

test("addPortOps() is one transaction: bridge exists, iface-id free, insert, add to ports", () => {
  const ops = addPortOps(req);
  assert.deepEqual(ops.map((o) => `${o.op} ${o.table}`), [
    "wait Bridge",
    "wait Interface",
    "insert Interface",
    "insert Port",
    "mutate Bridge",
  ]);
  assert.deepEqual(ops[0], {
    op: "wait",
    table: "Bridge",
    where: [["name", "==", "br-int"]],
    columns: ["name"],
    until: "==",
    rows: [{ name: "br-int" }],
    timeout: 0,
  });
  assert.deepEqual(ops[1]!.where, [[
    "external_ids",
    "includes",
    ["map", [["iface-id", "alice:web1"]]],
  ]]);
  assert.deepEqual(ops[1]!.rows, []);
  // The kernel tap is a "system" interface: the switch opens the existing device.
  assert.deepEqual(ops[2]!.row, {
    name: "tap7",
    type: "",
    external_ids: ["map", [["vm-bridge-uid", "1000"], ["vm-bridge-pid", "4242"], [
      "iface-id",
      "alice:web1",
    ]]],
  });
  assert.deepEqual(ops[3]!.row, {
    name: "tap7",
    interfaces: ["named-uuid", "vmb_iface"],
    external_ids: ["map", [["vm-bridge-uid", "1000"], ["vm-bridge-pid", "4242"]]],
  });
  assert.deepEqual(ops[4]!.mutations, [["ports", "insert", ["set", [["named-uuid", "vmb_port"]]]]]);
});

test("addPortOps() without an iface-id has no iface-id wait and no iface-id key", () => {
  const { ifaceId: _, ...plain } = req;
  const ops = addPortOps(plain);
  assert.equal(ops.length, 4);
  assert.ok(!JSON.stringify(ops).includes("iface-id"));
});

test("addPortOps() rejects names that are not kernel device names", () => {
  for (const ifname of ["", "a b", "../etc", "x/y", "sixteen-bytes-xx", "tap\n0", ".", "a:b"]) {
    assert.throws(() => addPortOps({ ...req, ifname }), TypeError, ifname);
  }
  assert.throws(() => addPortOps({ ...req, bridge: "br/0" }), /Invalid interface name: 'br\/0'/);
});

test("addPortOps() rejects external_ids the service should never write", () => {
  assert.throws(
    () => addPortOps({ ...req, externalIds: new Map([["Vm", "1"]]) }),
    /Invalid external_ids key: 'Vm'/,
  );
  assert.throws(
    () => addPortOps({ ...req, externalIds: new Map([["vm-bridge-comm", "qemu\x1b[2J"]]) }),
    /Invalid external_ids value for vm-bridge-comm: 'qemu\\u001b\[2J'/,
  );
  assert.throws(
    () => addPortOps({ ...req, externalIds: new Map([["iface-id", "bob:db"]]) }),
    /may not carry iface-id/,
  );
  assert.throws(() => addPortOps({ ...req, ifaceId: "x".repeat(257) }), TypeError);
  assert.throws(() => checkExternalIds(new Map([["k", "x".repeat(257)]])), TypeError);
});

test("transactResults() returns one result per operation", () => {
  const r = transactResults({ result: [{ rows: [] }, { count: 1 }], error: null }, 2);
  assert.deepEqual(r, [{ rows: [] }, { count: 1 }]);
});

test("transactResults() reports the failed operation's index, error and details", () => {
  const e = assert.throws(
    () =>
      transactResults({
        result: [{ count: 0 }, { error: "timed out", details: "wait" }],
        error: null,
      }, 3),
    (e: unknown) => e instanceof OvsdbError && e.opIndex === 1 && e.error === "timed out",
  );
  void e;
  // The RFC also allows null for the operations that did not run.
  assert.throws(
    () => transactResults({ result: [{ error: "constraint violation" }, null], error: null }, 2),
    (e: unknown) => e instanceof OvsdbError && e.opIndex === 0,
  );
});

test("transactResults() reports a commit failure (one extra element) with index -1", () => {
  assert.throws(
    () =>
      transactResults({
        result: [{ uuid: ["uuid", U1] }, { error: "constraint violation", details: "dup" }],
        error: null,
      }, 1),
    (e: unknown) =>
      e instanceof OvsdbError && e.opIndex === -1 && e.message === "constraint violation: dup",
  );
});

test("transactResults() reports a JSON-RPC error and rejects malformed results", () => {
  assert.throws(
    () => transactResults({ result: null, error: "unknown database" }, 1),
    (e: unknown) => e instanceof OvsdbError && e.message === "unknown database",
  );
  assert.throws(() => transactResults({ result: {}, error: null }, 1), SyntaxError);
  assert.throws(() => transactResults({ result: [], error: null }, 1), /0 results for 1/);
  assert.throws(() => transactResults({ result: [7], error: null }, 1), SyntaxError);
});

test("addPortError() says which precondition failed", () => {
  const fail = (opIndex: number, error: string) => new OvsdbError(error, error, "", opIndex);
  assert.equal(
    (addPortError(req, fail(0, "timed out")) as Error).message,
    "No Open vSwitch bridge named 'br-int'",
  );
  assert.equal(
    (addPortError(req, fail(1, "timed out")) as Error).message,
    "The iface-id 'alice:web1' is already bound to another Open vSwitch interface",
  );
  assert.equal(
    (addPortError(req, fail(-1, "constraint violation")) as Error).message,
    "A port or interface named 'tap7' already exists in the Open vSwitch database",
  );
  const other = new Error("x");
  assert.equal(addPortError(req, other), other);
});

test("parseAddPort() returns the new rows and refuses a mutate that touched no bridge", () => {
  const ok = [{}, {}, { uuid: ["uuid", U1] }, { uuid: ["uuid", U2] }, { count: 1 }];
  assert.deepEqual(parseAddPort(req, ok), { iface: U1, port: U2 });
  assert.throws(
    () => parseAddPort(req, [...ok.slice(0, 4), { count: 0 }]),
    /No Open vSwitch bridge named 'br-int'/,
  );
});

test("findBridgeOps()/parseFindBridge() look a bridge up by name", () => {
  assert.deepEqual(findBridgeOps("br0")[0]!.where, [["name", "==", "br0"]]);
  assert.equal(parseFindBridge([{ rows: [] }]), undefined);
  assert.deepEqual(
    parseFindBridge([{ rows: [{ _uuid: ["uuid", U1], name: "br0", datapath_type: "netdev" }] }]),
    { uuid: U1, name: "br0", datapathType: "netdev" },
  );
});

test("removePortOps() removes exactly that Port row from whichever bridge has it", () => {
  const ops = removePortOps({ uuid: U1, name: "tap7", externalIds: new Map(), interfaces: [] });
  assert.deepEqual(ops[0]!.where, [["_uuid", "==", ["uuid", U1]]]);
  assert.deepEqual(ops[1], {
    op: "mutate",
    table: "Bridge",
    where: [["ports", "includes", ["uuid", U1]]],
    mutations: [["ports", "delete", ["uuid", U1]]],
  });
  assert.throws(
    () => removePortOps({ uuid: "x", name: "t", externalIds: new Map(), interfaces: [] }),
    TypeError,
  );
});

test("parseListPorts() joins ports and interfaces and keeps only the bridge's ports", () => {
  assert.equal(listPortsOps("br0").length, 3);
  const ports = parseListPorts("br0", [
    { rows: [{ _uuid: ["uuid", U3], ports: ["set", [["uuid", U1]]] }] },
    {
      rows: [
        {
          _uuid: ["uuid", U1],
          name: "tap7",
          external_ids: ["map", [["vm-bridge-uid", "1000"]]],
          interfaces: ["uuid", U2],
        },
        // A port of another bridge.
        { _uuid: ["uuid", U3], name: "eth9", external_ids: ["map", []], interfaces: ["set", []] },
      ],
    },
    {
      rows: [{
        _uuid: ["uuid", U2],
        name: "tap7",
        type: "",
        ofport: 3,
        error: ["set", []],
        external_ids: ["map", [["iface-id", "alice:web1"]]],
      }],
    },
  ]);
  assert.equal(ports.length, 1);
  assert.equal(ports[0]!.name, "tap7");
  assert.equal(ports[0]!.externalIds.get("vm-bridge-uid"), "1000");
  assert.equal(ports[0]!.interfaceRows[0]!.ofport, 3);
  assert.equal(ports[0]!.interfaceRows[0]!.error, undefined);
  assert.equal(ports[0]!.interfaceRows[0]!.externalIds.get("iface-id"), "alice:web1");
  assert.throws(
    () => parseListPorts("br9", [{ rows: [] }, { rows: [] }, { rows: [] }]),
    /No Open vSwitch bridge named 'br9'/,
  );
});

test("waitAttachedOps() waits on the server until ofport is no longer empty", () => {
  const [wait] = waitAttachedOps("tap7", 1500.7);
  assert.equal(wait!.until, "!=");
  assert.deepEqual(wait!.rows, [{ ofport: ["set", []] }]);
  assert.equal(wait!.timeout, 1500);
});

test("setMembers() and mapEntries() read OVSDB's set and map encodings", () => {
  assert.deepEqual(setMembers(["uuid", U1]), [["uuid", U1]]);
  assert.deepEqual(setMembers(["set", [1, 2]]), [1, 2]);
  assert.deepEqual(setMembers(5), [5]);
  assert.deepEqual(setMembers(undefined), []);
  assert.deepEqual([...mapEntries(["map", [["a", "b"]]])], [["a", "b"]]);
  assert.throws(() => mapEntries(["set", []]), SyntaxError);
  assert.throws(() => mapEntries(["map", [["a", 1]]]), SyntaxError);
});

test("parseMessage() tells replies from requests and rejects anything else", () => {
  assert.deepEqual(parseMessage({ result: [], error: null, id: 3 }), {
    kind: "reply",
    id: 3,
    result: [],
    error: null,
  });
  assert.deepEqual(parseMessage({ method: "echo", params: [], id: "echo" }), {
    kind: "request",
    id: "echo",
    method: "echo",
    params: [],
  });
  for (const bad of [null, [], 3, { id: 1 }, { method: "echo", params: {}, id: 1 }]) {
    assert.throws(() => parseMessage(bad), SyntaxError);
  }
  assert.deepEqual(JSON.parse(echoReply("echo", [1])), { result: [1], error: null, id: "echo" });
});

test("JsonStreamSplitter finds message ends at every chunk boundary", () => {
  const a = JSON.stringify({ id: 1, result: [{ s: 'x}{]["\\"' }, "é€😀"], error: null });
  const b = JSON.stringify({ method: "echo", params: [], id: "echo" });
  const bytes = new TextEncoder().encode(`${a}\n${b}`);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const s = new JsonStreamSplitter();
    const out = [...s.push(bytes.subarray(0, cut)), ...s.push(bytes.subarray(cut))];
    assert.deepEqual(out, [a, b], `cut at ${cut}`);
    assert.equal(s.pending, 0);
  }
  // Byte by byte, too.
  const s = new JsonStreamSplitter();
  const out: string[] = [];
  for (const byte of bytes) out.push(...s.push(new Uint8Array([byte])));
  assert.deepEqual(out, [a, b]);
});

test("JsonStreamSplitter refuses a stream that is not JSON objects or grows without end", () => {
  assert.throws(() => new JsonStreamSplitter().push(new TextEncoder().encode("[1]")), SyntaxError);
  assert.throws(() => new JsonStreamSplitter().push(new TextEncoder().encode("{]]")), SyntaxError);
  const s = new JsonStreamSplitter(64);
  assert.throws(() => s.push(new TextEncoder().encode(`{"a":"${"x".repeat(100)}`)), RangeError);
  assert.throws(
    () => new JsonStreamSplitter().push(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d])),
    TypeError,
  );
});

test("staleVmPorts() lists only vm-bridge's ports whose device is gone", () => {
  const port = (name: string, ours: boolean) => ({
    uuid: U1,
    name,
    externalIds: new Map(ours ? [["vm-bridge-uid", "1000"]] : []),
    interfaces: [],
    interfaceRows: [],
  });
  const ports = [port("tap1", true), port("tap2", true), port("vxlan0", false), port("br0", false)];
  const live = new Set(["tap1", "br0"]);
  assert.deepEqual(staleVmPorts(ports, (n) => live.has(n)).map((p) => p.name), ["tap2"]);
});
