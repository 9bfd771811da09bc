// Open vSwitch bridges in the bridge service: which kind of bridge `--br` names (from the kernel
// and the database, never the name), the iface-id policy for this client, the port added through
// OVSDB (ovs/ovsdb.ts: RFC 7047 over the database's Unix socket, no ovs-vsctl, no shell) and
// removed again, by its uuid, when the tap goes. See docs/ovs.md, "What the service should call".

import { type BridgeRow, classifyBridge, kernelBridgeFacts } from "../ovs/ovsdb.ts";
import {
  OvsdbError,
  OvsdbUnreachableError,
  type PortInfo,
  staleVmPorts,
  withOvsdb,
} from "../ovs/ovsdb.ts";
import { authorizeIfaceId, loadOvnPolicy, type OvnClient } from "../ovs/iface_id.ts";
import { ifNameToIndex, listDir, OsError, readSmallFile } from "../sys/libc.ts";
import type { NetControl } from "../net/bridge.ts";
import { looksLikeOvsBridge } from "../net/link.ts";
import type { BridgeKind, TapRecord } from "./taps.ts";
import type { Identity } from "./policy.ts";
import { audit } from "./audit.ts";

/** How long one database request may take (the client waits for its reply meanwhile). */
const OVSDB_TIMEOUT_MS = 5000;

/** How long ovs-vswitchd has to take a new port in. */
const ATTACH_TIMEOUT_MS = 2000;

/** The verdict on a `--br` name, for the service. */
export type Verdict =
  | { kind: "linux" }
  | { kind: "ovs"; bridge: BridgeRow }
  | { kind: "none"; reason: string };

/**
 * Which kind of bridge `bridge` is. A name the database does not know is handled as a Linux
 * bridge, so that everything that is not an Open vSwitch bridge fails (or works) exactly as in
 * the helper, with its messages. When the database cannot be reached, a device that looks like
 * an Open vSwitch bridge is refused with the reason; anything else goes the Linux way.
 */
export async function bridgeVerdict(path: string, bridge: string): Promise<Verdict> {
  let facts;
  try {
    facts = kernelBridgeFacts(bridge);
  } catch (e) {
    // A name ovs/ does not take (it is stricter than the kernel): no OVS bridge has it.
    if (e instanceof TypeError) return { kind: "linux" };
    throw e;
  }
  let row: BridgeRow | undefined;
  try {
    row = await withOvsdb(
      { path, timeoutMs: OVSDB_TIMEOUT_MS },
      (db) => db.findBridge(bridge),
    );
  } catch (e) {
    if (!(e instanceof OvsdbUnreachableError)) throw e;
    if (facts.exists && !facts.linuxBridge && looksLikeOvsBridge(bridge)) {
      return {
        kind: "none",
        reason: `bridge \`${bridge}' may be an Open vSwitch bridge: ${e.message}`,
      };
    }
    return { kind: "linux" };
  }
  if (row === undefined) return { kind: "linux" };
  const v = classifyBridge(bridge, facts, row);
  if (v.kind === "ovs") return v;
  return { kind: "none", reason: v.kind === "none" ? v.reason : `'${bridge}' is not usable` };
}

/** User and group names for the iface-id policy, from /etc/passwd and /etc/group. */
export function ovnClient(who: Identity): OvnClient {
  const user = fieldsOf("/etc/passwd").find((f) => f[2] === String(who.uid))?.[0];
  const gids = new Set([who.gid, ...who.groups].map(String));
  const groups = fieldsOf("/etc/group").filter((f) => gids.has(f[2] ?? "")).map((f) => f[0]!);
  return { uid: who.uid, user, groups };
}

function fieldsOf(file: string): string[][] {
  let text: string;
  try {
    text = readSmallFile(file, 4 << 20);
  } catch {
    return [];
  }
  return text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).map((l) => l.split(":"));
}

/**
 * Whether `who` may bind a tap to the OVN logical port `ifaceId` (ovs/iface_id.ts, deny by
 * default). Returns the refusal message, or undefined when allowed.
 */
export function ifaceIdRefusal(who: Identity, ifaceId: string): string | undefined {
  try {
    const d = authorizeIfaceId(loadOvnPolicy(), ovnClient(who), ifaceId);
    return d.allowed ? undefined : d.reason;
  } catch (e) {
    if (e instanceof SyntaxError || e instanceof TypeError) return `iface-id refused: ${e.message}`;
    if (e instanceof OsError) return `iface-id refused: cannot read the OVN policy: ${e.message}`;
    throw e;
  }
}

/** A port the service added, to remove when its tap goes. */
interface PendingRemoval {
  bridge: string;
  tap: string;
  uuid: string;
  tries: number;
}

/**
 * Open vSwitch bridges: the tap is made and brought up as for a Linux bridge, but not attached
 * in the kernel; the service adds it through OVSDB (addOvsPort) before it is sent, and removes
 * that port when the tap goes (released() queues it; drainRemovals() does it).
 */
