// Tests for acl/load.ts with real files: include resolution, cycles and depth, skipped includes,
// and the per-file safety checks (owner, mode, file type, size, encoding), all failing closed.

import assert from "node:assert/strict";
import { aclAllows } from "../../acl/decide.ts";
import {
  AclError,
  directoryProblem,
  fileProblem,
  loadAcl,
  type LoadOptions,
  MAX_FILE_BYTES,
  MAX_INCLUDE_DEPTH,
  resolveInclude,
} from "../../acl/load.ts";
import { AclSyntaxError } from "../../acl/parse.ts";
import { ROOT, rootTest } from "../_support/ns.ts";
import { sourceForOthers } from "../_support/readable_source.ts";

/** Files are owned by whoever runs the tests; root-only cases use the real default (uid 0). */
const UID = Deno.uid() ?? 0;
const MINE: LoadOptions = { trustedUid: UID };

/**
 * Where test trees go. The loader checks every directory from `/` down (owned by root or by the
 * trusted uid, not group- or world-writable), so the usual /tmp (1777) would refuse every file.
 * As root: /run (root 0755 on Debian, and uid 65534 can traverse it wherever the checkout is);
 * otherwise the checkout or $HOME, whichever passes the same check.
 */
const BASE: string = (() => {
  const candidates = UID === 0 ? ["/run", ROOT] : [ROOT, Deno.env.get("HOME") ?? ""];
  for (const candidate of candidates.filter((c) => c !== "")) {
    const real = Deno.realPathSync(candidate);
    let ok = true;
    for (let p = real; ok; p = p.slice(0, Math.max(p.lastIndexOf("/"), 1))) {
      const st = Deno.lstatSync(p);
      ok = st.isDirectory && (st.uid === 0 || st.uid === UID) && ((st.mode ?? 0) & 0o022) === 0;
      if (p === "/") break;
    }
    if (ok) return real;
  }
  throw new Error(`no directory for test trees: none of ${candidates} is strict from / down`);
})();

/** The first directory from `/` down to `path` that `uid` owns, or `path` when there is none. */
function firstOwnedBy(uid: number, path: string): string {
  const parts = path.split("/").filter((p) => p !== "");
  for (let i = 1; i < parts.length; i++) {
    const dir = "/" + parts.slice(0, i).join("/");
    if (Deno.lstatSync(dir).uid === uid) return dir;
  }
  return path;
}

