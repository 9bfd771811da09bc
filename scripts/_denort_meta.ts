// Reads the metadata `deno compile` embeds in a standalone executable, and judges whether it is
// one of our builds (the helper, the bridge service). Pure: bytes in, metadata or an error out.
//
// The format, as read in Deno 2.9's source (cli/standalone/binary.rs write_binary_bytes and
// serialize_binary_data_section, cli/rt/binary.rs read_section_metadata) and libsui 0.16
// (Elf::append, elf::find_section):
// - On Linux the data section is an ELF note appended by libsui in its own PT_NOTE segment:
//   namesz, descsz, type (u32 little-endian each), name "SUI\0" padded to 4, type 0x53554901,
//   desc = u16 little-endian length + the section name "d3n0l4nd" + the section bytes.
//   The runtime scans the PT_NOTE program headers in order and takes the first such note.
// - The section: the magic "d3n0l4nd", a u64 little-endian length and that many bytes of
//   metadata JSON (struct Metadata), then the npm snapshot, specifiers, redirects, remote
//   modules and the virtual file system, and the magic again as its last 8 bytes.

/** The libsui note's owner name. */
export const NOTE_NAME = "SUI";

/** The libsui note type for section data. */
export const NOTE_TYPE = 0x53554901;

/** The section name, which is also the magic at both ends of the section. */
export const SECTION = "d3n0l4nd";

/** The V8 flags `deno compile` always embeds (get_default_v8_flags in cli/args/mod.rs). */
export const DEFAULT_V8_FLAGS: readonly string[] = [
  "--stack-size=1024",
  "--inspector-live-edit",
  "--external-memory-max-reasonable-size=0",
];

/** The placeholder argv[0] at the start of the embedded V8 flags (construct_v8_flags). */
export const V8_FLAGS_ARG0 = "UNUSED_BUT_NECESSARY_ARG0";

/**
 * The hosts `deno compile` puts in `allow_import` by itself (implicit_allow_import in
 * cli/args/mod.rs). Harmless for our binary: its modules all come from the embedded graph, the
 * helper imports nothing dynamically, and the guard stops any other main module.
 */
export const IMPLICIT_IMPORT_HOSTS: readonly string[] = [
  "jsr.io:443",
  "deno.land:443",
  "esm.sh:443",
  "raw.esm.sh:443",
  "cdn.jsdelivr.net:443",
  "raw.githubusercontent.com:443",
  "gist.githubusercontent.com:443",
];

/** The permission fields of Deno 2.9's PermissionsOptions. */
export const PERMISSION_FIELDS: readonly string[] = [
  "allow_env",
  "deny_env",
  "ignore_env",
  "allow_net",
  "deny_net",
  "allow_ffi",
  "deny_ffi",
  "allow_read",
  "deny_read",
  "ignore_read",
  "allow_run",
  "deny_run",
  "allow_sys",
  "deny_sys",
  "allow_write",
  "deny_write",
  "allow_import",
  "deny_import",
  "prompt",
];

const dec = new TextDecoder("utf-8", { fatal: true });

function ascii(bytes: Uint8Array, start: number, end: number): string {
  return String.fromCharCode(...bytes.subarray(start, end));
}

/**
 * Finds the `d3n0l4nd` section of a Linux standalone executable the way the runtime does: the
 * first libsui note in the PT_NOTE segments, in program header order.
 *
 * @param bytes The whole executable.
 * @returns The section bytes (starting with the magic).
 * @throws {SyntaxError} Not a 64-bit little-endian ELF file, a malformed program header table or
 * note, or no such note (not a `deno compile` output).
 */
