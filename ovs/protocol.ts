// The OVSDB management protocol (RFC 7047) as pure functions: the JSON-RPC messages the bridge
// service sends to ovsdb-server, the parsing of its replies, and the framing of JSON values on a
// byte stream. No I/O here (ovs/ovsdb.ts does it), so every request and reply is unit-tested.

/** The database ovs-vswitchd reads (vswitchd/vswitch.ovsschema). */
export const OVS_DB = "Open_vSwitch";

/** external_ids key: the uid of the client the tap was made for. */
export const EXT_UID = "vm-bridge-uid";
/** external_ids key: the pid of that client. */
export const EXT_PID = "vm-bridge-pid";
/** external_ids key on the Interface: the OVN logical port this tap binds to. */
export const EXT_IFACE_ID = "iface-id";

/** An OVSDB atom: string, integer, real, boolean or uuid (RFC 7047 5.1). */
export type Atom = string | number | boolean | UuidAtom | NamedUuidAtom;
/** A row reference. */
export type UuidAtom = ["uuid", string];
/** A reference to a row inserted earlier in the same transaction. */
export type NamedUuidAtom = ["named-uuid", string];
/** A column value: an atom (a one-element set), a set or a map (RFC 7047 5.1). */
export type Datum = Atom | ["set", Atom[]] | ["map", [Atom, Atom][]];
/** A row as JSON, column name to value. */
export type Row = Record<string, Datum>;
/** `[column, function, value]` (RFC 7047 5.1). */
export type Condition = [string, string, Datum];
/** One database operation of a transaction (RFC 7047 5.2). */
export type Operation = Record<string, unknown> & { op: string };

/** A JSON-RPC 1.0 message from the server: a reply or a request (echo). */
export type Message =
  | { kind: "reply"; id: number | string; result: unknown; error: unknown }
  | { kind: "request"; id: number | string | null; method: string; params: unknown[] };

/**
 * The server answered, but refused: a JSON-RPC error, or an operation that failed in a
 * transaction. `error` is OVSDB's error string ("constraint violation", "timed out", ...).
 */
export class OvsdbError extends Error {
  /** OVSDB's error string. */
  readonly error: string;
  /** The server's details text, when it sent one. */
  readonly details: string;
  /** Index of the failed operation in the transaction, or -1 (commit or RPC error). */
  readonly opIndex: number;

  /** Builds the error from the server's error object. */
  constructor(message: string, error: string, details: string, opIndex: number) {
    super(message);
    this.name = "OvsdbError";
    this.error = error;
    this.details = details;
    this.opIndex = opIndex;
  }
}

const uuidRe = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A uuid reference to an existing row; throws TypeError for anything but a canonical uuid. */
export function uuid(id: string): UuidAtom {
  if (!uuidRe.test(id)) throw new TypeError(`Not a row uuid: '${id}'`);
  return ["uuid", id];
}

/** A map datum from string pairs. */
export function mapDatum(map: ReadonlyMap<string, string>): ["map", [string, string][]] {
  return ["map", [...map]];
}

/** The text of a transact request (RFC 7047 4.1.3). */
export function transactRequest(id: number, ops: readonly Operation[]): string {
  return JSON.stringify({ method: "transact", params: [OVS_DB, ...ops], id });
}

/** The reply to the server's echo request (RFC 7047 4.1.11): the same params, the same id. */
export function echoReply(id: number | string | null, params: unknown[]): string {
  return JSON.stringify({ result: params, error: null, id });
}

/**
 * Checks the shape of one JSON-RPC message from the server. Throws SyntaxError for anything that
 * is neither a reply nor a request: the connection is then not to be trusted any further.
 */
export function parseMessage(value: unknown): Message {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SyntaxError("OVSDB message is not a JSON object");
  }
  const m = value as Record<string, unknown>;
  if (typeof m.method === "string") {
    const id = m.id;
    if (id !== null && typeof id !== "number" && typeof id !== "string") {
      throw new SyntaxError("OVSDB request has an invalid id");
    }
    if (!Array.isArray(m.params)) throw new SyntaxError("OVSDB request has no params array");
    return { kind: "request", id, method: m.method, params: m.params };
  }
  if ("result" in m && "error" in m && (typeof m.id === "number" || typeof m.id === "string")) {
    return { kind: "reply", id: m.id, result: m.result, error: m.error };
  }
  throw new SyntaxError("OVSDB message is neither a reply nor a request");
}

