// vm-bridged, the bridge service: holds CAP_NET_ADMIN, listens on a SOCK_SEQPACKET Unix socket,
// and for each client decides by the helper's ACL as seen by that client (identity from the
// kernel only), creates a tap on the bridge and sends its fd back. Read top to bottom, main()
// and serveRequest() are the audit checklist; one thread, synchronous kernel calls. The only
// awaits are the Open vSwitch database's answers (service/ovs.ts), each bounded: meanwhile other
// clients wait, as they wait for any request being served.

import { escapeForMessage, ifnameError } from "../net/ifname.ts";
import { NetControl } from "../net/bridge.ts";
import { canonicalBridge } from "../net/link.ts";
import { Fd } from "../sys/fd.ts";
import {
  accept,
  bindUnix,
  chmod,
  close,
  connectUnix,
  E,
  getpid,
  getsockoptInt,
  listDir,
  listen,
  mkdir,
  OsError,
  type PeerCred,
  peerCred,
  peerGroups,
  POLL,
  poll,
  PR,
  prctl,
  readSmallFile,
  recvMessage,
  sendMessage,
  setNonBlocking,
  SOCK,
  socket,
  unlink,
} from "../sys/libc.ts";
import { parseServiceArgs, type ServiceOptions } from "./args.ts";
import { audit, auditValue } from "./audit.ts";
import { CapsError, requireOnlyNetAdmin } from "./caps.ts";
import { deleteLink } from "./netlink.ts";
import { bridgeVerdict, ifaceIdRefusal, OvsBridges } from "./ovs.ts";
import { OvsdbError, OvsdbUnreachableError } from "../ovs/ovsdb.ts";
import { decide, type Identity } from "./policy.ts";
import {
  decodeRequest,
  DEFAULT_SOCKET,
  encodeReply,
  MAX_REQUEST,
  OP,
  ProtocolError,
  STATUS,
  type Status,
} from "./protocol.ts";
import {
  bridgeKind,
  createTap,
  linuxBridges,
  TapError,
  type TapEvent,
  TapRegistry,
} from "./taps.ts";

/** One accepted connection, waiting for its request. */
interface Client {
  /** The connection. */
  sock: Fd;
  /** Who connected, from SO_PEERCRED. */
  peer: PeerCred;
  /** Its supplementary groups, from SO_PEERGROUPS. */
  groups: number[];
  /** Its command name (/proc/PID/comm), for the audit line only: the client chooses it. */
  comm: string;
  /** When it must have sent its request (Date.now() milliseconds). */
  deadline: number;
}

/** What one request came to, for the reply and the audit line. */
interface Outcome {
  status: Status;
  /** The tap name, the bridge list or the helper's one-line error message. */
  text: string;
  bridge?: string;
  /** "linux" or "ovs", once known. */
  kind?: string;
  tap?: string;
  op?: string;
  /** The iface-id asked for, if one. */
  ifaceId?: string | undefined;
}

