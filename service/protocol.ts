// The bridge service's wire format (docs/protocol.md): one SOCK_SEQPACKET message each way,
// versioned, fixed header, no self-described identity. Pure: bytes in, typed values out.

/** The 4 magic bytes that start every message: "VMBR". */
export const MAGIC: Uint8Array = new Uint8Array([0x56, 0x4d, 0x42, 0x52]);

/** The protocol version this code speaks. */
export const VERSION = 1;

/** The header length of requests and replies. */
export const HEADER = 8;

/** The longest iface-id a request may carry (FLAG.IFACE_ID), as ovs/iface_id.ts accepts. */
export const MAX_IFACE_ID = 128;

/** The largest request: the header, a 15-byte bridge name, and a length byte and iface-id. */
export const MAX_REQUEST = HEADER + 15 + 1 + MAX_IFACE_ID;

/** The largest reply text in bytes (a reply is at most HEADER + this). */
export const MAX_TEXT = 4096;

/** Where the service listens unless told otherwise; a build-time constant. */
export const DEFAULT_SOCKET = "/run/vm-bridge/socket";

/** What a request asks for. */
export const OP = {
  /** Create a tap on the bridge and send its fd. */
  OPEN: 1,
  /** Name the existing bridges this client may use (for --check and the doctor). */
  LIST: 2,
} as const;

/** Request flag bits. */
export const FLAG = {
  /** Ask for IFF_VNET_HDR (the helper's --use-vnet). */
  VNET_HDR: 0x1,
  /**
   * An OVN iface-id follows the bridge name: one length byte K (1..128), then K bytes of
   * `A-Za-z0-9._:@+-`. For Open vSwitch bridges; a Linux bridge refuses it. Added compatibly
   * in version 1: a request without this flag is byte for byte what it was.
   */
  IFACE_ID: 0x2,
} as const;

/** Reply status codes; 0 is success. */
export const STATUS = {
  OK: 0,
  /** Malformed, oversized or truncated request, a bad bridge name, or fds sent along. */
  BAD_REQUEST: 1,
  /** The request's version is not one the service speaks. */
  VERSION: 2,
  /** The ACL denies this bridge to this client. */
  DENIED: 3,
  /** The ACL cannot be read or parsed (as the helper, the service then denies). */
  ACL: 4,
  /** The client has as many live taps as the per-user limit allows. */
  LIMIT: 5,
  /** A kernel step failed (no such bridge, ...); the text is the helper's. */
  FAILED: 6,
  /** No complete request arrived in time. */
  TIMEOUT: 7,
  /** The service has as many connections open as it accepts. */
  BUSY: 8,
} as const;

/** A request status code. */
export type Status = typeof STATUS[keyof typeof STATUS];

/** A decoded request. */
export interface Request {
  /** OP.OPEN or OP.LIST. */
  op: number;
  /** The bridge name (empty for OP.LIST). */
  bridge: string;
  /** IFF_VNET_HDR wanted. */
  vnetHdr: boolean;
  /** The OVN logical port to bind the tap to (FLAG.IFACE_ID); absent when not asked for. */
  ifaceId?: string;
}

/** A decoded reply. */
export interface Reply {
  /** 0 on success, else one of STATUS. */
  status: number;
  /** The tap name, the bridge list, or the one-line error message. */
  text: string;
}

/** Why a request was refused while decoding: the status to answer with and the message. */
export class ProtocolError extends Error {
  /** STATUS.BAD_REQUEST or STATUS.VERSION. */
  readonly status: Status;

  /** `message` is one line. */
  constructor(status: Status, message: string) {
    super(message);
    this.name = "ProtocolError";
    this.status = status;
  }
}

const encoder = new TextEncoder();
const strict = new TextDecoder("utf-8", { fatal: true });

/** Writes magic, version and the three header bytes that follow. */
function header(buf: Uint8Array, b5: number, b6: number, b7: number): void {
  buf.set(MAGIC, 0);
  buf[4] = VERSION;
  buf[5] = b5;
  buf[6] = b6;
  buf[7] = b7;
}

/**
 * Encodes a request: magic, version, op, flags, name length, then the name bytes.
 *
 * @param req The request.
 * @returns The message bytes.
 * @throws {RangeError} when the bridge name is longer than 15 bytes.
 *
 * @example Ask for a tap on br0 with a vnet header
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeRequest, encodeRequest, OP } from "./protocol.ts";
 *
 * const bytes = encodeRequest({ op: OP.OPEN, bridge: "br0", vnetHdr: true });
 * assert.deepEqual(decodeRequest(bytes, false), { op: OP.OPEN, bridge: "br0", vnetHdr: true });
 * ```
 */
export function encodeRequest(req: Request): Uint8Array<ArrayBuffer> {
  const name = encoder.encode(req.bridge);
  if (name.length > 15) {
    throw new RangeError(`Bridge name longer than 15 bytes: ${JSON.stringify(req.bridge)}`);
  }
  const id = req.ifaceId === undefined ? undefined : encoder.encode(req.ifaceId);
  if (id !== undefined && (id.length === 0 || id.length > MAX_IFACE_ID)) {
    throw new RangeError(
      `iface-id must be 1 to ${MAX_IFACE_ID} bytes: ${JSON.stringify(req.ifaceId)}`,
    );
  }
  const extra = id === undefined ? 0 : 1 + id.length;
  const buf = new Uint8Array(new ArrayBuffer(HEADER + name.length + extra));
  const flags = (req.vnetHdr ? FLAG.VNET_HDR : 0) | (id !== undefined ? FLAG.IFACE_ID : 0);
  header(buf, req.op, flags, name.length);
  buf.set(name, HEADER);
  if (id !== undefined) {
    buf[HEADER + name.length] = id.length;
    buf.set(id, HEADER + name.length + 1);
  }
  return buf;
}