export function findDenoSection(bytes: Uint8Array): Uint8Array {
  if (bytes.length < 64 || ascii(bytes, 0, 4) !== "\x7fELF") {
    throw new SyntaxError("Not an ELF executable");
  }
  if (bytes[4] !== 2 || bytes[5] !== 1) {
    throw new SyntaxError("Not a 64-bit little-endian ELF executable");
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const phoff = Number(v.getBigUint64(0x20, true));
  const phentsize = v.getUint16(0x36, true);
  const phnum = v.getUint16(0x38, true);
  if (phentsize < 56 || phnum === 0 || phoff + phnum * phentsize > bytes.length) {
    throw new SyntaxError("Malformed ELF program header table");
  }
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (v.getUint32(ph, true) !== 4 /* PT_NOTE */) continue;
    const offset = Number(v.getBigUint64(ph + 8, true));
    const filesz = Number(v.getBigUint64(ph + 32, true));
    const memsz = Number(v.getBigUint64(ph + 40, true));
    const align = Math.max(Number(v.getBigUint64(ph + 48, true)), 4);
    if (offset + filesz > bytes.length || filesz !== memsz || (align & (align - 1)) !== 0) {
      throw new SyntaxError(`Malformed ELF note segment (program header ${i})`);
    }
    const up = (n: number) => Math.ceil(n / align) * align;
    const end = offset + filesz;
    let pos = offset;
    while (pos + 12 <= end) {
      const namesz = v.getUint32(pos, true);
      const descsz = v.getUint32(pos + 4, true);
      const type = v.getUint32(pos + 8, true);
      const nameAt = pos + 12;
      if (nameAt + namesz > end) break;
      let nameEnd = nameAt + namesz;
      while (nameEnd > nameAt && bytes[nameEnd - 1] === 0) nameEnd--;
      const descAt = offset + up(nameAt + namesz - offset);
      if (descAt + descsz > end) break;
      if (ascii(bytes, nameAt, nameEnd) === NOTE_NAME && type === NOTE_TYPE && descsz >= 2) {
        const nameLen = v.getUint16(descAt, true);
        if (
          2 + nameLen <= descsz && ascii(bytes, descAt + 2, descAt + 2 + nameLen) === SECTION
        ) {
          return bytes.subarray(descAt + 2 + nameLen, descAt + descsz);
        }
      }
      pos = offset + up(descAt + descsz - offset);
    }
  }
  throw new SyntaxError(`No ${SECTION} note: not an executable built by deno compile`);
}

/**
 * Reads the metadata JSON of a Linux standalone executable.
 *
 * @param bytes The whole executable.
 * @returns The parsed metadata object (Deno's `Metadata`, field names as serialized).
 * @throws {SyntaxError} See {@linkcode findDenoSection}; also a section without its magic at
 * both ends, a metadata length past the section, or metadata that is not a JSON object.
 */
