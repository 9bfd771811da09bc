// Synthetic standalone executables for the installer's tests (`deno compile` cannot download a
// denort here): a tiny static x86_64 ELF that prints the helper's usage line to stderr and exits
// 1, optionally carrying a `d3n0l4nd` note built exactly as scripts/_denort_meta.ts documents the
// format (libsui's note in its own PT_NOTE segment). Used bare, it also serves as a fake `denort`
// for a real `deno compile` (DENORT_BIN), which then appends the real note itself.

import { USAGE } from "../../scripts/_install_plan.ts";
import {
  IMPLICIT_IMPORT_HOSTS,
  NOTE_NAME,
  NOTE_TYPE,
  SECTION,
} from "../../scripts/_denort_meta.ts";

/** The metadata Deno 2.9.6's `deno compile` wrote for our flags (observed), minus bulky fields. */
export function helperMetadata(): Record<string, unknown> {
  return {
    argv: [],
    seed: null,
    code_cache_key: null,
    permissions: {
      allow_env: null,
      deny_env: null,
      ignore_env: null,
      allow_net: null,
      deny_net: null,
      allow_ffi: [],
      deny_ffi: null,
      allow_read: null,
      deny_read: null,
      ignore_read: null,
      allow_run: null,
      deny_run: null,
      allow_sys: null,
      deny_sys: null,
      allow_write: null,
      deny_write: null,
      allow_import: [...IMPLICIT_IMPORT_HOSTS],
      deny_import: null,
      prompt: false,
    },
    location: null,
    v8_flags: [
      "UNUSED_BUT_NECESSARY_ARG0",
      "--stack-size=1024",
      "--inspector-live-edit",
      "--external-memory-max-reasonable-size=0",
      "--single-threaded",
      "--jitless",
    ],
    log_level: null,
    env_vars_from_env_file: {},
    entrypoint_key: "helper.ts",
    preload_modules: ["guard.ts"],
    require_modules: [],
    node_modules: null,
    vfs_case_sensitivity: "s",
  };
}

const enc = new TextEncoder();

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(parts.reduce((n, p) => n + p.length, 0)));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

const pad4 = (b: Uint8Array) => concat([b, new Uint8Array((4 - (b.length % 4)) % 4)]);

/**
 * The section: magic, u64 length, metadata JSON, then stand-ins for the npm snapshot and the rest
 * (this parser reads only the metadata), and the magic again. `tail: false` drops the end magic.
 */
export function denoSection(
  metadata: unknown,
  options: { tail?: boolean; metadataLength?: number } = {},
): Uint8Array<ArrayBuffer> {
  const json = enc.encode(JSON.stringify(metadata));
  return concat([
    enc.encode(SECTION),
    u64(options.metadataLength ?? json.length),
    json,
    u64(0), // npm snapshot: empty
    new Uint8Array(16), // specifiers, redirects, remote modules, vfs: opaque here
    options.tail === false ? new Uint8Array(8) : enc.encode(SECTION),
  ]);
}

/** One libsui note: owner "SUI", type 0x53554901, desc = u16 name length, name, section data. */
export function suiNote(section: Uint8Array, name = SECTION): Uint8Array<ArrayBuffer> {
  const nameBytes = enc.encode(name);
  const desc = concat([
    new Uint8Array(new Uint16Array([nameBytes.length]).buffer),
    nameBytes,
    section,
  ]);
  const head = new DataView(new ArrayBuffer(12));
  const owner = enc.encode(NOTE_NAME + "\0");
  head.setUint32(0, owner.length, true);
  head.setUint32(4, desc.length, true);
  head.setUint32(8, NOTE_TYPE, true);
  return concat([new Uint8Array(head.buffer), pad4(owner), pad4(desc)]);
}

const BASE = 0x400000;

/**
 * A static x86_64 ELF executable (no libc, two system calls) that writes `message` to stderr and
 * exits with `status`, whatever its arguments; with `note`, a PT_NOTE segment carries it.
 */
