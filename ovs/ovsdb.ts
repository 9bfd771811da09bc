// A small client of the Open vSwitch database (RFC 7047, JSON-RPC over ovsdb-server's Unix
// socket): what the bridge service needs to put a tap on an Open vSwitch bridge and take it off
// again. No ovs-vsctl, no shell. The messages are built and parsed in ovs/protocol.ts.
//
// Transport: a libc AF_UNIX stream socket (sys/libc.ts), not Deno.connect. The service already
// runs with --allow-ffi and nothing else; Deno.connect({transport: "unix"}) would also need
// --allow-read and --allow-write for the socket path compiled into the binary, so a configured
// path other than the compiled one would fail with a permission error. The socket is
// non-blocking and every wait is a poll(2) on a worker thread (pollAsync): no privileged call
// runs there, and the service's event loop keeps serving other clients while the database
// answers.

import {
  addBridgeOps,
  type AddedPort,
  addPortError,
  addPortOps,
  type AddPortRequest,
  addTunnelOps,
  type BridgeRow,
  checkDeviceName,
  echoReply,
  EXT_UID,
  findBridgeOps,
  findPortOps,
  initOps,
  type InterfaceRow,
  interfaceRow,
  JsonStreamSplitter,
  listPortsOps,
  type Operation,
  OvsdbError,
  parseAddPort,
  parseFindBridge,
  parseFindPort,
  parseListPorts,
  parseMessage,
  type PortInfo,
  removePortOps,
  resultCount,
  selectRows,
  transactRequest,
  transactResults,
  waitAttachedOps,
} from "./protocol.ts";
import { Fd } from "../sys/fd.ts";
import {
  close,
  connectUnixStream,
  E,
  ifNameToIndex,
  O,
  open,
  OsError,
  POLL,
  pollAsync,
  read,
  sendSome,
} from "../sys/libc.ts";

export { OvsdbError, staleVmPorts } from "./protocol.ts";
export type { AddedPort, AddPortRequest, BridgeRow, InterfaceRow, PortInfo } from "./protocol.ts";

/** Debian's ovsdb-server socket (`/run` and `/var/run` are the same directory). */
export const DEFAULT_OVSDB_SOCKET = "/var/run/openvswitch/db.sock";

/** How long one request may take by default, from sending to the whole reply. */
export const DEFAULT_TIMEOUT_MS = 5000;

/**
 * The database cannot be used at all: the socket is missing or refuses connections, the server
 * closed the connection, did not answer in time, or sent something that is not OVSDB. The
 * message starts with "Open vSwitch database not reachable at 'PATH'".
 */
export class OvsdbUnreachableError extends Error {
  /** The socket path. */
  readonly path: string;

  /** Builds the error; `detail` says what went wrong. */
  constructor(path: string, detail: string) {
    super(`Open vSwitch database not reachable at '${path}': ${detail}`);
    this.name = "OvsdbUnreachableError";
    this.path = path;
  }
}

/** Where the database is and how long to wait for it. */
export interface OvsdbOptions {
  /** The database socket (default {@linkcode DEFAULT_OVSDB_SOCKET}). */
  path?: string;
  /** Longest time one request may take, in ms (default {@linkcode DEFAULT_TIMEOUT_MS}). */
  timeoutMs?: number;
}

/** What {@linkcode Ovsdb.removePort} should do with a port vm-bridge did not create. */
export interface RemovePortOptions {
  /**
   * Remove the port even when its external_ids do not carry `vm-bridge-uid` (default false:
   * refuse, so that the service never detaches an administrator's uplink or tunnel port).
   */
  force?: boolean;
  /**
   * Remove the port only if it is this Port row (the `port` uuid {@linkcode Ovsdb.addPort}
   * returned). The kernel reuses tap names at once: after a VM's tap went, a new VM's tap may
   * already carry the same name, and its port must not be removed in the old one's stead.
   */
  expectUuid?: string;
}

/**
 * One connection to ovsdb-server. Requests are sent one at a time (a second request waits for
 * the first), each bounded by the timeout; after a timeout, a closed connection or a malformed
 * message the connection is closed and every later request fails at once.
 *
 * Requires `--allow-ffi`.
 *
 * @example Is br-int an Open vSwitch bridge?
 * ```ts ignore
 * import { Ovsdb } from "./ovsdb.ts";
 *
 * using db = Ovsdb.connect({ path: "/run/openvswitch/db.sock" });
 * console.log(await db.isOvsBridge("br-int"));
 * ```
 */