function errorText(e: unknown): { error: string; details: string } {
  if (typeof e === "string") return { error: e, details: "" };
  if (typeof e === "object" && e !== null) {
    const o = e as Record<string, unknown>;
    return {
      error: typeof o.error === "string" ? o.error : JSON.stringify(e),
      details: typeof o.details === "string" ? o.details : "",
    };
  }
  return { error: JSON.stringify(e), details: "" };
}

/**
 * The per-operation results of a transact reply. RFC 7047 4.1.3: one element per operation; a
 * failed operation has an error object in its place and the operations after it did not run
 * (ovsdb-server leaves them out, the RFC allows null); an error at commit is one extra element.
 * Throws OvsdbError for any of those, SyntaxError for a malformed reply.
 */
export function transactResults(
  reply: { result: unknown; error: unknown },
  opCount: number,
): Record<string, unknown>[] {
  if (reply.error !== null) {
    const { error, details } = errorText(reply.error);
    throw new OvsdbError(`${error}${details ? `: ${details}` : ""}`, error, details, -1);
  }
  if (!Array.isArray(reply.result)) throw new SyntaxError("OVSDB transact result is not an array");
  const results = reply.result as unknown[];
  results.forEach((r, i) => {
    if (typeof r === "object" && r !== null && "error" in r) {
      const { error, details } = errorText(r);
      const where = i < opCount ? i : -1;
      throw new OvsdbError(`${error}${details ? `: ${details}` : ""}`, error, details, where);
    }
  });
  if (results.length < opCount) {
    throw new SyntaxError(`OVSDB transact returned ${results.length} results for ${opCount}`);
  }
  return results.slice(0, opCount).map((r, i) => {
    if (typeof r !== "object" || r === null || Array.isArray(r)) {
      throw new SyntaxError(`OVSDB transact result ${i} is not an object`);
    }
    return r as Record<string, unknown>;
  });
}

/** The rows of a select result. */
export function selectRows(result: Record<string, unknown>): Row[] {
  if (!Array.isArray(result.rows)) throw new SyntaxError("OVSDB select result has no rows");
  return result.rows as Row[];
}

/** The count of an update, mutate or delete result. */
export function resultCount(result: Record<string, unknown>): number {
  if (typeof result.count !== "number") throw new SyntaxError("OVSDB result has no count");
  return result.count;
}

/** The members of a set datum (a bare atom is a one-element set). */
export function setMembers(d: Datum | undefined): Atom[] {
  if (d === undefined) return [];
  if (Array.isArray(d) && d[0] === "set") return d[1] as Atom[];
  if (Array.isArray(d) && d[0] === "map") throw new SyntaxError("Expected an OVSDB set, got a map");
  return [d as Atom];
}

/** A map datum as a Map of strings (keys and values of external_ids are strings). */
export function mapEntries(d: Datum | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (d === undefined) return out;
  if (!Array.isArray(d) || d[0] !== "map") throw new SyntaxError("Expected an OVSDB map");
  for (const pair of d[1] as unknown[]) {
    if (!Array.isArray(pair) || typeof pair[0] !== "string" || typeof pair[1] !== "string") {
      throw new SyntaxError("Expected a string-to-string OVSDB map");
    }
    out.set(pair[0], pair[1]);
  }
  return out;
}

/** The uuid text of a uuid atom. */
export function uuidText(a: Atom | Datum | undefined): string {
  if (Array.isArray(a) && a[0] === "uuid" && typeof a[1] === "string") return a[1];
  throw new SyntaxError(`Expected an OVSDB uuid, got ${JSON.stringify(a)}`);
}

/** An integer atom, or undefined for the empty set (an optional column with no value). */
function optionalInt(d: Datum | undefined): number | undefined {
  const m = setMembers(d);
  return typeof m[0] === "number" ? m[0] : undefined;
}

/** A string atom, or undefined for the empty set. */
function optionalString(d: Datum | undefined): string | undefined {
  const m = setMembers(d);
  return typeof m[0] === "string" ? m[0] : undefined;
}

// ---------------------------------------------------------------------------------------------
// Names and external_ids: what the service may write

// deno-lint-ignore no-control-regex -- control characters are what is rejected
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

/**
 * Checks an interface or bridge name as the kernel would accept it (1 to 15 bytes, no '/', no
 * space, not "." or ".."); throws TypeError otherwise. OVSDB would store any string, but every
 * name we write must also be a kernel device name.
 */