export function readStandaloneMetadata(bytes: Uint8Array): Record<string, unknown> {
  const section = findDenoSection(bytes);
  if (section.length < 32 || ascii(section, 0, 8) !== SECTION) {
    throw new SyntaxError(`The ${SECTION} section does not start with its magic`);
  }
  if (ascii(section, section.length - 8, section.length) !== SECTION) {
    throw new SyntaxError(`The ${SECTION} section does not end with its magic`);
  }
  const v = new DataView(section.buffer, section.byteOffset, section.byteLength);
  const len = v.getBigUint64(8, true);
  if (len > BigInt(section.length - 24)) {
    throw new SyntaxError(`The metadata length ${len} runs past the section`);
  }
  let value: unknown;
  try {
    value = JSON.parse(dec.decode(section.subarray(16, 16 + Number(len))));
  } catch (e) {
    throw new SyntaxError(`The metadata is not JSON: ${(e as Error).message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new SyntaxError("The metadata is not a JSON object");
  }
  return value as Record<string, unknown>;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const show = (x: unknown) => JSON.stringify(x) ?? "undefined";

/** A build the installer accepts: what `deno compile` must have embedded, and nothing more. */
export interface ExpectedBuild {
  /** For messages: "helper", "vm-bridged". */
  name: string;
  /** The entry point's key (relative to the repository root). */
  entry: string;
  /** The preloaded modules, in order. */
  preload: readonly string[];
  /** The variables of `--allow-env=...`, or null when no environment access is granted. */
  allowEnv: readonly string[] | null;
  /** The V8 flags given with `--v8-flags` (besides Deno's defaults). */
  v8Flags: readonly string[];
}

/** The helper: `deno compile --no-code-cache --no-prompt --allow-ffi --v8-flags=--single-threaded,--jitless --preload ./guard.ts ./helper.ts`. */
export const HELPER_BUILD: ExpectedBuild = {
  name: "helper",
  entry: "helper.ts",
  preload: ["guard.ts"],
  allowEnv: null,
  v8Flags: ["--single-threaded", "--jitless"],
};

/** The bridge service: the `compile:service` task (the helper's flags plus LISTEN_FDS, LISTEN_PID). */
export const SERVICE_BUILD: ExpectedBuild = {
  name: "vm-bridged",
  entry: "service/main.ts",
  preload: ["service/guard.ts"],
  allowEnv: ["LISTEN_FDS", "LISTEN_PID"],
  v8Flags: ["--single-threaded", "--jitless"],
};

/**
 * Judges embedded metadata against our helper's build ({@linkcode HELPER_BUILD}).
 *
 * @param meta What {@linkcode readStandaloneMetadata} returned.
 * @returns Every difference, one line each; empty when it is our build.
 */
export function judgeHelperMetadata(meta: Record<string, unknown>): string[] {
  return judgeMetadata(meta, HELPER_BUILD);
}

/**
 * Judges embedded metadata against an expected build: its entry point and preloads, only
 * `--allow-ffi` (all) and, if expected, exactly that `--allow-env` list granted, no prompt, no
 * code cache, no embedded arguments or environment, exactly the expected V8 flags.
 *
 * @param meta What {@linkcode readStandaloneMetadata} returned.
 * @param build The build it must be.
 * @returns Every difference, one line each; empty when it is that build.
 */
export function judgeMetadata(meta: Record<string, unknown>, build: ExpectedBuild): string[] {
  const problems: string[] = [];
  if (meta.entrypoint_key !== build.entry) {
    problems.push(`the entry point is ${show(meta.entrypoint_key)}, not ${show(build.entry)}`);
  }
  if (!same(meta.preload_modules, build.preload)) {
    problems.push(
      `the preloaded modules are ${show(meta.preload_modules)}, not ${show(build.preload)}`,
    );
  }
  if (!same(meta.require_modules, [])) {
    problems.push(`modules are required before the entry point: ${show(meta.require_modules)}`);
  }
  if (!same(meta.argv, [])) problems.push(`arguments are embedded: ${show(meta.argv)}`);
  if (meta.code_cache_key !== null) {
    problems.push(`the V8 code cache is on (code_cache_key ${show(meta.code_cache_key)})`);
  }
  if (!same(meta.env_vars_from_env_file, {})) {
    problems.push("environment variables from an --env-file are embedded");
  }
  if (meta.self_extracting !== undefined && meta.self_extracting !== null) {
    problems.push("it is self-extracting");
  }
  const p = meta.permissions as Record<string, unknown> | null | undefined;
  if (p === null || typeof p !== "object" || Array.isArray(p)) {
    problems.push("it has no permissions record");
  } else {
    for (const key of Object.keys(p)) {
      if (!PERMISSION_FIELDS.includes(key)) problems.push(`unknown permission field ${show(key)}`);
    }
    if (!same(p.allow_ffi, [])) problems.push(`allow_ffi is ${show(p.allow_ffi)}, not [] (all)`);
    if (p.prompt !== false) problems.push(`permission prompts are on (prompt ${show(p.prompt)})`);
    const granted = build.allowEnv === null
      ? "--allow-ffi"
      : `--allow-ffi and --allow-env=${build.allowEnv.join(",")}`;
    if (build.allowEnv !== null && !same(p.allow_env, build.allowEnv)) {
      problems.push(`allow_env is ${show(p.allow_env)}, not ${show(build.allowEnv)}`);
    }
    for (const key of PERMISSION_FIELDS) {
      if (key === "allow_ffi" || key === "prompt" || p[key] === null) continue;
      if (key === "allow_env" && build.allowEnv !== null) continue;
      if (
        key === "allow_import" && Array.isArray(p[key]) &&
        (p[key] as unknown[]).every((h) => IMPLICIT_IMPORT_HOSTS.includes(h as string))
      ) continue;
      problems.push(`${key} is ${show(p[key])}: only ${granted} may be granted`);
    }
  }
  const flags = meta.v8_flags;
  if (!Array.isArray(flags) || !flags.every((f) => typeof f === "string")) {
    problems.push("it has no V8 flags list");
  } else {
    const given = flags[0] === V8_FLAGS_ARG0 ? flags.slice(1) : flags;
    for (const flag of build.v8Flags) {
      if (!given.includes(flag)) problems.push(`the V8 flags lack ${flag}`);
    }
    const extra = given.filter((f) => !build.v8Flags.includes(f) && !DEFAULT_V8_FLAGS.includes(f));
    if (extra.length > 0) problems.push(`unexpected V8 flags: ${show(extra)}`);
  }
  return problems;
}
