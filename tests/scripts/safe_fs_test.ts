// Tests for scripts/_safe_fs.ts: the directory rule (pure), and the fd-relative writes and
// deletions as root in scratch directories under a root-only chain.

import assert from "node:assert/strict";
import {
  judgeDirectory,
  judgeOwnFile,
  pathComponents,
  SafeDir,
  splitPath,
  UnsafePathError,
} from "../../scripts/_safe_fs.ts";
import { OsError } from "../../sys/libc.ts";
import { listTree } from "../_support/deno_copy.ts";
import { rootTest } from "../_support/ns.ts";
import { rootTempDir } from "../_support/root_tmp.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

test("judgeDirectory() wants a root-owned directory without group or other write", () => {
  assert.equal(judgeDirectory("/usr", { uid: 0, mode: 0o40755 }), undefined);
  assert.equal(judgeDirectory("/root", { uid: 0, mode: 0o40700 }), undefined);
  assert.equal(
    judgeDirectory("/x", { uid: 1000, mode: 0o40755 }),
    "`/x' is owned by uid 1000, not root",
  );
  assert.equal(
    judgeDirectory("/x", { uid: 0, mode: 0o40775 }),
    "`/x' is writable by group or others (mode 0775)",
  );
  // No exception for sticky directories: /tmp is refused as an ancestor.
  assert.equal(
    judgeDirectory("/tmp", { uid: 0, mode: 0o41777 }),
    "`/tmp' is writable by group or others (mode 1777)",
  );
  assert.equal(
    judgeDirectory("/x", { uid: 0, mode: 0o120777 }),
    "`/x' is a symbolic link: give the real path instead",
  );
  assert.equal(judgeDirectory("/x", { uid: 0, mode: 0o100644 }), "`/x' is not a directory");
  assert.equal(judgeOwnFile("/m", { uid: 0, mode: 0o100644 }), undefined);
  assert.equal(
    judgeOwnFile("/m", { uid: 0, mode: 0o100664 }),
    "`/m' is writable by group or others (mode 0664)",
  );
  assert.equal(judgeOwnFile("/m", { uid: 7, mode: 0o100600 }), "`/m' is owned by uid 7, not root");
  assert.equal(judgeOwnFile("/m", { uid: 0, mode: 0o120777 }), "`/m' is a symbolic link");
});

test("pathComponents() refuses relative paths, . and .. instead of resolving them", () => {
  assert.deepEqual(pathComponents("/usr//local/"), ["usr", "local"]);
  assert.deepEqual(pathComponents("/"), []);
  for (const bad of ["usr/local", "/usr/../etc", "/usr/./x", ""]) {
    assert.throws(() => pathComponents(bad), UnsafePathError);
  }
  assert.deepEqual(splitPath("/a/b/c"), { dir: "/a/b", name: "c" });
  assert.deepEqual(splitPath("/c"), { dir: "/", name: "c" });
  assert.throws(() => splitPath("/"), UnsafePathError);
});