/** A temporary directory tree, world-readable so another uid can read it, removed on dispose. */
class Tree implements AsyncDisposable {
  readonly dir: string;
  private constructor(dir: string) {
    this.dir = dir;
  }
  static async create(): Promise<Tree> {
    const dir = await Deno.makeTempDir({ dir: BASE, prefix: "vmb-acl-" });
    await Deno.chmod(dir, 0o755);
    return new Tree(dir);
  }
  /** Makes directory `rel` (and its parents, 0755) with `mode`; returns its absolute path. */
  async mkdir(rel: string, mode = 0o755): Promise<string> {
    const path = `${this.dir}/${rel}`;
    await Deno.mkdir(path, { recursive: true, mode: 0o755 });
    await Deno.chmod(path, mode);
    return path;
  }
  /** Writes `rel` (creating directories) with `mode` and returns its absolute path. */
  async file(rel: string, content: string | Uint8Array, mode = 0o644): Promise<string> {
    const path = `${this.dir}/${rel}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o755 });
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
    await Deno.chmod(path, mode);
    return path;
  }
  path(rel: string): string {
    return `${this.dir}/${rel}`;
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** Asserts that `fn` throws an AclError with exactly this message and file. */
function assertAclError(fn: () => unknown, message: string, file: string): AclError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof AclError, `expected an AclError, got ${caught}`);
  assert.equal(caught.name, "AclError");
  assert.equal(caught.message, message);
  assert.equal(caught.file, file);
  return caught;
}

/** What a loadAcl() run in a child process reported. */
type ChildResult =
  | { rules: unknown[]; skips: [string, string][] }
  | { error: { name: string; message: string } };

/**
 * Runs loadAcl(path) in a child Deno, optionally as uid/gid 65534 (root reads every file, so an
 * unreadable include can only be shown as another user), and with a timeout, so a loader that
 * blocks (on a FIFO, say) fails the test instead of hanging the suite.
 */
async function loadInChild(
  path: string,
  options: { asNobody: boolean; trustedUid: number },
): Promise<ChildResult> {
  const home = await Deno.makeTempDir({ prefix: "vmb-acl-home-" });
  try {
    // Another user may not be able to enter the checkout (root's home, a 0700 directory): it
    // loads the modules from a copy every user can read.
    const loadTs = options.asNobody
      ? (await sourceForOthers()).url("acl/load.ts")
      : new URL("../../acl/load.ts", import.meta.url).href;
    const script = `
      import { loadAcl } from ${JSON.stringify(loadTs)};
      const skips = [];
      let out;
      try {
        const rules = loadAcl(Deno.args[0], {
          trustedUid: Number(Deno.args[1]),
          onSkip: (p, r) => skips.push([p, r]),
        });
        out = { rules, skips };
      } catch (e) {
        out = { error: { name: e.name, message: e.message } };
      }
      console.log(JSON.stringify(out));
    `;
    const deno = [Deno.execPath(), "eval", "--no-config", "--no-lock", script];
    let argv = [...deno, path, String(options.trustedUid)];
    if (options.asNobody) {
      await Deno.chown(home, 65534, 65534);
      argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", ...argv];
    }
    const out = await new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      env: { DENO_DIR: `${home}/deno`, HOME: home, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(20_000),
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `child failed (${out.code}, signal ${out.signal}): ${stderr}`);
    return JSON.parse(new TextDecoder().decode(out.stdout)) as ChildResult;
  } finally {
    await Deno.remove(home, { recursive: true });
  }
}

Deno.test({
  name: "MAX_INCLUDE_DEPTH is 8 and MAX_FILE_BYTES is 1 MiB",
  permissions: "none",
  fn() {
    assert.equal(MAX_INCLUDE_DEPTH, 8);
    assert.equal(MAX_FILE_BYTES, 1024 * 1024);
  },
});

Deno.test({
  name: "resolveInclude() resolves a relative path against the including file's directory",
  permissions: "none",
  fn() {
    assert.equal(resolveInclude("/etc/qemu/bridge.conf", "lab.conf"), "/etc/qemu/lab.conf");
    assert.equal(resolveInclude("/etc/qemu/bridge.conf", "d/x.conf"), "/etc/qemu/d/x.conf");
    assert.equal(resolveInclude("/etc/qemu/bridge.conf", "../x.conf"), "/etc/qemu/../x.conf");
    assert.equal(resolveInclude("/bridge.conf", "x.conf"), "/x.conf");
    assert.equal(resolveInclude("bridge.conf", "x.conf"), "./x.conf");
  },
});

Deno.test({
  name: "resolveInclude() keeps an absolute path as it is",
  permissions: "none",
  fn() {
    assert.equal(resolveInclude("/etc/qemu/bridge.conf", "/srv/acl.conf"), "/srv/acl.conf");
  },
});

Deno.test("loadAcl() reads the rules of a single file", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "# lab\nallow br0\ndeny br1\nallow all\ndeny all\n");
  assert.deepEqual(loadAcl(main, MINE), [
    { kind: "allow", name: "br0" },
    { kind: "deny", name: "br1" },
    { kind: "allow-all" },
    { kind: "deny-all" },
  ]);
});

Deno.test("loadAcl() resolves a relative include against the including file, not the cwd", async () => {
  await using t = await Tree.create();
  const main = await t.file("etc/bridge.conf", "allow br0\ninclude sub/a.conf\nallow br9\n");
  await t.file("etc/sub/a.conf", "allow br1\ninclude b.conf\n");
  await t.file("etc/sub/b.conf", "allow br2\n");
  // Decoys where a cwd-relative lookup would find them.
  await t.file("cwd/sub/a.conf", "deny all\n");
  await t.file("cwd/b.conf", "deny all\n");
  const before = Deno.cwd();
  Deno.chdir(t.path("cwd"));
  try {
    const skipped: string[] = [];
    const rules = loadAcl(main, { ...MINE, onSkip: (p) => skipped.push(p) });
    assert.deepEqual(rules, [
      { kind: "allow", name: "br0" },
      { kind: "allow", name: "br1" },
      { kind: "allow", name: "br2" },
      { kind: "allow", name: "br9" },
    ]);
    assert.deepEqual(skipped, []);
  } finally {
    Deno.chdir(before);
  }
});

Deno.test("loadAcl() follows an absolute include", async () => {
  await using t = await Tree.create();
  const other = await t.file("elsewhere/lab.conf", "allow lab0\n");
  const main = await t.file("etc/bridge.conf", `include ${other}\nallow br0\n`);
  assert.deepEqual(loadAcl(main, MINE), [
    { kind: "allow", name: "lab0" },
    { kind: "allow", name: "br0" },
  ]);
});

Deno.test("loadAcl() reads a file included twice (not a cycle) twice", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "include x.conf\ninclude x.conf\n");
  await t.file("x.conf", "allow br0\n");
  assert.deepEqual(loadAcl(main, MINE), [
    { kind: "allow", name: "br0" },
    { kind: "allow", name: "br0" },
  ]);
});

Deno.test("loadAcl() skips a missing include, reports it to onSkip and keeps the rest", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude gone.conf\ninclude no/dir.conf\n");
  const skipped: [string, string][] = [];
  const rules = loadAcl(main, { ...MINE, onSkip: (p, r) => skipped.push([p, r]) });
  assert.deepEqual(rules, [{ kind: "allow", name: "br0" }]);
  assert.deepEqual(skipped, [
    [t.path("gone.conf"), "No such file or directory"],
    [t.path("no/dir.conf"), "No such file or directory"],
  ]);
});

Deno.test("loadAcl() skips an include below a regular file (ENOTDIR)", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude x.conf/y.conf\n");
  await t.file("x.conf", "deny all\n");
  const skipped: [string, string][] = [];
  assert.deepEqual(loadAcl(main, { ...MINE, onSkip: (p, r) => skipped.push([p, r]) }), [
    { kind: "allow", name: "br0" },
  ]);
  assert.deepEqual(skipped, [[t.path("x.conf/y.conf"), "Not a directory"]]);
});

rootTest("loadAcl() as another user skips an include it cannot read, as QEMU does", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude secret.conf\nallow br1\n");
  await t.file("secret.conf", "deny br0\n", 0o600);
  const result = await loadInChild(main, { asNobody: true, trustedUid: 0 });
  assert.deepEqual(result, {
    rules: [{ kind: "allow", name: "br0" }, { kind: "allow", name: "br1" }],
    skips: [[t.path("secret.conf"), "Permission denied"]],
  });
  // The same ACL read by root sees the deny: the skip is the caller's permissions at work.
  assert.equal(aclAllows(loadAcl(main), "br0"), false);
});

rootTest("loadAcl() as another user refuses a main file it cannot read", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\n", 0o600);
  assert.deepEqual(await loadInChild(main, { asNobody: true, trustedUid: 0 }), {
    error: { name: "AclError", message: `cannot open \`${main}': Permission denied` },
  });
});