async function main(argv: readonly string[]): Promise<number> {
  // 1. Privileges: exactly CAP_NET_ADMIN on every thread, else refuse; then no new privileges
  //    and not dumpable (the guard already made us non-dumpable; this re-asserts it).
  requireOnlyNetAdmin();
  prctl(PR.SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS");
  prctl(PR.SET_DUMPABLE, 0, "PR_SET_DUMPABLE");

  // 2. Options, strictly parsed.
  const opts = parseServiceArgs(argv);

  // 3. The listening socket: the one we were told to open, systemd's, or the default path.
  using listener = opts.listen !== undefined
    ? listenOn(opts.listen)
    : systemdSocket() ?? listenOn(DEFAULT_SOCKET, true);

  // 4. Taps a client made persistent while an earlier instance ran: delete them now.
  using ctl = new NetControl();
  deleteOrphans();
  // 4b. Open vSwitch ports an earlier instance added for taps that are gone: remove them.
  const ovs = new OvsBridges(opts.ovsdb);
  await ovs.removeStale();
  audit([["event", "start"], ["pid", getpid()], ["max_taps_per_user", opts.maxTapsPerUser], [
    "ovsdb",
    opts.ovsdb,
  ]]);

  // 5. Serve forever: one poll over the listener and every waiting client.
  await serve(listener, ctl, opts, ovs);
  return 0;
}

/** The accept/recv loop. Every call is synchronous on this thread; a slow client only waits. */
async function serve(
  listener: Fd,
  ctl: NetControl,
  opts: ServiceOptions,
  ovs: OvsBridges,
): Promise<never> {
  const clients = new Map<number, Client>();
  const taps = new TapRegistry();
  const onEvent = (e: TapEvent) => tapEvent(e);
  let nextSweep = Date.now() + opts.sweepMs;
  for (;;) {
    const now = Date.now();
    let wait = nextSweep - now;
    for (const c of clients.values()) wait = Math.min(wait, c.deadline - now);
    const fds = [listener.value, ...clients.keys()];
    const revents = poll(fds, POLL.IN, Math.max(0, wait));

    // New connections: take every waiting one; identity is fixed by the kernel at connect.
    if (revents[0]) acceptAll(listener, clients, opts);

    // Requests (or hang-ups) from waiting clients: each is answered and closed.
    for (let i = 1; i < fds.length; i++) {
      if (!revents[i]) continue;
      const c = clients.get(fds[i]!)!;
      let done = true;
      try {
        done = await serveRequest(c, ctl, taps, opts, onEvent, ovs);
      } catch (e) {
        // A bug or an error nobody foresaw fails this request only; the others keep being served
        // (and any tap it made was closed by `using` on the way out).
        finish(c, {
          status: STATUS.FAILED,
          text: `internal error: ${e instanceof Error ? e.message : String(e)}`,
        });
      }
      if (done) {
        clients.delete(fds[i]!);
        c.sock.close();
      }
    }

    // Clients that sent nothing (or not enough) in time: a timeout reply, then closed.
    const later = Date.now();
    for (const [fd, c] of clients) {
      if (c.deadline > later) continue;
      finish(c, { status: STATUS.TIMEOUT, text: `no request within ${opts.timeoutMs} ms` });
      clients.delete(fd);
      c.sock.close();
    }

    if (later >= nextSweep) {
      taps.sweep(ctl, onEvent);
      // Ports of Open vSwitch taps that went (found by this sweep or by a limit check).
      if (ovs.pending > 0) await ovs.drainRemovals();
      nextSweep = Date.now() + opts.sweepMs;
    }
  }
}

function acceptAll(listener: Fd, clients: Map<number, Client>, opts: ServiceOptions): void {
  for (;;) {
    let fd: number;
    try {
      fd = accept(listener.value);
    } catch (e) {
      // EMFILE and the like: leave the connection queued; it is retried on the next round.
      audit([["event", "accept-error"], ["reason", e instanceof Error ? e.message : String(e)]]);
      return;
    }
    if (fd < 0) return;
    const sock = new Fd(fd);
    let peer: PeerCred;
    let groups: number[];
    try {
      peer = peerCred(fd);
      groups = peerGroups(fd);
    } catch (e) {
      audit([["event", "request"], ["decision", "error"], ["reason", String(e)]]);
      sock.close();
      continue;
    }
    const c: Client = {
      sock,
      peer,
      groups,
      comm: commOf(peer.pid),
      deadline: Date.now() + opts.timeoutMs,
    };
    if (clients.size >= opts.maxClients) {
      finish(c, { status: STATUS.BUSY, text: `service busy: ${opts.maxClients} connections open` });
      sock.close();
      continue;
    }
    clients.set(fd, c);
  }
}

/**
 * Reads and answers one client's request. Returns true when the connection is done (answered
 * or gone), false when there was nothing to read yet.
 */
async function serveRequest(
  c: Client,
  ctl: NetControl,
  taps: TapRegistry,
  opts: ServiceOptions,
  onEvent: (e: TapEvent) => void,
  ovs: OvsBridges,
): Promise<boolean> {
  // 1. One message. Fds a client sends along are closed at once: we never use a client's fd.
  let msg;
  try {
    msg = recvMessage(c.sock.value, MAX_REQUEST);
  } catch (e) {
    finish(c, { status: STATUS.BAD_REQUEST, text: `bad request: ${String(e)}` }, false);
    return true;
  }
  if (msg === undefined) return false;
  for (const fd of msg.fds) closeQuietly(fd);
  if (msg.data.length === 0 && !msg.truncated && msg.fds.length === 0) {
    finish(c, { status: STATUS.BAD_REQUEST, text: "closed before sending a request" }, false);
    return true;
  }
  if (msg.fds.length > 0 || msg.controlTruncated) {
    finish(c, {
      status: STATUS.BAD_REQUEST,
      text: "bad request: file descriptors are not accepted",
    });
    return true;
  }

  // 2. Decode: magic, version, exact length. Identity is never taken from the message.
  let op: number, bridge: string, vnetHdr: boolean, ifaceId: string | undefined;
  try {
    ({ op, bridge, vnetHdr, ifaceId } = decodeRequest(msg.data, msg.truncated));
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    finish(c, { status: e.status, text: e.message });
    return true;
  }
  const who: Identity = { uid: c.peer.uid, gid: c.peer.gid, groups: c.groups };
  if (op === OP.LIST) {
    finish(c, listBridges(who));
    return true;
  }

  // 3. The bridge name: the kernel's rules, the helper's message.
  const bad = ifnameError(bridge);
  if (bad !== undefined) {
    finish(c, { status: STATUS.BAD_REQUEST, text: bad, bridge, op: "open" });
    return true;
  }

  // 3b. The bridge's own name, not an alternative one (the helper's step 4).
  let bridgeIndex: number;
  try {
    bridgeIndex = canonicalBridge(bridge, TapError);
  } catch (e) {
    if (!(e instanceof TapError)) throw e;
    finish(c, { status: STATUS.BAD_REQUEST, text: e.message, bridge, op: "open" });
    return true;
  }

  // 4. The ACL as this client would read it; any doubt denies.
  const decision = decide(who, bridge);
  if (!decision.ok) {
    finish(c, { status: decision.status, text: decision.message, bridge, op: "open" });
    return true;
  }

  // 5. The per-user limit on live taps.
  const live = taps.live(who.uid, opts.maxTapsPerUser, onEvent);
  if (live >= opts.maxTapsPerUser) {
    finish(c, {
      status: STATUS.LIMIT,
      text: `too many taps: uid ${who.uid} has ${live} of ${opts.maxTapsPerUser} allowed`,
      bridge,
      op: "open",
    });
    return true;
  }

  // 6. Which kind of bridge: from the kernel and the Open vSwitch database, never the name.
  //    A name the database does not know goes the helper's way (its messages included).
  const verdict = await bridgeVerdict(opts.ovsdb, bridge);
  if (verdict.kind === "none") {
    finish(c, { status: STATUS.FAILED, text: verdict.reason, bridge, op: "open", ifaceId });
    return true;
  }
  const kind = verdict.kind === "ovs" ? ovs : bridgeKind(bridge);

  // 6b. An iface-id: only on an Open vSwitch bridge, only as /etc/qemu/bridge-ovn.conf allows
  //     for this client (deny by default).
  if (ifaceId !== undefined) {
    const refusal = verdict.kind === "ovs"
      ? ifaceIdRefusal(who, ifaceId)
      : `iface-id refused: \`${bridge}' is not an Open vSwitch bridge`;
    if (refusal !== undefined) {
      finish(c, {
        status: STATUS.DENIED,
        text: refusal,
        bridge,
        kind: kind.name,
        op: "open",
        ifaceId,
      });
      return true;
    }
  }

  // 7. The tap, as the helper makes it, labelled with who asked. `using`: if it is not sent,
  //    closing our only fd removes it and its bridge port.
  const label = `vm-bridge uid=${who.uid} gid=${who.gid} pid=${c.peer.pid} comm=${
    auditValue(c.comm)
  }`;
  let tap;
  try {
    tap = createTap(ctl, bridge, bridgeIndex, vnetHdr, kind, label.slice(0, 255));
  } catch (e) {
    if (!(e instanceof TapError)) throw e;
    finish(c, { status: STATUS.FAILED, text: e.message, bridge, kind: kind.name, op: "open" });
    return true;
  }
  using _tap = tap;

  // 7b. Open vSwitch: the port, added through OVSDB with who asked, attached by ovs-vswitchd,
  //     or nothing written (and the tap goes with its fd).
  let ovsPort: string | undefined;
  if (kind === ovs) {
    try {
      ovsPort = await ovs.addPort(bridge, tap.name, { uid: who.uid, pid: c.peer.pid }, ifaceId);
    } catch (e) {
      if (!(e instanceof OvsdbError || e instanceof OvsdbUnreachableError)) throw e;
      finish(c, {
        status: STATUS.FAILED,
        text:
          `failed to add interface \`${tap.name}' to Open vSwitch bridge \`${bridge}': ${e.message}`,
        bridge,
        kind: kind.name,
        op: "open",
        ifaceId,
      });
      return true;
    }
  }

  // 8. One sendmsg with the fd. Only a tap that reached the client is recorded.
  const sent = finish(
    c,
    {
      status: STATUS.OK,
      text: tap.name,
      bridge,
      kind: kind.name,
      tap: tap.name,
      op: "open",
      ifaceId,
    },
    true,
    tap.tun.value,
  );
  const record = {
    ifindex: tap.ifindex,
    name: tap.name,
    bridge,
    kind,
    uid: who.uid,
    pid: c.peer.pid,
    ...(ovsPort === undefined ? {} : { ovsPort }),
  };
  if (sent) taps.add(record);
  else if (ovsPort !== undefined) {
    // Not handed out: the tap goes with our fd, its port now (or at the next sweep).
    tap.tun.close();
    ovs.released(bridge, tap.name, record);
    await ovs.drainRemovals();
  }
  return true;
}

/**
 * Sends the reply (unless `reply` is false) and writes the audit line. Returns whether the
 * reply was sent; a failed send is recorded as `decision=error`.
 */
function finish(c: Client, o: Outcome, reply = true, fd?: number): boolean {
  let sendError: string | undefined;
  if (reply) {
    try {
      sendMessage(c.sock.value, encodeReply({ status: o.status, text: o.text }), fd);
    } catch (e) {
      sendError = e instanceof OsError ? e.message : String(e);
    }
  }
  const ok = o.status === STATUS.OK;
  audit([
    ["event", "request"],
    ["uid", c.peer.uid],
    ["gid", c.peer.gid],
    ["pid", c.peer.pid],
    ["comm", c.comm],
    ["op", o.op],
    ["bridge", o.bridge],
    ["kind", o.kind],
    ["iface_id", o.ifaceId],
    ["tap", sendError === undefined ? o.tap : undefined],
    ["decision", sendError !== undefined ? "error" : ok ? "allow" : statusName(o.status)],
    [
      "reason",
      sendError !== undefined
        ? `client gone before the reply, tap destroyed: ${sendError}`
        : ok
        ? "ok"
        : escapeForMessage(o.text),
    ],
  ]);
  return reply && sendError === undefined;
}

function statusName(status: number): string {
  for (const [name, value] of Object.entries(STATUS)) {
    if (value === status) return name.toLowerCase().replace("_", "-");
  }
  return String(status);
}

/** The existing Linux bridges this client may use. */
function listBridges(who: Identity): Outcome {
  let names: string[];
  try {
    names = linuxBridges(listDir("/sys/class/net")).sort();
  } catch (e) {
    return { status: STATUS.FAILED, text: `cannot list bridges: ${String(e)}`, op: "list" };
  }
  const allowed: string[] = [];
  for (const name of names) {
    const d = decide(who, name);
    if (d.ok) allowed.push(name);
    else if (d.status === STATUS.ACL) return { status: d.status, text: d.message, op: "list" };
  }
  return { status: STATUS.OK, text: allowed.join(" "), op: "list" };
}

function tapEvent(e: TapEvent): void {
  audit([
    ["event", e.event === "gone" ? "tap-gone" : "tap-persistent"],
    ["uid", e.tap.uid],
    ["pid", e.tap.pid],
    ["bridge", e.tap.bridge],
    ["tap", e.tap.name],
    [
      "action",
      e.event === "gone" ? undefined : e.error === undefined ? "deleted" : "delete-failed",
    ],
    ["reason", e.error],
  ]);
}

function commOf(pid: number): string {
  if (pid <= 0) return "?";
  try {
    return readSmallFile(`/proc/${pid}/comm`, 64).replace(/\n$/, "");
  } catch {
    return "?";
  }
}

function closeQuietly(fd: number): void {
  try {
    close(fd);
  } catch { /* already closed */ }
}

/** The socket systemd passed (LISTEN_PID is us, LISTEN_FDS is 1: fd 3), or undefined. */
function systemdSocket(): Fd | undefined {
  const pid = Deno.env.get("LISTEN_PID");
  const count = Deno.env.get("LISTEN_FDS");
  if (pid === undefined || count === undefined || pid !== String(getpid())) return undefined;
  if (count !== "1") {
    throw new RangeError(`vm-bridged: expected one socket from systemd, got LISTEN_FDS=${count}`);
  }
  const fd = 3;
  let ok = false;
  try {
    ok = getsockoptInt(fd, SOCK.SOL_SOCKET, SOCK.SO_DOMAIN) === SOCK.AF_UNIX &&
      getsockoptInt(fd, SOCK.SOL_SOCKET, SOCK.SO_TYPE) === SOCK.SEQPACKET &&
      getsockoptInt(fd, SOCK.SOL_SOCKET, SOCK.SO_ACCEPTCONN) === 1;
  } catch { /* not a socket: ok stays false */ }
  if (!ok) {
    throw new RangeError(
      "vm-bridged: fd 3 from systemd is not a listening AF_UNIX SOCK_SEQPACKET socket " +
        "(ListenSequentialPacket= in vm-bridge.socket)",
    );
  }
  setNonBlocking(fd, true);
  return new Fd(fd);
}

/** Opens our own listening socket at `path`, replacing a stale one, never a live one. */
function listenOn(path: string, makeDir = false): Fd {
  if (makeDir) mkdir(path.slice(0, path.lastIndexOf("/")), 0o755);
  // A socket file with nobody listening is left by a killed instance; one that answers is
  // another running service, and taking its path over would strand its clients.
  try {
    using probe = new Fd(socket(SOCK.AF_UNIX, SOCK.SEQPACKET));
    connectUnix(probe.value, path);
    throw new RangeError(`vm-bridged: another service is listening on \`${path}'`);
  } catch (e) {
    if (e instanceof OsError && e.errno === E.ECONNREFUSED) unlink(path);
    else if (!(e instanceof OsError && e.errno === E.ENOENT)) throw e;
  }
  const sock = new Fd(socket(SOCK.AF_UNIX, SOCK.SEQPACKET | SOCK.NONBLOCK));
  try {
    bindUnix(sock.value, path);
    // Anyone may connect: the ACL, evaluated per client, decides. Same as SocketMode=0666.
    chmod(path, 0o666);
    listen(sock.value, 128);
    return sock;
  } catch (e) {
    sock.close();
    throw e;
  }
}

/** Deletes persistent taps an earlier instance labelled (their holder made them persistent). */
function deleteOrphans(): void {
  for (const name of listDir("/sys/class/net")) {
    try {
      const alias = readSmallFile(`/sys/class/net/${name}/ifalias`, 512);
      if (!alias.startsWith("vm-bridge uid=")) continue;
      const flags = Number.parseInt(readSmallFile(`/sys/class/net/${name}/tun_flags`, 64), 16);
      if (!(flags & 0x800)) continue;
      const ifindex = Number(readSmallFile(`/sys/class/net/${name}/ifindex`, 64).trim());
      deleteLink(ifindex);
      audit([["event", "tap-persistent"], ["tap", name], ["action", "deleted"], [
        "reason",
        "left persistent before this start",
      ]]);
    } catch { /* not a tap, or gone meanwhile */ }
  }
}

async function run(): Promise<number> {
  try {
    return await main(Deno.args);
  } catch (e) {
    const text = e instanceof CapsError || e instanceof RangeError
      ? e.message
      : `vm-bridged: ${e instanceof Error ? e.message : String(e)}`;
    Deno.stderr.writeSync(new TextEncoder().encode(text + "\n"));
    return 1;
  }
}

Deno.exit(await run());
