// Tests for scripts/_denort_meta.ts: reading the metadata `deno compile` embeds, and judging it
// against our build. The pure tests use synthetic executables built to the format read in Deno's
// and libsui's source (tests/_support/fake_denort.ts); one test compiles for real, with the Deno
// CLI standing in for denort (DENORT_BIN), so the parser also meets deno's own writer.

import assert from "node:assert/strict";
import {
  findDenoSection,
  judgeHelperMetadata,
  readStandaloneMetadata,
  SECTION,
} from "../../scripts/_denort_meta.ts";
import { compileArgs } from "../../scripts/_install_plan.ts";
import {
  denoSection,
  fakeCompiledHelper,
  helperMetadata,
  suiNote,
  tinyElf,
} from "../_support/fake_denort.ts";
import { ROOT } from "../_support/ns.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });
const enc = new TextEncoder();

test("readStandaloneMetadata() reads the metadata of a synthetic compiled helper", () => {
  assert.deepEqual(readStandaloneMetadata(fakeCompiledHelper()), helperMetadata());
  assert.deepEqual(judgeHelperMetadata(helperMetadata()), []);
});

test("findDenoSection() takes the first SUI note named d3n0l4nd, skipping other notes", () => {
  const other = suiNote(denoSection({ decoy: true }), "other");
  const ours = suiNote(denoSection(helperMetadata()));
  const gnu = new Uint8Array([4, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0, 71, 78, 85, 0, 1, 2, 3, 4]);
  const elf = tinyElf({ note: new Uint8Array([...gnu, ...other, ...ours]) });
  assert.deepEqual(readStandaloneMetadata(elf), helperMetadata());
  const section = findDenoSection(elf);
  assert.equal(new TextDecoder().decode(section.subarray(0, 8)), SECTION);
});

test("readStandaloneMetadata() refuses what is not a deno compile output", () => {
  const cases: [Uint8Array, RegExp][] = [
    [enc.encode("#!/bin/sh\necho usage >&2\nexit 1\n"), /^Not an ELF executable$/],
    [new Uint8Array(0), /^Not an ELF executable$/],
    [tinyElf(), /^No d3n0l4nd note: not an executable built by deno compile$/],
    [tinyElf({ note: suiNote(denoSection(helperMetadata()), "d3n0l4nX") }), /^No d3n0l4nd note/],
    [
      tinyElf({ note: suiNote(denoSection(helperMetadata(), { tail: false })) }),
      /^The d3n0l4nd section does not end with its magic$/,
    ],
    [
      tinyElf({ note: suiNote(denoSection(helperMetadata(), { metadataLength: 1e6 })) }),
      /^The metadata length 1000000 runs past the section$/,
    ],
    [tinyElf({ note: suiNote(denoSection([1, 2])) }), /^The metadata is not a JSON object$/],
    [
      tinyElf({ note: suiNote(enc.encode("XXXXXXXX" + "\0".repeat(24) + SECTION)) }),
      /^The d3n0l4nd section does not start with its magic$/,
    ],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(() => readStandaloneMetadata(bytes), (e) => {
      assert.ok(e instanceof SyntaxError, String(e));
      assert.match(e.message, message);
      return true;
    });
  }
  // 32-bit or big-endian: not what the runtime reads either.
  const elf32 = fakeCompiledHelper();
  elf32[4] = 1;
  assert.throws(() => readStandaloneMetadata(elf32), { message: /64-bit little-endian/ });
  // A truncated file: the note segment runs past the end.
  const whole = fakeCompiledHelper();
  assert.throws(() => readStandaloneMetadata(whole.subarray(0, whole.length - 40)), {
    message: /^Malformed ELF note segment/,
  });
});