export class Ovsdb implements Disposable {
  readonly #path: string;
  readonly #timeoutMs: number;
  #sock: Fd | undefined;
  #broken: string | undefined;
  #nextId = 1;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #splitter = new JsonStreamSplitter();
  readonly #inbox: unknown[] = [];
  /** The read buffer, one per connection (the splitter copies what it keeps; #queue serializes). */
  readonly #rx = new Uint8Array(new ArrayBuffer(64 * 1024));

  private constructor(path: string, timeoutMs: number, sock: Fd) {
    this.#path = path;
    this.#timeoutMs = timeoutMs;
    this.#sock = sock;
  }

  /**
   * Connects to the database socket. Throws {@linkcode OvsdbUnreachableError} when it is missing
   * or nobody listens ("Open vSwitch database not reachable at '/run/openvswitch/db.sock': No
   * such file or directory").
   */
  static connect(options: OvsdbOptions = {}): Ovsdb {
    const path = options.path ?? DEFAULT_OVSDB_SOCKET;
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`Invalid OVSDB timeout: ${timeoutMs}`);
    }
    try {
      return new Ovsdb(path, timeoutMs, new Fd(connectUnixStream(path)));
    } catch (e) {
      if (e instanceof OsError) throw new OvsdbUnreachableError(path, e.strerror);
      if (e instanceof RangeError || e instanceof TypeError) {
        throw new OvsdbUnreachableError(path, e.message);
      }
      throw e;
    }
  }

  /** The socket path. */
  get path(): string {
    return this.#path;
  }

  /**
   * Sends one transaction and returns the per-operation results. Throws OvsdbError when the
   * server refused it, {@linkcode OvsdbUnreachableError} when the connection failed or timed out
   * (the transaction may then have been committed or not).
   */
  transact(
    ops: readonly Operation[],
    timeoutMs = this.#timeoutMs,
  ): Promise<Record<string, unknown>[]> {
    const run = this.#queue.then(() => this.#transact(ops, timeoutMs));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #transact(
    ops: readonly Operation[],
    timeoutMs: number,
  ): Promise<Record<string, unknown>[]> {
    const id = this.#nextId++;
    const deadline = Date.now() + timeoutMs;
    await this.#send(transactRequest(id, ops), deadline);
    for (;;) {
      const msg = await this.#receive(deadline, timeoutMs);
      if (msg.kind === "request") {
        // The server's keepalive; any other request from the server is not ours to answer.
        if (msg.method === "echo") await this.#send(echoReply(msg.id, msg.params), deadline);
        continue;
      }
      if (msg.id !== id) continue; // a late reply to a request that timed out cannot happen: we close
      return transactResults(msg, ops.length);
    }
  }

  #fd(): number {
    if (this.#broken !== undefined || this.#sock === undefined) {
      throw new OvsdbUnreachableError(this.#path, this.#broken ?? "the connection is closed");
    }
    return this.#sock.value;
  }

  #fail(detail: string): never {
    this.#broken ??= detail;
    this.#sock?.close();
    this.#sock = undefined;
    throw new OvsdbUnreachableError(this.#path, detail);
  }

  async #send(text: string, deadline: number): Promise<void> {
    const bytes = new TextEncoder().encode(text);
    let off = 0;
    while (off < bytes.length) {
      const fd = this.#fd();
      let n: number;
      try {
        n = sendSome(fd, bytes.slice(off));
      } catch (e) {
        this.#fail(e instanceof OsError ? e.strerror : String(e));
      }
      if (n > 0) {
        off += n;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) this.#fail("timed out sending a request");
      await pollAsync([fd], [POLL.OUT], Math.min(left, 1000));
    }
  }

  async #receive(
    deadline: number,
    timeoutMs: number,
  ): Promise<ReturnType<typeof parseMessage>> {
    const buf = this.#rx;
    for (;;) {
      const queued = this.#inbox.shift();
      if (queued !== undefined) {
        try {
          return parseMessage(queued);
        } catch (e) {
          this.#fail(`malformed message: ${(e as Error).message}`);
        }
      }
      const fd = this.#fd();
      let n: number;
      try {
        n = read(fd, buf, "recv");
      } catch (e) {
        this.#fail(e instanceof OsError ? e.strerror : String(e));
      }
      if (n === 0) this.#fail("the server closed the connection");
      if (n > 0) {
        try {
          for (const text of this.#splitter.push(buf.subarray(0, n))) {
            this.#inbox.push(JSON.parse(text));
          }
        } catch (e) {
          this.#fail(`malformed message: ${(e as Error).message}`);
        }
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) this.#fail(`no answer within ${timeoutMs} ms`);
      // Short slices: a closed fd is noticed, and no worker thread waits long after a timeout.
      await pollAsync([fd], [POLL.IN], Math.min(left, 500));
    }
  }

  /** The Bridge row named `name`, or undefined when the database has none. */
  async findBridge(name: string): Promise<BridgeRow | undefined> {
    return parseFindBridge(await this.transact(findBridgeOps(name)));
  }

  /**
   * True when the database has a bridge named `name`. This is the database half of the
   * decision; {@linkcode classifyBridge} combines it with what the kernel says.
   */
  async isOvsBridge(name: string): Promise<boolean> {
    return (await this.findBridge(name)) !== undefined;
  }

  /**
   * Adds `ifname` (an existing kernel device, usually the tap just made) as a port of `bridge`
   * with the given external_ids, and the iface-id on the Interface when given (authorize it
   * first with ovs/iface_id.ts). One atomic transaction: on any refusal nothing is written.
   * Throws OvsdbError with a message naming the problem (no such bridge, iface-id already
   * bound, name taken).
   */
  async addPort(req: AddPortRequest): Promise<AddedPort> {
    const ops = addPortOps(req);
    let results: Record<string, unknown>[];
    try {
      results = await this.transact(ops);
    } catch (e) {
      throw addPortError(req, e);
    }
    return parseAddPort(req, results);
  }

  /**
   * Waits (on the server, at most `timeoutMs`) until ovs-vswitchd has taken the interface in:
   * returns its row with the OpenFlow port number. Throws OvsdbError when the switch reported
   * an error for it or did not take it in time (is ovs-vswitchd running?).
   */
  async waitAttached(ifname: string, timeoutMs = this.#timeoutMs): Promise<InterfaceRow> {
    let results: Record<string, unknown>[];
    try {
      results = await this.transact(waitAttachedOps(ifname, timeoutMs), timeoutMs + 2000);
    } catch (e) {
      if (e instanceof OvsdbError && e.error === "timed out") {
        throw new OvsdbError(
          `Open vSwitch did not attach '${ifname}' within ${timeoutMs} ms: is ovs-vswitchd running?`,
          e.error,
          e.details,
          e.opIndex,
        );
      }
      throw e;
    }
    const row = selectRows(results[1]!)[0];
    if (row === undefined) {
      throw new OvsdbError(`No Open vSwitch interface named '${ifname}'`, "not found", "", 1);
    }
    const iface = interfaceRow(row);
    if (iface.ofport === undefined || iface.ofport < 0 || iface.error !== undefined) {
      throw new OvsdbError(
        `Open vSwitch could not attach '${ifname}': ${iface.error ?? "no OpenFlow port"}`,
        "attach failed",
        iface.error ?? "",
        1,
      );
    }
    return iface;
  }

  /**
   * Removes the port named `ifname` from its bridge (the database then drops the Port and
   * Interface rows). Returns false when there is no such port (already gone) or it is not the
   * `expectUuid` row, true when it was removed. Refuses (OvsdbError) a port that vm-bridge did
   * not add, unless `force`.
   */
  async removePort(ifname: string, options: RemovePortOptions = {}): Promise<boolean> {
    const port = parseFindPort(await this.transact(findPortOps(ifname)));
    if (port === undefined) return false;
    if (options.expectUuid !== undefined && port.uuid !== options.expectUuid) return false;
    if (!options.force && !port.externalIds.has(EXT_UID)) {
      throw new OvsdbError(
        `Refusing to remove Open vSwitch port '${ifname}': it was not added by vm-bridge (no external_ids:${EXT_UID})`,
        "not ours",
        "",
        -1,
      );
    }
    try {
      const results = await this.transact(removePortOps(port));
      return resultCount(results[1]!) > 0;
    } catch (e) {
      // The wait failed: the row went away (or was replaced) between the two transactions.
      if (e instanceof OvsdbError && e.opIndex === 0 && e.error === "timed out") return false;
      throw e;
    }
  }

  /** The ports of `bridge` with their interfaces, sorted by name. */
  async listPorts(bridge: string): Promise<PortInfo[]> {
    return parseListPorts(bridge, await this.transact(listPortsOps(bridge)));
  }

  /** Creates the Open_vSwitch root row if there is none (`ovs-vsctl init`); for tests. */
  async init(): Promise<void> {
    try {
      await this.transact(initOps());
    } catch (e) {
      if (e instanceof OvsdbError && e.opIndex === 0 && e.error === "timed out") return;
      throw e;
    }
  }

  /** Creates a bridge (`ovs-vsctl add-br`); for tests and the demo, never the service. */
  async addBridge(name: string, datapathType = "netdev"): Promise<void> {
    const results = await this.transact(addBridgeOps(name, datapathType));
    if (resultCount(results[3]!) !== 1) {
      throw new OvsdbError("The Open_vSwitch table has no row: call init() first", "", "", 3);
    }
  }

  /** Adds a VXLAN or Geneve tunnel port to a bridge; for tests and the demo. */
  async addTunnel(
    bridge: string,
    name: string,
    type: "vxlan" | "geneve",
    options: ReadonlyMap<string, string>,
  ): Promise<void> {
    const results = await this.transact(addTunnelOps(bridge, name, type, options));
    if (resultCount(results[2]!) !== 1) {
      throw new OvsdbError(`No Open vSwitch bridge named '${bridge}'`, "not found", "", 2);
    }
  }

  /** Closes the connection; calling it again does nothing. */
  close(): void {
    this.#broken ??= "the connection is closed";
    this.#sock?.close();
    this.#sock = undefined;
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Connects, runs `fn`, and closes: one connection per service decision, so nothing is kept
 * open between VMs and a restarted ovsdb-server is simply reconnected to next time.
 */
export async function withOvsdb<T>(
  options: OvsdbOptions,
  fn: (db: Ovsdb) => Promise<T>,
): Promise<T> {
  using db = Ovsdb.connect(options);
  return await fn(db);
}

// ---------------------------------------------------------------------------------------------
// Kernel and database together

/** What the kernel says about a device name. */
export interface KernelBridgeFacts {
  /** A network device with this name exists in the caller's namespace. */
  exists: boolean;
  /** It is a Linux bridge (`/sys/class/net/NAME/bridge` exists). */
  linuxBridge: boolean;
}

/**
 * Asks the kernel about `name` in the caller's network namespace: does a device exist
 * (if_nametoindex), and is it a Linux bridge (sysfs has a `bridge` directory only for those).
 * sysfs shows the namespace it was mounted in, which is the caller's under `ip netns exec` and
 * systemd. Throws TypeError for a name that is not a valid device name (no path tricks).
 */
export function kernelBridgeFacts(name: string): KernelBridgeFacts {
  checkDeviceName(name);
  const exists = ifNameToIndex(name) !== 0;
  let linuxBridge = false;
  if (exists) {
    try {
      close(open(`/sys/class/net/${name}/bridge`, O.RDONLY | O.DIRECTORY));
      linuxBridge = true;
    } catch (e) {
      if (!(e instanceof OsError && e.errno === E.ENOENT)) throw e;
    }
  }
  return { exists, linuxBridge };
}

/** The verdict on a `--br` name. */
export type BridgeKind =
  | { kind: "linux" }
  | { kind: "ovs"; bridge: BridgeRow }
  | { kind: "none"; reason: string };

/**
 * Decides what kind of bridge `name` is, from the kernel AND the database, never from the name:
 * a Linux bridge is a kernel bridge device the database does not know; an Open vSwitch bridge
 * has a Bridge row and a kernel device (the switch's internal port, a tap for the userspace
 * datapath) that is not a Linux bridge. A name both claim, or a Bridge row with no device (the
 * switch is not running), is refused: better to fail than to attach a tap where nobody forwards.
 */
export function classifyBridge(
  name: string,
  kernel: KernelBridgeFacts,
  db: BridgeRow | undefined,
): BridgeKind {
  if (kernel.linuxBridge && db !== undefined) {
    return {
      kind: "none",
      reason: `'${name}' is both a Linux bridge and an Open vSwitch bridge in the database`,
    };
  }
  if (kernel.linuxBridge) return { kind: "linux" };
  if (db !== undefined) {
    if (!kernel.exists) {
      return {
        kind: "none",
        reason: `Open vSwitch bridge '${name}' has no kernel device: is ovs-vswitchd running?`,
      };
    }
    return { kind: "ovs", bridge: db };
  }
  return {
    kind: "none",
    reason: kernel.exists ? `'${name}' is not a bridge` : `no bridge named '${name}'`,
  };
}