Deno.test("loadAcl() refuses a missing main file", async () => {
  await using t = await Tree.create();
  const main = t.path("bridge.conf");
  assertAclError(
    () => loadAcl(main, MINE),
    `cannot open \`${main}': No such file or directory`,
    main,
  );
});

Deno.test("loadAcl() refuses an include cycle a -> b -> a", async () => {
  await using t = await Tree.create();
  const a = await t.file("a.conf", "allow br0\ninclude b.conf\n");
  const b = await t.file("b.conf", "include a.conf\n");
  assertAclError(() => loadAcl(a, MINE), `include cycle: ${a} -> ${b} -> ${a}`, a);
});

Deno.test("loadAcl() refuses a file that includes itself", async () => {
  await using t = await Tree.create();
  const a = await t.file("bridge.conf", "include bridge.conf\nallow br0\n");
  assertAclError(() => loadAcl(a, MINE), `include cycle: ${a} -> ${a}`, a);
});

Deno.test("loadAcl() detects a cycle through another path to the same file", async () => {
  await using t = await Tree.create();
  const a = await t.file("etc/a.conf", "include ../etc/./a.conf\n");
  assertAclError(
    () => loadAcl(a, MINE),
    `include cycle: ${a} -> ${t.path("etc/../etc/./a.conf")}`,
    t.path("etc/../etc/./a.conf"),
  );
});

Deno.test(`loadAcl() accepts includes nested ${MAX_INCLUDE_DEPTH} deep`, async () => {
  await using t = await Tree.create();
  for (let i = 0; i < MAX_INCLUDE_DEPTH; i++) {
    await t.file(`f${i}.conf`, `allow br${i}\ninclude f${i + 1}.conf\n`);
  }
  await t.file(`f${MAX_INCLUDE_DEPTH}.conf`, `allow br${MAX_INCLUDE_DEPTH}\n`);
  const rules = loadAcl(t.path("f0.conf"), MINE);
  assert.equal(rules.length, MAX_INCLUDE_DEPTH + 1);
  assert.deepEqual(rules.at(-1), { kind: "allow", name: `br${MAX_INCLUDE_DEPTH}` });
});