test("judgeHelperMetadata() names every difference from our build", () => {
  const change = (f: (m: Record<string, unknown>) => void) => {
    const m = helperMetadata();
    f(m);
    return judgeHelperMetadata(m);
  };
  const perms = (m: Record<string, unknown>) => m.permissions as Record<string, unknown>;
  assert.deepEqual(change((m) => (m.entrypoint_key = "evil.ts")), [
    'the entry point is "evil.ts", not "helper.ts"',
  ]);
  assert.deepEqual(change((m) => (m.entrypoint_key = "file:///src/helper.ts")), [
    'the entry point is "file:///src/helper.ts", not "helper.ts"',
  ]);
  assert.deepEqual(change((m) => (m.preload_modules = [])), [
    'the preloaded modules are [], not ["guard.ts"]',
  ]);
  assert.deepEqual(change((m) => (m.require_modules = ["x.js"])), [
    'modules are required before the entry point: ["x.js"]',
  ]);
  assert.deepEqual(change((m) => (m.argv = ["--br=x"])), ['arguments are embedded: ["--br=x"]']);
  assert.deepEqual(change((m) => (m.code_cache_key = 1234)), [
    "the V8 code cache is on (code_cache_key 1234)",
  ]);
  assert.deepEqual(change((m) => (m.env_vars_from_env_file = { A: "1" })), [
    "environment variables from an --env-file are embedded",
  ]);
  assert.deepEqual(change((m) => (m.self_extracting = "abc")), ["it is self-extracting"]);
  assert.deepEqual(change((m) => (perms(m).allow_read = [])), [
    "allow_read is []: only --allow-ffi may be granted",
  ]);
  assert.deepEqual(change((m) => (perms(m).allow_env = ["HOME"])), [
    'allow_env is ["HOME"]: only --allow-ffi may be granted',
  ]);
  assert.deepEqual(change((m) => (perms(m).deny_net = [])), [
    "deny_net is []: only --allow-ffi may be granted",
  ]);
  assert.deepEqual(change((m) => (perms(m).allow_import = ["evil.example:443"])), [
    'allow_import is ["evil.example:443"]: only --allow-ffi may be granted',
  ]);
  assert.deepEqual(change((m) => (perms(m).allow_import = null)), []);
  assert.deepEqual(change((m) => (perms(m).allow_ffi = ["/lib"])), [
    'allow_ffi is ["/lib"], not [] (all)',
  ]);
  assert.deepEqual(change((m) => (perms(m).prompt = true)), [
    "permission prompts are on (prompt true)",
  ]);
  assert.deepEqual(change((m) => (perms(m).allow_everything = [])), [
    'unknown permission field "allow_everything"',
  ]);
  assert.deepEqual(change((m) => delete m.permissions), ["it has no permissions record"]);
  assert.deepEqual(change((m) => (m.v8_flags = ["UNUSED_BUT_NECESSARY_ARG0"])), [
    "the V8 flags lack --single-threaded",
    "the V8 flags lack --jitless",
  ]);
  assert.deepEqual(
    change((m) => (m.v8_flags = ["--single-threaded", "--jitless", "--prof", "--logfile=/tmp/x"])),
    ['unexpected V8 flags: ["--prof","--logfile=/tmp/x"]'],
  );
  assert.deepEqual(change((m) => (m.v8_flags = "--single-threaded")), ["it has no V8 flags list"]);
});

Deno.test({
  name: "readStandaloneMetadata() reads what deno compile itself wrote, and the Deno CLI has none",
  permissions: { read: true, write: true, run: true, env: true },
  fn: async () => {
    // The CLI itself: its code contains the magic string, but it has no such note.
    assert.throws(() => readStandaloneMetadata(Deno.readFileSync(Deno.execPath())), {
      name: "SyntaxError",
      message: "No d3n0l4nd note: not an executable built by deno compile",
    });
    const dir = await Deno.makeTempDir({ prefix: "vmb-denort-meta-" });
    try {
      // A tiny ELF as the base runtime: deno compile appends its real note to it, offline.
      await Deno.writeFile(`${dir}/denort`, tinyElf(), { mode: 0o755 });
      const out = await new Deno.Command(Deno.execPath(), {
        args: compileArgs(`${dir}/helper`),
        cwd: ROOT,
        clearEnv: true,
        env: {
          PATH: "/usr/bin:/bin",
          HOME: dir,
          DENO_DIR: `${dir}/deno-dir`,
          NO_COLOR: "1",
          DENORT_BIN: `${dir}/denort`,
        },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      const meta = readStandaloneMetadata(await Deno.readFile(`${dir}/helper`));
      assert.deepEqual(judgeHelperMetadata(meta), []);
      assert.equal(meta.entrypoint_key, "helper.ts");
      assert.deepEqual(meta.preload_modules, ["guard.ts"]);
      assert.equal(meta.code_cache_key, null);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