export function checkDeviceName(name: string): void {
  const bytes = new TextEncoder().encode(name);
  if (
    bytes.length === 0 || bytes.length > 15 || name === "." || name === ".." ||
    /[\s/:]/.test(name) || CONTROL.test(name)
  ) {
    throw new TypeError(`Invalid interface name: '${JSON.stringify(name).slice(1, -1)}'`);
  }
}

/**
 * Checks external_ids before they are written: keys are short lower-case words
 * (`[a-z0-9][a-z0-9_.:-]*`, at most 64), values at most 256 characters with no control
 * characters. Throws TypeError. The values are printed by `ovs-vsctl` and read by admins.
 */
export function checkExternalIds(ids: ReadonlyMap<string, string>): void {
  for (const [k, v] of ids) {
    if (!/^[a-z0-9][a-z0-9_.:-]{0,63}$/.test(k)) {
      throw new TypeError(`Invalid external_ids key: '${JSON.stringify(k).slice(1, -1)}'`);
    }
    if (v.length > 256 || CONTROL.test(v)) {
      throw new TypeError(
        `Invalid external_ids value for ${k}: '${JSON.stringify(v).slice(1, -1)}'`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The transactions

const eq = (column: string, value: Datum): Condition => [column, "==", value];

/** What a Bridge row says, as far as the service cares. */
export interface BridgeRow {
  /** The row uuid. */
  uuid: string;
  /** The bridge name. */
  name: string;
  /** "" (the kernel datapath, "system") or "netdev" (userspace). */
  datapathType: string;
}

/** Operations that look a bridge up by name. */
export function findBridgeOps(name: string): Operation[] {
  return [{
    op: "select",
    table: "Bridge",
    where: [eq("name", name)],
    columns: ["_uuid", "name", "datapath_type"],
  }];
}

/** The bridge from the results of {@linkcode findBridgeOps}, or undefined. */
export function parseFindBridge(results: Record<string, unknown>[]): BridgeRow | undefined {
  const rows = selectRows(results[0] ?? {});
  if (rows.length > 1) throw new SyntaxError("OVSDB returned two bridges with one name");
  const row = rows[0];
  if (row === undefined) return undefined;
  return {
    uuid: uuidText(row._uuid),
    name: String(row.name),
    datapathType: typeof row.datapath_type === "string" ? row.datapath_type : "",
  };
}

/** What the service asks for when it adds a tap to an Open vSwitch bridge. */
export interface AddPortRequest {
  /** The Open vSwitch bridge. */
  bridge: string;
  /** The tap (kernel device name); the Port and the Interface get this name. */
  ifname: string;
  /** external_ids written on both the Port and the Interface (who asked: uid, pid, ...). */
  externalIds: ReadonlyMap<string, string>;
  /**
   * The OVN logical port to bind to, already authorized (ovs/iface_id.ts); written as
   * `external_ids:iface-id` on the Interface only, and refused when another Interface has it.
   */
  ifaceId?: string;
}

/**
 * One atomic transaction: the bridge must exist, no other Interface may carry the same
 * iface-id, then insert the Interface and the Port and add the Port to the bridge's ports (as
 * `ovs-vsctl add-port` does). A tap of the kernel is an Interface of type "" ("system"): the
 * switch opens the existing device; type "tap" would make it open /dev/net/tun itself.
 */
export function addPortOps(req: AddPortRequest): Operation[] {
  checkDeviceName(req.bridge);
  checkDeviceName(req.ifname);
  checkExternalIds(req.externalIds);
  if (req.externalIds.has(EXT_IFACE_ID)) {
    throw new TypeError(`external_ids may not carry ${EXT_IFACE_ID}: pass ifaceId`);
  }
  const ifaceIds = new Map(req.externalIds);
  const ops: Operation[] = [
    // timeout 0: the condition is checked once; a missing bridge fails the whole transaction.
    {
      op: "wait",
      table: "Bridge",
      where: [eq("name", req.bridge)],
      columns: ["name"],
      until: "==",
      rows: [{ name: req.bridge }],
      timeout: 0,
    },
  ];
  if (req.ifaceId !== undefined) {
    checkExternalIds(new Map([[EXT_IFACE_ID, req.ifaceId]]));
    ifaceIds.set(EXT_IFACE_ID, req.ifaceId);
    ops.push({
      op: "wait",
      table: "Interface",
      where: [["external_ids", "includes", mapDatum(new Map([[EXT_IFACE_ID, req.ifaceId]]))]],
      columns: ["name"],
      until: "==",
      rows: [],
      timeout: 0,
    });
  }
  ops.push(
    {
      op: "insert",
      table: "Interface",
      row: { name: req.ifname, type: "", external_ids: mapDatum(ifaceIds) },
      "uuid-name": "vmb_iface",
    },
    {
      op: "insert",
      table: "Port",
      row: {
        name: req.ifname,
        interfaces: ["named-uuid", "vmb_iface"],
        external_ids: mapDatum(req.externalIds),
      },
      "uuid-name": "vmb_port",
    },
    {
      op: "mutate",
      table: "Bridge",
      where: [eq("name", req.bridge)],
      mutations: [["ports", "insert", ["set", [["named-uuid", "vmb_port"]]]]],
    },
  );
  return ops;
}

/** Row uuids of what {@linkcode addPortOps} inserted. */
export interface AddedPort {
  /** The Port row. */
  port: string;
  /** The Interface row. */
  iface: string;
}

/**
 * Turns the server's refusal of {@linkcode addPortOps} into an error that says what was wrong:
 * no such bridge, iface-id taken, name taken. Anything else is returned unchanged.
 */
export function addPortError(req: AddPortRequest, e: unknown): unknown {
  if (!(e instanceof OvsdbError)) return e;
  const again = (message: string) => new OvsdbError(message, e.error, e.details, e.opIndex);
  if (e.opIndex === 0 && e.error === "timed out") {
    return again(`No Open vSwitch bridge named '${req.bridge}'`);
  }
  if (e.opIndex === 1 && req.ifaceId !== undefined && e.error === "timed out") {
    return again(
      `The iface-id '${req.ifaceId}' is already bound to another Open vSwitch interface`,
    );
  }
  if (e.error === "constraint violation") {
    return again(
      `A port or interface named '${req.ifname}' already exists in the Open vSwitch database`,
    );
  }
  return e;
}

/** The row uuids from the results of {@linkcode addPortOps}. */
export function parseAddPort(req: AddPortRequest, results: Record<string, unknown>[]): AddedPort {
  const n = results.length;
  const iface = results[n - 3];
  const port = results[n - 2];
  const mutate = results[n - 1];
  if (iface === undefined || port === undefined || mutate === undefined) {
    throw new SyntaxError("OVSDB add-port reply is too short");
  }
  if (resultCount(mutate) !== 1) {
    throw new OvsdbError(`No Open vSwitch bridge named '${req.bridge}'`, "not found", "", n - 1);
  }
  return { port: uuidText(port.uuid as Datum), iface: uuidText(iface.uuid as Datum) };
}

/** Operations that read a port by name with its Interface rows, for removal or inspection. */
export function findPortOps(ifname: string): Operation[] {
  checkDeviceName(ifname);
  return [{
    op: "select",
    table: "Port",
    where: [eq("name", ifname)],
    columns: ["_uuid", "name", "external_ids", "interfaces"],
  }];
}

/** A port as found by {@linkcode findPortOps}. */
export interface PortRow {
  /** The row uuid. */
  uuid: string;
  /** The port name (the tap's name). */
  name: string;
  /** The Port's external_ids. */
  externalIds: Map<string, string>;
  /** Interface row uuids. */
  interfaces: string[];
}

function portRow(row: Row): PortRow {
  return {
    uuid: uuidText(row._uuid),
    name: String(row.name),
    externalIds: mapEntries(row.external_ids),
    interfaces: setMembers(row.interfaces).map(uuidText),
  };
}

/** The port from the results of {@linkcode findPortOps}, or undefined. */
export function parseFindPort(results: Record<string, unknown>[]): PortRow | undefined {
  const rows = selectRows(results[0] ?? {});
  if (rows.length > 1) throw new SyntaxError("OVSDB returned two ports with one name");
  return rows[0] === undefined ? undefined : portRow(rows[0]);
}

/**
 * One atomic transaction that detaches a port found by {@linkcode findPortOps}: the Port must
 * still be that row, then it is deleted from every bridge's ports. Port and Interface are not
 * root tables, so ovsdb-server garbage-collects both once nothing refers to them (this is what
 * `ovs-vsctl del-port` does).
 */
export function removePortOps(port: PortRow): Operation[] {
  return [
    {
      op: "wait",
      table: "Port",
      where: [eq("_uuid", uuid(port.uuid))],
      columns: ["name"],
      until: "==",
      rows: [{ name: port.name }],
      timeout: 0,
    },
    {
      op: "mutate",
      table: "Bridge",
      where: [["ports", "includes", uuid(port.uuid)]],
      mutations: [["ports", "delete", uuid(port.uuid)]],
    },
  ];
}

/** Interface state as ovs-vswitchd reports it. */
export interface InterfaceRow {
  /** The row uuid. */
  uuid: string;
  /** The device name. */
  name: string;
  /** "" for a kernel device, or "internal", "vxlan", ... */
  type: string;
  /** The OpenFlow port number: undefined until ovs-vswitchd saw the row, -1 when it failed. */
  ofport: number | undefined;
  /** ovs-vswitchd's error text for this interface, if any. */
  error: string | undefined;
  /** The Interface's external_ids. */
  externalIds: Map<string, string>;
}

/** A port of a bridge with its interfaces. */
export interface PortInfo extends PortRow {
  /** Its Interface rows. */
  interfaceRows: InterfaceRow[];
}

/** Operations that read a bridge's ports and every Port and Interface (joined by the parser). */
export function listPortsOps(bridge: string): Operation[] {
  checkDeviceName(bridge);
  return [
    { op: "select", table: "Bridge", where: [eq("name", bridge)], columns: ["_uuid", "ports"] },
    {
      op: "select",
      table: "Port",
      where: [],
      columns: ["_uuid", "name", "external_ids", "interfaces"],
    },
    {
      op: "select",
      table: "Interface",
      where: [],
      columns: ["_uuid", "name", "type", "ofport", "error", "external_ids"],
    },
  ];
}

/** Parses an Interface row. */
export function interfaceRow(row: Row): InterfaceRow {
  return {
    uuid: uuidText(row._uuid),
    name: String(row.name),
    type: typeof row.type === "string" ? row.type : "",
    ofport: optionalInt(row.ofport),
    error: optionalString(row.error),
    externalIds: mapEntries(row.external_ids),
  };
}

/**
 * The ports of the bridge from the results of {@linkcode listPortsOps}, sorted by name; throws
 * OvsdbError when there is no such bridge.
 */
export function parseListPorts(bridge: string, results: Record<string, unknown>[]): PortInfo[] {
  const [b, p, i] = [results[0] ?? {}, results[1] ?? {}, results[2] ?? {}].map(selectRows);
  const br = b![0];
  if (br === undefined) {
    throw new OvsdbError(`No Open vSwitch bridge named '${bridge}'`, "not found", "", 0);
  }
  const want = new Set(setMembers(br.ports).map(uuidText));
  const ifaces = new Map(i!.map((r) => interfaceRow(r)).map((r) => [r.uuid, r]));
  return p!.map(portRow).filter((r) => want.has(r.uuid)).map((r) => ({
    ...r,
    interfaceRows: r.interfaces.map((u) => ifaces.get(u)).filter((x) => x !== undefined),
  })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The ports vm-bridge added (their Port carries `vm-bridge-uid`) whose kernel device is gone:
 * what a service finds at start-up after a crash between a tap's end and its cleanup. `exists`
 * asks the kernel (if_nametoindex). An administrator's port is never listed.
 */
export function staleVmPorts(
  ports: readonly PortInfo[],
  exists: (ifname: string) => boolean,
): PortInfo[] {
  return ports.filter((p) => p.externalIds.has(EXT_UID) && !exists(p.name));
}

/**
 * Operations that wait (at most `timeoutMs`, on the server) until ovs-vswitchd has given the
 * interface an OpenFlow port number or an error, then read it back.
 */
export function waitAttachedOps(ifname: string, timeoutMs: number): Operation[] {
  checkDeviceName(ifname);
  return [
    {
      op: "wait",
      table: "Interface",
      where: [eq("name", ifname)],
      columns: ["ofport"],
      until: "!=",
      rows: [{ ofport: ["set", []] }],
      timeout: Math.max(0, Math.floor(timeoutMs)),
    },
    {
      op: "select",
      table: "Interface",
      where: [eq("name", ifname)],
      columns: ["_uuid", "name", "type", "ofport", "error", "external_ids"],
    },
  ];
}

/** Operations that create the Open_vSwitch root row when there is none (`ovs-vsctl init`). */
export function initOps(): Operation[] {
  return [
    {
      op: "wait",
      table: "Open_vSwitch",
      where: [],
      columns: ["_uuid"],
      until: "==",
      rows: [],
      timeout: 0,
    },
    { op: "insert", table: "Open_vSwitch", row: {} },
  ];
}

/**
 * Operations that create a bridge with its internal port (`ovs-vsctl add-br`), for tests and the
 * demo; the service never creates bridges. `datapathType` "netdev" is the userspace datapath.
 */
export function addBridgeOps(name: string, datapathType: string): Operation[] {
  checkDeviceName(name);
  return [
    {
      op: "insert",
      table: "Interface",
      row: { name, type: "internal" },
      "uuid-name": "vmb_iface",
    },
    {
      op: "insert",
      table: "Port",
      row: { name, interfaces: ["named-uuid", "vmb_iface"] },
      "uuid-name": "vmb_port",
    },
    {
      op: "insert",
      table: "Bridge",
      row: { name, ports: ["named-uuid", "vmb_port"], datapath_type: datapathType },
      "uuid-name": "vmb_bridge",
    },
    {
      op: "mutate",
      table: "Open_vSwitch",
      where: [],
      mutations: [["bridges", "insert", ["set", [["named-uuid", "vmb_bridge"]]]]],
    },
  ];
}

/** Operations that add a tunnel port (type "vxlan" or "geneve") with its options. */
export function addTunnelOps(
  bridge: string,
  name: string,
  type: "vxlan" | "geneve",
  options: ReadonlyMap<string, string>,
): Operation[] {
  checkDeviceName(bridge);
  checkDeviceName(name);
  return [
    {
      op: "insert",
      table: "Interface",
      row: { name, type, options: mapDatum(options) },
      "uuid-name": "vmb_iface",
    },
    {
      op: "insert",
      table: "Port",
      row: { name, interfaces: ["named-uuid", "vmb_iface"] },
      "uuid-name": "vmb_port",
    },
    {
      op: "mutate",
      table: "Bridge",
      where: [eq("name", bridge)],
      mutations: [["ports", "insert", ["set", [["named-uuid", "vmb_port"]]]]],
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Framing

/**
 * Splits a byte stream into JSON texts. OVSDB sends JSON-RPC messages back to back with no
 * delimiter (RFC 7047 4: "JSON-RPC over a stream"), so the end of a message is the brace that
 * closes its top-level object. Strings are skipped with their escapes; braces are ASCII and never
 * part of a UTF-8 multi-byte sequence, so the split works on bytes. A message longer than
 * `limit` bytes is an error: a misbehaving server must not make the service buffer without end.
 */
export class JsonStreamSplitter {
  #buf: Uint8Array = new Uint8Array(0);
  #scan = 0; // bytes of #buf already scanned
  #depth = 0;
  #inString = false;
  #escape = false;
  #start = -1; // offset of the current message's first byte, -1 between messages
  readonly #limit: number;

  /** `limit`: the largest message accepted, in bytes. */
  constructor(limit = 16 << 20) {
    this.#limit = limit;
  }

  /** Feeds bytes; returns every complete message text they finish (possibly none). */
  push(chunk: Uint8Array): string[] {
    const joined = new Uint8Array(this.#buf.length + chunk.length);
    joined.set(this.#buf);
    joined.set(chunk, this.#buf.length);
    this.#buf = joined;
    const out: string[] = [];
    const dec = new TextDecoder("utf-8", { fatal: true });
    let consumed = 0;
    for (let i = this.#scan; i < joined.length; i++) {
      const c = joined[i]!;
      if (this.#start < 0) {
        if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
          consumed = i + 1;
          continue;
        }
        if (c !== 0x7b) throw new SyntaxError("OVSDB stream does not start a JSON object");
        this.#start = i;
      }
      if (this.#inString) {
        if (this.#escape) this.#escape = false;
        else if (c === 0x5c) this.#escape = true;
        else if (c === 0x22) this.#inString = false;
        continue;
      }
      if (c === 0x22) this.#inString = true;
      else if (c === 0x7b || c === 0x5b) this.#depth++;
      else if (c === 0x7d || c === 0x5d) {
        this.#depth--;
        if (this.#depth < 0) throw new SyntaxError("OVSDB stream has an unbalanced bracket");
        if (this.#depth === 0) {
          out.push(dec.decode(joined.subarray(this.#start, i + 1)));
          this.#start = -1;
          consumed = i + 1;
        }
      }
    }
    this.#buf = joined.slice(consumed);
    this.#scan = this.#buf.length;
    if (this.#start >= 0) this.#start -= consumed;
    if (this.#buf.length > this.#limit) {
      throw new RangeError(`OVSDB message exceeds ${this.#limit} bytes`);
    }
    return out;
  }

  /** Bytes of an unfinished message held back. */
  get pending(): number {
    return this.#buf.length;
  }
}