Deno.test(`loadAcl() refuses includes nested deeper than ${MAX_INCLUDE_DEPTH}`, async () => {
  await using t = await Tree.create();
  const last = MAX_INCLUDE_DEPTH + 1;
  for (let i = 0; i < last; i++) {
    await t.file(`f${i}.conf`, `allow br${i}\ninclude f${i + 1}.conf\n`);
  }
  const deepest = await t.file(`f${last}.conf`, "allow brdeep\n");
  assertAclError(
    () => loadAcl(t.path("f0.conf"), MINE),
    `includes nested deeper than ${MAX_INCLUDE_DEPTH}: \`${deepest}'`,
    deepest,
  );
});

Deno.test("loadAcl() rejects the whole ACL for a syntax error in an include", async () => {
  await using t = await Tree.create();
  // C keeps `allow br0` and `allow br2` and goes on: the fail-open we do not copy.
  const main = await t.file("bridge.conf", "allow br0\ninclude bad.conf\nallow br1\n");
  const bad = await t.file("bad.conf", "allow br2\nbogus x\nallow br3\n");
  const error = assertAclError(
    () => loadAcl(main, MINE),
    `${bad}:2: Unknown command \`bogus'`,
    bad,
  );
  assert.ok(error.cause instanceof AclSyntaxError);
  assert.equal(error.cause.line, 2);
});

Deno.test("loadAcl() rejects a too-long name in an include that would hide a later deny", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow all\ninclude deny.conf\n");
  const inc = await t.file("deny.conf", "deny 0123456789abcdefghi\ndeny br0\n");
  assertAclError(
    () => loadAcl(main, MINE),
    `${inc}:1: name \`0123456789abcdefghi' too long: 19`,
    inc,
  );
});

Deno.test("loadAcl() rejects a syntax error in the main file", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\nallow br0 # lab\n");
  const error = assertAclError(
    () => loadAcl(main, MINE),
    `${main}:2: invalid bridge name \`br0 # lab' (comments must be on their own line)`,
    main,
  );
  assert.ok(error.cause instanceof AclSyntaxError);
});

rootTest("loadAcl() refuses a main file not owned by root", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\n");
  await Deno.chown(main, 65534, 65534);
  assertAclError(
    () => loadAcl(main),
    `\`${main}' is owned by uid 65534, not root: refusing it`,
    main,
  );
});

rootTest("loadAcl() refuses an include not owned by root", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude user.conf\n");
  const inc = await t.file("user.conf", "allow br1\n");
  await Deno.chown(inc, 1000, 1000);
  assertAclError(() => loadAcl(main), `\`${inc}' is owned by uid 1000, not root: refusing it`, inc);
});

Deno.test("loadAcl() checks the owner against trustedUid", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\n");
  const other = UID === 4242 ? 4243 : 4242;
  // Not root: the tree's directories are ours, so the first of them is refused before the file.
  const ours = UID === 0 ? main : firstOwnedBy(UID, main);
  assertAclError(
    () => loadAcl(main, { trustedUid: other }),
    ours === main
      ? `\`${main}' is owned by uid ${UID}, not root: refusing it`
      : unsafeDir(ours, `is owned by uid ${UID}, not root`, main),
    main,
  );
  assert.deepEqual(loadAcl(main, MINE), [{ kind: "allow", name: "br0" }]);
});

for (
  const [mode, who] of [
    [0o664, "its group"],
    [0o620, "its group"],
    [0o646, "others"],
    [0o666, "others"],
    [0o602, "others"],
  ] as const
) {
  const octal = mode.toString(8).padStart(4, "0");
  Deno.test(`loadAcl() refuses a main file of mode ${octal} (writable by ${who})`, async () => {
    await using t = await Tree.create();
    const main = await t.file("bridge.conf", "allow br0\n", mode);
    assertAclError(
      () => loadAcl(main, MINE),
      `\`${main}' is writable by ${who} (mode ${octal}): refusing it`,
      main,
    );
  });
}

