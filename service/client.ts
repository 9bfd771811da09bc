// The client side of the bridge service: connect to its socket, send one request, receive the
// tap fd or the error. Used by the unprivileged helper (synchronous), the library (async wait)
// and --check. Needs no privilege: the service identifies us from the kernel.

import { Fd } from "../sys/fd.ts";
import {
  connectUnix,
  E,
  OsError,
  POLL,
  poll,
  pollAsync,
  recvMessage,
  sendMessage,
  SOCK,
  socket,
} from "../sys/libc.ts";
import {
  decodeReply,
  DEFAULT_SOCKET,
  encodeRequest,
  HEADER,
  MAX_TEXT,
  OP,
  type Reply,
  STATUS,
} from "./protocol.ts";

/** The service answered with an error; `message` is its one-line text (the helper's). */
export class ServiceError extends Error {
  /** The reply status (see STATUS in protocol.ts). */
  readonly status: number;

  /** Creates the error. */
  constructor(status: number, message: string) {
    super(message);
    this.name = "ServiceError";
    this.status = status;
  }
}

/** There is no service to ask: no socket, or nobody listening on it. */
export class ServiceUnavailableError extends Error {
  /** The socket path. */
  readonly path: string;

  /** Creates the error. */
  constructor(path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ServiceUnavailableError";
    this.path = path;
  }
}

/** Options for the requests. */
export interface ClientOptions {
  /** The service socket (default /run/vm-bridge/socket). */
  socket?: string;
  /** How long to wait for the reply, in milliseconds (default 10000). */
  timeoutMs?: number;
  /**
   * The OVN logical port to bind the tap to (Open vSwitch bridges only; the service decides by
   * /etc/qemu/bridge-ovn.conf whether this client may claim it).
   */
  ifaceId?: string;
}

/** Connects to the service; throws ServiceUnavailableError when it is not there. */
function connect(path: string): Fd {
  const sock = new Fd(socket(SOCK.AF_UNIX, SOCK.SEQPACKET));
  try {
    connectUnix(sock.value, path);
    return sock;
  } catch (e) {
    sock.close();
    if (
      e instanceof OsError &&
      (e.errno === E.ENOENT || e.errno === E.ECONNREFUSED || e.errno === E.ENOTDIR)
    ) {
      throw new ServiceUnavailableError(
        path,
        `no bridge service at \`${path}': ${e.strerror}`,
        { cause: e },
      );
    }
    throw e;
  }
}

/** Receives and checks the reply; returns the reply and the fd that came with it, if one. */
function receive(sock: Fd, op: number): { reply: Reply; fd?: Fd } {
  const msg = recvMessage(sock.value, HEADER + MAX_TEXT);
  if (msg === undefined) throw new ServiceError(STATUS.TIMEOUT, "no reply from the bridge service");
  const fds = msg.fds.map((fd) => new Fd(fd));
  try {
    if (msg.data.length === 0) {
      throw new ServiceError(STATUS.FAILED, "the bridge service closed the connection");
    }
    if (msg.truncated || msg.controlTruncated) {
      throw new ServiceError(STATUS.FAILED, "bad reply from the bridge service: too long");
    }
    const reply = decodeReply(msg.data);
    if (reply.status !== STATUS.OK) throw new ServiceError(reply.status, reply.text);
    const wantFds = op === OP.OPEN ? 1 : 0;
    if (fds.length !== wantFds) {
      throw new ServiceError(
        STATUS.FAILED,
        `bad reply from the bridge service: ${fds.length} fds, expected ${wantFds}`,
      );
    }
    const fd = fds.pop();
    return fd === undefined ? { reply } : { reply, fd };
  } finally {
    for (const fd of fds) fd.close();
  }
}

function send(sock: Fd, op: number, bridge: string, vnetHdr: boolean, ifaceId?: string): void {
  sendMessage(
    sock.value,
    encodeRequest({ op, bridge, vnetHdr, ...(ifaceId === undefined ? {} : { ifaceId }) }),
  );
}

/**
 * Asks the service for a tap on `bridge`, waiting on this thread (for the helper, which must
 * not run an event loop). Returns the tap fd.
 *
 * @throws {ServiceUnavailableError} when no service listens.
 * @throws {ServiceError} when it refuses; the message is the helper's text.
 */
export function requestTapSync(bridge: string, vnetHdr: boolean, options: ClientOptions = {}): Fd {
  using sock = connect(options.socket ?? DEFAULT_SOCKET);
  send(sock, OP.OPEN, bridge, vnetHdr, options.ifaceId);
  const revents = poll([sock.value], POLL.IN, options.timeoutMs ?? 10_000);
  if (!revents[0]) throw new ServiceError(STATUS.TIMEOUT, "no reply from the bridge service");
  return receive(sock, OP.OPEN).fd!;
}

/**
 * Asks the service for a tap on `bridge` without blocking the event loop while it works.
 *
 * @throws {ServiceUnavailableError} when no service listens.
 * @throws {ServiceError} when it refuses; the message is the helper's text.
 */
export async function requestTap(
  bridge: string,
  vnetHdr: boolean,
  options: ClientOptions & { signal?: AbortSignal } = {},
): Promise<Fd> {
  using sock = connect(options.socket ?? DEFAULT_SOCKET);
  send(sock, OP.OPEN, bridge, vnetHdr, options.ifaceId);
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    options.signal?.throwIfAborted();
    // The service answers in about a millisecond: a sync poll of 0 first saves the thread hop.
    let ready = poll([sock.value], POLL.IN, 0)[0]!;
    if (!ready) {
      const left = deadline - Date.now();
      if (left <= 0) throw new ServiceError(STATUS.TIMEOUT, "no reply from the bridge service");
      ready = (await pollAsync([sock.value], [POLL.IN], Math.min(left, 100)))[0]!;
    }
    if (ready) return receive(sock, OP.OPEN).fd!;
  }
}

/**
 * Asks the service which existing bridges it would give us (for --check and the doctor).
 *
 * @throws {ServiceUnavailableError} when no service listens.
 * @throws {ServiceError} when it cannot say (a broken ACL, ...).
 */
export function listBridgesSync(options: ClientOptions = {}): string[] {
  using sock = connect(options.socket ?? DEFAULT_SOCKET);
  send(sock, OP.LIST, "", false);
  const revents = poll([sock.value], POLL.IN, options.timeoutMs ?? 10_000);
  if (!revents[0]) throw new ServiceError(STATUS.TIMEOUT, "no reply from the bridge service");
  const { reply } = receive(sock, OP.LIST);
  return reply.text === "" ? [] : reply.text.split(" ");
}