/**
 * Decodes a request, strictly: exact length, known op and flags, UTF-8 name without NUL, an
 * empty name for OP.LIST and a non-empty one for OP.OPEN. The name's interface-name rules are
 * the caller's (the helper's message for them is reused).
 *
 * @param bytes The message as received.
 * @param truncated The message was longer than the receive buffer (MSG_TRUNC).
 * @returns The request.
 * @throws {ProtocolError} with STATUS.VERSION for another version, else STATUS.BAD_REQUEST.
 */
export function decodeRequest(bytes: Uint8Array, truncated: boolean): Request {
  const bad = (why: string) => new ProtocolError(STATUS.BAD_REQUEST, `bad request: ${why}`);
  if (truncated) throw bad(`longer than ${MAX_REQUEST} bytes`);
  if (bytes.length < HEADER) throw bad(`${bytes.length} bytes, shorter than the header`);
  if (!MAGIC.every((b, i) => bytes[i] === b)) throw bad("not a vm-bridge message");
  if (bytes[4] !== VERSION) {
    throw new ProtocolError(
      STATUS.VERSION,
      `unsupported protocol version ${bytes[4]}: this service speaks version ${VERSION}`,
    );
  }
  const op = bytes[5]!;
  const flags = bytes[6]!;
  const len = bytes[7]!;
  if (op !== OP.OPEN && op !== OP.LIST) throw bad(`unknown operation ${op}`);
  if (flags & ~(FLAG.VNET_HDR | FLAG.IFACE_ID)) throw bad(`unknown flags 0x${flags.toString(16)}`);
  if (len > 15) throw bad(`name length ${len} is over 15 bytes`);
  let ifaceId: string | undefined;
  if (flags & FLAG.IFACE_ID) {
    if (op !== OP.OPEN) throw bad("only an open request carries an iface-id");
    const k = bytes[HEADER + len] ?? 0;
    if (k === 0 || k > MAX_IFACE_ID) throw bad(`iface-id length ${k} is not 1 to ${MAX_IFACE_ID}`);
    if (bytes.length !== HEADER + len + 1 + k) {
      throw bad(`length ${bytes.length} does not match the name and iface-id lengths ${len}, ${k}`);
    }
    ifaceId = String.fromCharCode(...bytes.subarray(HEADER + len + 1));
    if (!/^[A-Za-z0-9._:@+-]+$/.test(ifaceId)) {
      throw bad("iface-id has characters other than A-Z a-z 0-9 . _ : @ + -");
    }
  } else if (bytes.length !== HEADER + len) {
    throw bad(`length ${bytes.length} does not match the name length ${len}`);
  }
  if (op === OP.LIST && len !== 0) throw bad("a list request names no bridge");
  if (op === OP.OPEN && len === 0) throw bad("no bridge named");
  let bridge: string;
  try {
    bridge = strict.decode(bytes.subarray(HEADER, HEADER + len));
  } catch {
    throw bad("bridge name is not UTF-8");
  }
  if (bridge.includes("\0")) throw bad("bridge name contains a NUL byte");
  const req: Request = { op, bridge, vnetHdr: (flags & FLAG.VNET_HDR) !== 0 };
  if (ifaceId !== undefined) req.ifaceId = ifaceId;
  return req;
}

/**
 * Encodes a reply: magic, version, status, reserved 0, text length (u16 little-endian), text.
 * Text longer than MAX_TEXT bytes is cut at a character boundary and ends in "...".
 *
 * @param reply The status and text.
 * @returns The message bytes.
 */
export function encodeReply(reply: Reply): Uint8Array<ArrayBuffer> {
  let text = encoder.encode(reply.text);
  if (text.length > MAX_TEXT) {
    let cut = MAX_TEXT - 3;
    while (cut > 0 && (text[cut]! & 0xc0) === 0x80) cut--;
    const shortened = new Uint8Array(cut + 3);
    shortened.set(text.subarray(0, cut));
    shortened.set(encoder.encode("..."), cut);
    text = shortened;
  }
  const buf = new Uint8Array(new ArrayBuffer(HEADER + text.length));
  header(buf, reply.status, 0, 0);
  new DataView(buf.buffer).setUint16(6, text.length, true);
  buf.set(text, HEADER);
  return buf;
}

/**
 * Decodes a reply, strictly (a client must not act on a reply it does not understand).
 *
 * @param bytes The message as received.
 * @returns The reply.
 * @throws {ProtocolError} (STATUS.BAD_REQUEST) for anything malformed or another version.
 *
 * @example Round trip
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeReply, encodeReply, STATUS } from "./protocol.ts";
 *
 * const r = { status: STATUS.DENIED, text: "access denied by acl file" };
 * assert.deepEqual(decodeReply(encodeReply(r)), r);
 * ```
 */
export function decodeReply(bytes: Uint8Array): Reply {
  const bad = (why: string) => new ProtocolError(STATUS.BAD_REQUEST, `bad reply: ${why}`);
  if (bytes.length < HEADER) throw bad(`${bytes.length} bytes, shorter than the header`);
  if (!MAGIC.every((b, i) => bytes[i] === b)) throw bad("not a vm-bridge message");
  if (bytes[4] !== VERSION) throw bad(`protocol version ${bytes[4]}, expected ${VERSION}`);
  const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint16(6, true);
  if (bytes.length !== HEADER + len) throw bad(`length ${bytes.length} does not match ${len}`);
  let text: string;
  try {
    text = strict.decode(bytes.subarray(HEADER));
  } catch {
    throw bad("text is not UTF-8");
  }
  return { status: bytes[5]!, text };
}