Deno.test("loadAcl() refuses a group-writable include", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude lab.conf\n");
  const inc = await t.file("lab.conf", "deny br0\n", 0o660);
  assertAclError(
    () => loadAcl(main, MINE),
    `\`${inc}' is writable by its group (mode 0660): refusing it`,
    inc,
  );
});

Deno.test("loadAcl() accepts read-only modes 0644, 0640, 0600 and 0400", async () => {
  await using t = await Tree.create();
  for (const mode of [0o644, 0o640, 0o600, 0o400]) {
    const main = await t.file(`m${mode}.conf`, "allow br0\n", mode);
    assert.deepEqual(loadAcl(main, MINE), [{ kind: "allow", name: "br0" }]);
  }
});

Deno.test("loadAcl() refuses a directory as the main file and as an include", async () => {
  await using t = await Tree.create();
  const dir = t.path("acl.d");
  await Deno.mkdir(dir, { mode: 0o755 });
  assertAclError(() => loadAcl(dir, MINE), `\`${dir}' is not a regular file (a directory)`, dir);
  // C opens a directory, reads nothing and ignores it; an include that names one is a mistake.
  const main = await t.file("bridge.conf", "allow br0\ninclude acl.d\n");
  assertAclError(() => loadAcl(main, MINE), `\`${dir}' is not a regular file (a directory)`, dir);
});

Deno.test("loadAcl() refuses a character device", async () => {
  await using t = await Tree.create();
  assertAclError(
    () => loadAcl("/dev/null", { trustedUid: 0 }),
    "`/dev/null' is not a regular file (a character device)",
    "/dev/null",
  );
  const main = await t.file("bridge.conf", "allow br0\ninclude /dev/null\n");
  assertAclError(
    () => loadAcl(main, MINE),
    "`/dev/null' is not a regular file (a character device)",
    "/dev/null",
  );
});

Deno.test("loadAcl() refuses a FIFO without blocking on it, as main file and as include", async () => {
  await using t = await Tree.create();
  const fifo = t.path("fifo.conf");
  const mk = await new Deno.Command("mkfifo", { args: ["-m", "0644", fifo] }).output();
  assert.equal(mk.code, 0);
  const main = await t.file("bridge.conf", "allow br0\ninclude fifo.conf\n");
  // In a child with a timeout: an open(2) that blocks would otherwise hang the whole suite.
  for (const path of [fifo, main]) {
    assert.deepEqual(await loadInChild(path, { asNobody: false, trustedUid: UID }), {
      error: { name: "AclError", message: `\`${fifo}' is not a regular file (a FIFO)` },
    });
  }
});

Deno.test("loadAcl() accepts a file of exactly MAX_FILE_BYTES and refuses one byte more", async () => {
  await using t = await Tree.create();
  const line = "#" + "x".repeat(1022) + "\n"; // 1 KiB
  const exact = "allow br0\n" + line.repeat(1023) + "#" + "y".repeat(1024 - 10 - 2) + "\n";
  assert.equal(new TextEncoder().encode(exact).length, MAX_FILE_BYTES);
  const ok = await t.file("ok.conf", exact);
  assert.deepEqual(loadAcl(ok, MINE), [{ kind: "allow", name: "br0" }]);
  const big = await t.file("big.conf", exact + "\n");
  assertAclError(
    () => loadAcl(big, MINE),
    `\`${big}' is larger than ${MAX_FILE_BYTES} bytes`,
    big,
  );
});

Deno.test("loadAcl() refuses an include larger than MAX_FILE_BYTES", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude big.conf\n");
  const big = await t.file("big.conf", ("#" + "x".repeat(4095) + "\n").repeat(257));
  assertAclError(
    () => loadAcl(main, MINE),
    `\`${big}' is larger than ${MAX_FILE_BYTES} bytes`,
    big,
  );
});

Deno.test("loadAcl() refuses a file that is not valid UTF-8", async () => {
  await using t = await Tree.create();
  for (const bad of [[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
    const bytes = new Uint8Array([...new TextEncoder().encode("allow br"), ...bad, 0x0a]);
    const main = await t.file("bridge.conf", bytes);
    assertAclError(() => loadAcl(main, MINE), `\`${main}' is not valid UTF-8`, main);
  }
});

Deno.test("loadAcl() refuses an include that is not valid UTF-8", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude latin1.conf\n");
  const inc = await t.file(
    "latin1.conf",
    new Uint8Array([0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x20, 0xe9, 0x0a]),
  );
  assertAclError(() => loadAcl(main, MINE), `\`${inc}' is not valid UTF-8`, inc);
});

Deno.test("loadAcl() accepts UTF-8 bridge names", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow brücke\n");
  assert.deepEqual(loadAcl(main, MINE), [{ kind: "allow", name: "brücke" }]);
});