rootTest(
  "SafeDir.open() walks from / and refuses a user-owned directory, a symlink, /tmp",
  async () => {
    await using base = await rootTempDir("vmb-safe-fs-");
    const user = `${base.path}/user`;
    await Deno.mkdir(`${user}/deeper`, { recursive: true });
    await Deno.chown(user, 65534, 65534);
    await Deno.symlink("/etc", `${base.path}/link`);
    const tmp = await Deno.makeTempDir({ prefix: "vmb-safe-fs-" });
    try {
      const cases: [string, string][] = [
        [`${user}/deeper`, `\`${user}' is owned by uid 65534, not root`],
        [
          `${base.path}/link`,
          `\`${base.path}/link' is a symbolic link: give the real path instead`,
        ],
        [
          `${base.path}/link/qemu`,
          `\`${base.path}/link' is a symbolic link: give the real path instead`,
        ],
        [tmp, "`/tmp' is writable by group or others (mode 1777)"],
        [`${base.path}/missing`, `\`${base.path}/missing' does not exist`],
      ];
      for (const [path, message] of cases) {
        assert.throws(() => SafeDir.open(path), { name: "UnsafePathError", message });
      }
      assert.equal(SafeDir.inspect(`${base.path}/a/b`), `${base.path}/a`);
      assert.equal(SafeDir.inspect(base.path), null);
      // create: every missing component, root:root 0755.
      SafeDir.open(`${base.path}/a/b`, { create: true }).close();
      for (const dir of [`${base.path}/a`, `${base.path}/a/b`]) {
        const st = await Deno.lstat(dir);
        assert.equal(st.uid, 0);
        assert.equal(st.mode! & 0o7777, 0o755);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

rootTest(
  "SafeDir.writeFile() never follows a symlink and sets owner and mode through the fd",
  async () => {
    await using base = await rootTempDir("vmb-safe-fs-");
    const victim = `${base.path}/victim`;
    await Deno.writeTextFile(victim, "secret\n", { mode: 0o600 });
    await Deno.mkdir(`${base.path}/d`, { mode: 0o755 });
    // A symlink where the file goes: replaced by the new file, the victim untouched.
    await Deno.symlink(victim, `${base.path}/d/file`);
    {
      using d = SafeDir.open(`${base.path}/d`);
      d.writeFile("file", new TextEncoder().encode("new\n"), {
        uid: 0,
        gid: 65534,
        mode: 0o640,
        replace: true,
      });
    }
    assert.equal(await Deno.readTextFile(victim), "secret\n");
    assert.equal((await Deno.stat(victim)).mode! & 0o7777, 0o600);
    const st = await Deno.lstat(`${base.path}/d/file`);
    assert.ok(st.isFile);
    assert.equal(st.gid, 65534);
    assert.equal(st.mode! & 0o7777, 0o640);
    assert.equal(await Deno.readTextFile(`${base.path}/d/file`), "new\n");

    // replace: false keeps what is there (even a symlink) and leaves no temporary file.
    await Deno.symlink(victim, `${base.path}/d/conf`);
    {
      using d = SafeDir.open(`${base.path}/d`);
      assert.throws(
        () =>
          d.writeFile("conf", new TextEncoder().encode("x"), {
            uid: 0,
            gid: 0,
            mode: 0o644,
            replace: false,
          }),
        (e) => e instanceof OsError && e.code === "EEXIST",
      );
    }
    assert.equal(await Deno.readTextFile(victim), "secret\n");
    assert.deepEqual(await listTree(`${base.path}/d`), ["conf", "file"]);
  },
);

rootTest(
  "SafeDir.removeFile() and removeDir() check first and keep what does not pass",
  async () => {
    await using base = await rootTempDir("vmb-safe-fs-");
    await Deno.mkdir(`${base.path}/d/sub`, { recursive: true });
    await Deno.writeTextFile(`${base.path}/d/f`, "changed\n");
    await Deno.writeTextFile(`${base.path}/d/sub/x`, "");
    await Deno.symlink(`${base.path}/d/f`, `${base.path}/d/link`);
    using d = SafeDir.open(`${base.path}/d`);
    assert.throws(() => d.removeFile("f", 100, () => "f changed meanwhile"), {
      message: "f changed meanwhile",
    });
    assert.throws(() => d.removeFile("link", 100, () => undefined), {
      name: "UnsafePathError",
      message: `\`${base.path}/d/link' is a symbolic link`,
    });
    assert.equal(d.removeDir("sub"), "not empty");
    assert.equal(d.removeDir("nothing"), "absent");
    assert.deepEqual(await listTree(`${base.path}/d`), ["f", "link", "sub", "sub/x"]);
    assert.equal(d.removeFile("f", 100, () => undefined), true);
    assert.equal(d.removeFile("f", 100, () => undefined), false);
    await Deno.remove(`${base.path}/d/sub/x`);
    assert.equal(d.removeDir("sub"), "removed");
    assert.deepEqual(await listTree(`${base.path}/d`), ["link"]);
  },
);