export function tinyElf(
  options: { note?: Uint8Array; message?: string; status?: number } = {},
): Uint8Array<ArrayBuffer> {
  if (Deno.build.arch !== "x86_64") {
    throw new Error(`The test executable is x86_64 machine code; this is ${Deno.build.arch}`);
  }
  const msg = enc.encode(options.message ?? USAGE + "\n");
  const status = options.status ?? 1;
  const code = new Uint8Array(36);
  const c = new DataView(code.buffer);
  code.set([0xbf, 2, 0, 0, 0], 0); // mov edi, 2 (stderr)
  code.set([0x48, 0x8d, 0x35], 5); // lea rsi, [rip + 24] (the message right after the code)
  c.setInt32(8, 24, true);
  code[12] = 0xba; // mov edx, len
  c.setUint32(13, msg.length, true);
  code.set([0xb8, 1, 0, 0, 0, 0x0f, 0x05], 17); // mov eax, 1 (write); syscall
  code[24] = 0xbf; // mov edi, status
  c.setUint32(25, status, true);
  code.set([0xb8, 60, 0, 0, 0, 0x0f, 0x05], 29); // mov eax, 60 (exit); syscall
  const phnum = options.note ? 2 : 1;
  const codeOff = 64 + 56 * phnum;
  const body = pad4(concat([code, msg]));
  const noteOff = codeOff + body.length;
  const total = noteOff + (options.note?.length ?? 0);

  const head = new DataView(new ArrayBuffer(codeOff));
  [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0].forEach((b, i) => head.setUint8(i, b));
  head.setUint16(16, 2, true); // ET_EXEC
  head.setUint16(18, 0x3e, true); // EM_X86_64
  head.setUint32(20, 1, true);
  head.setBigUint64(24, BigInt(BASE + codeOff), true); // e_entry
  head.setBigUint64(32, 64n, true); // e_phoff
  head.setUint16(52, 64, true); // e_ehsize
  head.setUint16(54, 56, true); // e_phentsize
  head.setUint16(56, phnum, true);
  const ph = (i: number, type: number, flags: number, off: number, size: number, align: number) => {
    const o = 64 + 56 * i;
    head.setUint32(o, type, true);
    head.setUint32(o + 4, flags, true);
    head.setBigUint64(o + 8, BigInt(off), true);
    head.setBigUint64(o + 16, BigInt(BASE + off), true);
    head.setBigUint64(o + 24, BigInt(BASE + off), true);
    head.setBigUint64(o + 32, BigInt(size), true);
    head.setBigUint64(o + 40, BigInt(size), true);
    head.setBigUint64(o + 48, BigInt(align), true);
  };
  ph(0, 1, /* PT_LOAD */ 5, /* R+X */ 0, total, 0x1000);
  if (options.note) ph(1, 4, /* PT_NOTE */ 4, /* R */ noteOff, options.note.length, 4);
  return concat([new Uint8Array(head.buffer), body, options.note ?? new Uint8Array(0)]);
}

/** A compiled helper as far as the installer can tell: usage line, exit 1, our metadata. */
export function fakeCompiledHelper(metadata: unknown = helperMetadata()): Uint8Array<ArrayBuffer> {
  return tinyElf({ note: suiNote(denoSection(metadata)) });
}

/**
 * The metadata Deno 2.9.6's `deno compile` wrote for the `compile:service` flags (observed with
 * a stand-in denort), minus bulky fields: the helper's plus LISTEN_FDS and LISTEN_PID.
 */
export function serviceMetadata(): Record<string, unknown> {
  const m = helperMetadata();
  (m.permissions as Record<string, unknown>).allow_env = ["LISTEN_FDS", "LISTEN_PID"];
  m.entrypoint_key = "service/main.ts";
  m.preload_modules = ["service/guard.ts"];
  return m;
}

/** What vm-bridged prints when started as root with every capability (outside its unit). */
export const SERVICE_REFUSAL = "vm-bridged: refusing to run: thread 1 holds more than " +
  "CAP_NET_ADMIN: CapEff=000001ffffffffff; start it from vm-bridge.service\n";

/** A compiled vm-bridged as far as the installer can tell: its refusal, exit 1, its metadata. */
export function fakeCompiledService(
  metadata: unknown = serviceMetadata(),
): Uint8Array<ArrayBuffer> {
  return tinyElf({ note: suiNote(denoSection(metadata)), message: SERVICE_REFUSAL });
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A zip archive holding one stored (uncompressed) file, as dl.deno.land's denort-*.zip holds `denort`. */
export function storedZip(name: string, data: Uint8Array): Uint8Array<ArrayBuffer> {
  const n = enc.encode(name);
  const crc = crc32(data);
  const local = new DataView(new ArrayBuffer(30));
  local.setUint32(0, 0x04034b50, true);
  local.setUint16(4, 20, true);
  local.setUint32(14, crc, true);
  local.setUint32(18, data.length, true);
  local.setUint32(22, data.length, true);
  local.setUint16(26, n.length, true);
  const central = new DataView(new ArrayBuffer(46));
  central.setUint32(0, 0x02014b50, true);
  central.setUint16(4, 0x031e, true); // made by: Unix
  central.setUint16(6, 20, true);
  central.setUint32(16, crc, true);
  central.setUint32(20, data.length, true);
  central.setUint32(24, data.length, true);
  central.setUint16(28, n.length, true);
  central.setUint32(38, (0o100755 << 16) >>> 0, true); // external attributes: mode
  const cdOff = 30 + n.length + data.length;
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, 1, true);
  end.setUint16(10, 1, true);
  end.setUint32(12, 46 + n.length, true);
  end.setUint32(16, cdOff, true);
  return concat([
    new Uint8Array(local.buffer),
    n,
    data,
    new Uint8Array(central.buffer),
    n,
    new Uint8Array(end.buffer),
  ]);
}