Deno.test("loadAcl() treats a rule after a 4094-byte comment as comment: access is denied", async () => {
  await using t = await Tree.create();
  // C reads 4095-byte chunks, so " allow br0" becomes a line of its own and grants access.
  const main = await t.file("bridge.conf", "#" + "a".repeat(4094) + " allow br0\n");
  const rules = loadAcl(main, MINE);
  assert.deepEqual(rules, []);
  assert.equal(aclAllows(rules, "br0"), false);
  const all = await t.file("all.conf", "#" + "a".repeat(4094) + " allow all\n");
  assert.deepEqual(loadAcl(all, MINE), []);
});

Deno.test("loadAcl() reads a rule split across C's 4095-byte boundary as one rule", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow" + " ".repeat(4088) + "br0\n");
  assert.deepEqual(loadAcl(main, MINE), [{ kind: "allow", name: "br0" }]);
});

Deno.test("loadAcl() is not fooled by a missing include with a deny: it is skipped, as in C", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\ninclude deny.conf\n");
  assert.equal(aclAllows(loadAcl(main, MINE), "br0"), true);
  await t.file("deny.conf", "deny br0\n");
  assert.equal(aclAllows(loadAcl(main, MINE), "br0"), false);
});

Deno.test("loadAcl() escapes control characters of an include path in its message", async () => {
  await using t = await Tree.create();
  const dir = t.path("d\x1b[2J\tx");
  await Deno.mkdir(dir, { mode: 0o755 });
  const main = await t.file("bridge.conf", "allow br0\ninclude d\x1b[2J\tx\n");
  assertAclError(
    () => loadAcl(main, MINE),
    `\`${t.dir}/d\\x1b[2J\\tx' is not a regular file (a directory)`,
    dir,
  );
});

// --- Directories on the way to each file (OpenSSH's StrictModes): whoever can write one of them
// can replace or remove a file below it, a `deny` include with it.

/** The message for a directory on the way to `file` that fails the check. */
const unsafeDir = (dir: string, problem: string, file: string) =>
  `\`${dir}' ${problem}, so \`${file}' cannot be trusted: refusing it`;

for (
  const [mode, who] of [
    [0o775, "its group"],
    [0o770, "its group"],
    [0o757, "others"],
    [0o777, "others"],
    // Sticky (like /tmp) is refused too: anyone can still create a name that is missing, such
    // as an include that does not exist yet, or a symlink to another root-owned file.
    [0o1777, "others"],
    [0o1775, "its group"],
  ] as const
) {
  const octal = mode.toString(8).padStart(4, "0");
  Deno.test(`loadAcl() refuses a main file in a directory of mode ${octal} (writable by ${who})`, async () => {
    await using t = await Tree.create();
    const main = await t.file("etc/bridge.conf", "allow br0\n");
    const dir = await t.mkdir("etc", mode);
    assertAclError(
      () => loadAcl(main, MINE),
      unsafeDir(dir, `is writable by ${who} (mode ${octal})`, main),
      main,
    );
  });
}

Deno.test("loadAcl() checks every directory from / down, not only the file's own", async () => {
  await using t = await Tree.create();
  const main = await t.file("a/b/c/bridge.conf", "allow br0\n");
  const a = await t.mkdir("a", 0o777);
  assertAclError(
    () => loadAcl(main, MINE),
    unsafeDir(a, "is writable by others (mode 0777)", main),
    main,
  );
});

Deno.test("loadAcl() refuses a file under /tmp, which is world-writable and sticky", async () => {
  const st = await Deno.lstat("/tmp");
  assert.equal((st.mode ?? 0) & 0o7777, 0o1777, "this test expects the usual /tmp, mode 1777");
  const main = await Deno.makeTempFile({ dir: "/tmp", prefix: "vmb-acl-", suffix: ".conf" });
  try {
    await Deno.writeTextFile(main, "allow br0\n");
    await Deno.chmod(main, 0o644);
    assertAclError(
      () => loadAcl(main, MINE),
      unsafeDir("/tmp", "is writable by others (mode 1777)", main),
      main,
    );
  } finally {
    await Deno.remove(main);
  }
});