export class OvsBridges implements BridgeKind {
  readonly name = "ovs";
  readonly attachedLater = true;
  readonly #path: string;
  #pending: PendingRemoval[] = [];

  /** `path`: the database socket. */
  constructor(path: string) {
    this.#path = path;
  }

  attach(_ctl: NetControl, _bridge: string, _tap: string): void {}

  detach(_ctl: NetControl, _bridge: string, _tap: string): void {}

  released(bridge: string, tap: string, record?: TapRecord): void {
    if (record?.ovsPort !== undefined) {
      this.#pending.push({ bridge, tap, uuid: record.ovsPort, tries: 0 });
    }
  }

  /** Ports waiting to be removed. */
  get pending(): number {
    return this.#pending.length;
  }

  /**
   * Adds `tap` to `bridge` with who asked (and the iface-id), waits until ovs-vswitchd took it
   * in, and returns the Port's uuid. On any failure nothing stays in the database. A port of
   * the same name left by vm-bridge (its tap went, the kernel reused the name) is removed by its
   * uuid first, once.
   */
  async addPort(
    bridge: string,
    tap: string,
    who: { uid: number; pid: number },
    ifaceId: string | undefined,
  ): Promise<string> {
    return await withOvsdb({ path: this.#path, timeoutMs: OVSDB_TIMEOUT_MS }, async (db) => {
      const req = {
        bridge,
        ifname: tap,
        externalIds: new Map([["vm-bridge-uid", String(who.uid)], [
          "vm-bridge-pid",
          String(who.pid),
        ]]),
        ...(ifaceId === undefined ? {} : { ifaceId }),
      };
      let added;
      try {
        added = await db.addPort(req);
      } catch (e) {
        if (!(e instanceof OvsdbError && /already exists/.test(e.message))) throw e;
        const old = (await db.listPorts(bridge)).find((p) => p.name === tap);
        if (old === undefined || !old.externalIds.has("vm-bridge-uid")) throw e;
        await db.removePort(tap, { expectUuid: old.uuid });
        this.#removedAudit(bridge, tap, old.uuid, "name reused before its removal");
        added = await db.addPort(req);
      }
      try {
        await db.waitAttached(tap, ATTACH_TIMEOUT_MS);
      } catch (e) {
        await db.removePort(tap, { expectUuid: added.port }).catch(() => {});
        throw e;
      }
      return added.port;
    });
  }

  /** Removes one port the service added (by uuid); true when it was there. */
  async removePort(tap: string, uuid: string): Promise<boolean> {
    return await withOvsdb(
      { path: this.#path, timeoutMs: OVSDB_TIMEOUT_MS },
      (db) => db.removePort(tap, { expectUuid: uuid }),
    );
  }

  /**
   * Removes the ports of taps that went. A database that cannot be reached keeps them queued
   * (up to 100 tries, one per call); stale ports left then are removed at the next start.
   */
  async drainRemovals(): Promise<void> {
    const work = this.#pending;
    this.#pending = [];
    for (const p of work) {
      try {
        const removed = await this.removePort(p.tap, p.uuid);
        this.#removedAudit(p.bridge, p.tap, p.uuid, removed ? "tap gone" : "already gone");
      } catch (e) {
        const again = e instanceof OvsdbUnreachableError && ++p.tries < 100;
        if (again) this.#pending.push(p);
        audit([
          ["event", "ovs-port"],
          ["bridge", p.bridge],
          ["tap", p.tap],
          ["port", p.uuid],
          ["action", again ? "remove-retry" : "remove-failed"],
          ["reason", e instanceof Error ? e.message : String(e)],
        ]);
      }
    }
  }

  /**
   * At start: removes the ports vm-bridge added whose device is gone (a service that stopped
   * between a tap's end and its cleanup), on every Open vSwitch bridge of this namespace. An
   * unreachable database is only noted: there is nothing to clean then.
   */
  async removeStale(): Promise<void> {
    let names: string[];
    try {
      names = listDir("/sys/class/net");
    } catch {
      return;
    }
    try {
      await withOvsdb({ path: this.#path, timeoutMs: OVSDB_TIMEOUT_MS }, async (db) => {
        for (const name of names) {
          if (await db.findBridge(name).catch(() => undefined) === undefined) continue;
          const stale: PortInfo[] = staleVmPorts(
            await db.listPorts(name),
            (n) => ifNameToIndex(n) !== 0,
          );
          for (const p of stale) {
            const removed = await db.removePort(p.name, { expectUuid: p.uuid });
            if (removed) this.#removedAudit(name, p.name, p.uuid, "stale at start");
          }
        }
      });
    } catch (e) {
      if (!(e instanceof OvsdbUnreachableError || e instanceof OvsdbError)) throw e;
      audit([["event", "ovs-stale-check"], ["reason", e.message]]);
    }
  }

  #removedAudit(bridge: string, tap: string, uuid: string, reason: string): void {
    audit([
      ["event", "ovs-port"],
      ["bridge", bridge],
      ["tap", tap],
      ["port", uuid],
      ["action", "removed"],
      ["reason", reason],
    ]);
  }
}