Deno.test("loadAcl() rejects the whole ACL for an include in a writable directory", async () => {
  await using t = await Tree.create();
  const main = await t.file("etc/bridge.conf", "allow all\ninclude ../drop/deny.conf\n");
  const inc = await t.file("drop/deny.conf", "deny br0\n");
  const drop = await t.mkdir("drop", 0o777);
  assertAclError(
    () => loadAcl(main, MINE),
    unsafeDir(drop, "is writable by others (mode 0777)", inc.replace("/drop/", "/etc/../drop/")),
    t.path("etc/../drop/deny.conf"),
  );
});

Deno.test("loadAcl() rejects the whole ACL for a missing include in a writable directory", async () => {
  await using t = await Tree.create();
  // Not skipped as missing: anyone may create it (or, sticky or not, a symlink of that name).
  const drop = await t.mkdir("drop", 0o1777);
  const main = await t.file("bridge.conf", `allow all\ninclude ${drop}/deny.conf\n`);
  assertAclError(
    () => loadAcl(main, MINE),
    unsafeDir(drop, "is writable by others (mode 1777)", `${drop}/deny.conf`),
    `${drop}/deny.conf`,
  );
});

rootTest("loadAcl() refuses a directory on the way that is owned by another user", async () => {
  await using t = await Tree.create();
  const main = await t.file("etc/qemu/bridge.conf", "allow br0\n");
  const etc = t.path("etc");
  await Deno.chown(etc, 65534, 65534);
  assertAclError(
    () => loadAcl(main),
    unsafeDir(etc, "is owned by uid 65534, not root", main),
    main,
  );
  // The same for an include: the whole ACL is rejected, not the include skipped.
  const top = await t.file("bridge.conf", "allow br0\ninclude etc/qemu/bridge.conf\n");
  assertAclError(() => loadAcl(top), unsafeDir(etc, "is owned by uid 65534, not root", main), main);
});

Deno.test("loadAcl() accepts directories owned by root as well as by trustedUid", async () => {
  await using t = await Tree.create();
  const main = await t.file("bridge.conf", "allow br0\n");
  // `/` is root's whoever runs this; the tree is the trusted uid's (the same when root).
  assert.deepEqual(loadAcl(main, MINE), [{ kind: "allow", name: "br0" }]);
});

Deno.test("loadAcl() follows a symlinked file and checks the directories it leads through", async () => {
  await using t = await Tree.create();
  await t.file("real/bridge.conf", "allow br0\n");
  await t.mkdir("etc");
  const main = t.path("etc/bridge.conf");
  await Deno.symlink("../real/bridge.conf", main);
  assert.deepEqual(loadAcl(main, MINE), [{ kind: "allow", name: "br0" }]);
  // The target's directory is as important as the link's.
  const real = await t.mkdir("real", 0o775);
  assertAclError(
    () => loadAcl(main, MINE),
    unsafeDir(real, "is writable by its group (mode 0775)", main),
    main,
  );
});

Deno.test("loadAcl() follows a symlinked directory, absolute or relative", async () => {
  await using t = await Tree.create();
  await t.file("real/qemu/bridge.conf", "allow br0\ninclude lab.conf\n");
  await t.file("real/qemu/lab.conf", "allow lab0\n");
  await t.mkdir("etc");
  await Deno.symlink(t.path("real/qemu"), t.path("etc/qemu"));
  await Deno.symlink("../real/qemu", t.path("etc/qemu-rel"));
  for (const dir of ["etc/qemu", "etc/qemu-rel"]) {
    assert.deepEqual(loadAcl(t.path(`${dir}/bridge.conf`), MINE), [
      { kind: "allow", name: "br0" },
      { kind: "allow", name: "lab0" },
    ]);
  }
  const real = await t.mkdir("real", 0o757);
  const main = t.path("etc/qemu-rel/bridge.conf");
  assertAclError(
    () => loadAcl(main, MINE),
    unsafeDir(real, "is writable by others (mode 0757)", main),
    main,
  );
});

Deno.test("loadAcl() refuses a symlink loop, as main file and as include", async () => {
  await using t = await Tree.create();
  const a = t.path("a.conf");
  await Deno.symlink("b.conf", a);
  await Deno.symlink("a.conf", t.path("b.conf"));
  assertAclError(
    () => loadAcl(a, MINE),
    `cannot open \`${a}': Too many levels of symbolic links`,
    a,
  );
  const main = await t.file("bridge.conf", "allow br0\ninclude a.conf\n");
  assertAclError(
    () => loadAcl(main, MINE),
    `cannot open \`${a}': Too many levels of symbolic links`,
    a,
  );
});

Deno.test("loadAcl() skips an include whose symlink leads nowhere, as a missing one", async () => {
  await using t = await Tree.create();
  await Deno.symlink("gone.conf", t.path("dangling.conf"));
  const main = await t.file("bridge.conf", "allow br0\ninclude dangling.conf\n");
  const skipped: [string, string][] = [];
  assert.deepEqual(loadAcl(main, { ...MINE, onSkip: (p, r) => skipped.push([p, r]) }), [
    { kind: "allow", name: "br0" },
  ]);
  assert.deepEqual(skipped, [[t.path("dangling.conf"), "No such file or directory"]]);
});

Deno.test({
  name: "loadAcl() refuses a relative path: there is no directory to check it from",
  permissions: "none",
  fn() {
    assertAclError(
      () => loadAcl("bridge.conf"),
      "`bridge.conf' is not an absolute path: refusing it",
      "bridge.conf",
    );
  },
});

rootTest(
  "loadAcl() as another user reads an include in a directory it may search but not list",
  async () => {
    await using t = await Tree.create();
    // 0711: others may pass through but not read the directory, which is all open(2) needs.
    const main = await t.file("bridge.conf", "allow br0\ninclude priv/lab.conf\n");
    await t.file("priv/lab.conf", "allow lab0\n");
    await t.mkdir("priv", 0o711);
    assert.deepEqual(await loadInChild(main, { asNobody: true, trustedUid: 0 }), {
      rules: [{ kind: "allow", name: "br0" }, { kind: "allow", name: "lab0" }],
      skips: [],
    });
  },
);

rootTest(
  "loadAcl() as another user skips an include below a directory it cannot enter",
  async () => {
    await using t = await Tree.create();
    const main = await t.file("bridge.conf", "allow br0\ninclude priv/deny.conf\n");
    await t.file("priv/deny.conf", "deny br0\n");
    await t.mkdir("priv", 0o700);
    assert.deepEqual(await loadInChild(main, { asNobody: true, trustedUid: 0 }), {
      rules: [{ kind: "allow", name: "br0" }],
      skips: [[t.path("priv/deny.conf"), "Permission denied"]],
    });
  },
);

Deno.test({
  name: "directoryProblem() wants root or trustedUid as owner and write for the owner only",
  permissions: "none",
  fn() {
    const dir = (mode: number, uid = 0) => ({ mode: 0o040000 | mode, uid });
    assert.equal(directoryProblem(dir(0o755)), undefined);
    assert.equal(directoryProblem(dir(0o700)), undefined);
    assert.equal(directoryProblem(dir(0o711)), undefined);
    assert.equal(directoryProblem(dir(0o755, 1000), 1000), undefined);
    assert.equal(directoryProblem(dir(0o755, 1000)), "is owned by uid 1000, not root");
    assert.equal(directoryProblem(dir(0o775)), "is writable by its group (mode 0775)");
    assert.equal(directoryProblem(dir(0o1777)), "is writable by others (mode 1777)");
    assert.equal(
      directoryProblem({ mode: 0o100644, uid: 0 }),
      "is not a directory (a regular file)",
    );
  },
});

Deno.test({
  name: "fileProblem() wants a regular file owned by trustedUid and writable by it only",
  permissions: "none",
  fn() {
    const file = (mode: number, uid = 0) => ({ mode: 0o100000 | mode, uid });
    assert.equal(fileProblem(file(0o644)), undefined);
    assert.equal(fileProblem(file(0o400)), undefined);
    assert.equal(fileProblem(file(0o644, 1000), 1000), undefined);
    // Unlike a directory, a file is not accepted from root when another uid is trusted.
    assert.equal(fileProblem(file(0o644), 1000), "is owned by uid 0, not root: refusing it");
    assert.equal(fileProblem(file(0o664)), "is writable by its group (mode 0664): refusing it");
    assert.equal(fileProblem(file(0o606)), "is writable by others (mode 0606): refusing it");
    assert.equal(fileProblem({ mode: 0o010644, uid: 0 }), "is not a regular file (a FIFO)");
  },
});
