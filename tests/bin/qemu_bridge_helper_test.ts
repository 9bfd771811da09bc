// bin/qemu-bridge-helper, the from-source runner QEMU and the tests use: it must find guard.ts
// and helper.ts however it is started, and start deno without forking anything else first
// (readlink and dirname cost about 10 ms of the helper's start-up on this 2-core machine). Also,
// for it and bin/vm-bridged: with their flags, the guard forbids executable memory and nothing
// executable is mapped but the binaries.

import assert from "node:assert/strict";
import { USAGE } from "../../cli/args.ts";
import { HELPER_FROM_SOURCE, ROOT } from "../_support/ns.ts";

/** Runs `argv` with no arguments for the helper: it must load, then refuse with the usage. */
async function usageRun(argv: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, `${argv.join(" ")} in ${cwd}: exit ${out.code}: ${stderr}`);
  assert.equal(stderr, `${USAGE}\n`, `${argv.join(" ")} in ${cwd}`);
}

/** Runs `program` with no arguments under `strace -f -e trace=<calls>`: it must exit 1. */
async function straced(program: string, calls: string): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "vmb-bin-test-" });
  try {
    const out = await new Deno.Command("strace", {
      args: ["-f", "-qq", "-e", `trace=${calls}`, "-o", `${dir}/trace`, program],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 1, new TextDecoder().decode(out.stderr));
    return (await Deno.readTextFile(`${dir}/trace`)).split("\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bin/qemu-bridge-helper finds its modules by absolute and relative path", async () => {
  await usageRun([HELPER_FROM_SOURCE], "/");
  await usageRun(["bin/qemu-bridge-helper"], ROOT);
  await usageRun(["./qemu-bridge-helper"], `${ROOT}/bin`);
  await usageRun(["sh", "qemu-bridge-helper"], `${ROOT}/bin`);
});

Deno.test("bin/qemu-bridge-helper finds its modules through a symlink to it or to bin/", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmb-bin-test-" });
  try {
    await Deno.symlink(HELPER_FROM_SOURCE, `${dir}/qbh`);
    await usageRun([`${dir}/qbh`], "/");
    await usageRun(["./qbh"], dir);
    // bin/ itself a symlink: `${dir}/bin/..' is ${dir} lexically, the repository physically.
    await Deno.symlink(`${ROOT}/bin`, `${dir}/bin`);
    await usageRun([`${dir}/bin/qemu-bridge-helper`], "/");
    await usageRun(["bin/qemu-bridge-helper"], dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bin/qemu-bridge-helper execs deno straight away: no readlink, dirname or other child", async () => {
  const lines = await straced(HELPER_FROM_SOURCE, "execve,clone,clone3,fork,vfork");
  // The first program is the script (run by sh), the second must be deno itself.
  const programs = lines.flatMap((l) => /execve\("([^"]+)"/.exec(l)?.[1] ?? []);
  assert.equal(programs[0], HELPER_FROM_SOURCE);
  assert.match(programs[1] ?? "", /\/deno$/, `programs started: ${programs.join(", ")}`);
  // No process (as opposed to deno's own threads, which clone with CLONE_THREAD) before that.
  const firstDeno = lines.findIndex((l) => /execve\("[^"]*\/deno"/.test(l));
  const forks = lines.slice(0, firstDeno).filter((l) =>
    /\b(v?fork|clone3?)\(/.test(l) && !/CLONE_THREAD/.test(l)
  );
  assert.deepEqual(forks, [], "the wrapper forked before starting deno");
});

for (
  const [name, program] of [
    ["the helper", HELPER_FROM_SOURCE],
    // As root with every capability it refuses to serve, after its guard ran.
    ["the bridge service", `${ROOT}/bin/vm-bridged`],
  ] as const
) {
  Deno.test(`${name} forbids executable memory from its guard on, and never asks for any`, async () => {
    const lines = await straced(program, "prctl,mmap,mprotect");
    // PR_SET_MDWE (0x41) with PR_MDWE_REFUSE_EXEC_GAIN; strace 6.1 knows it by number only.
    const mdwe = lines.findIndex((l) =>
      /prctl\((PR_SET_MDWE|0x41 \/\* PR_\?\?\? \*\/), (PR_MDWE_REFUSE_EXEC_GAIN|0x1),/.test(l)
    );
    assert.ok(mdwe >= 0, "the guard did not ask for PR_SET_MDWE");
    const [major = 0, minor = 0] = Deno.osRelease().split(".").map(Number);
    // Linux 6.3 added it; an older kernel refuses it (unless a distribution backported it), and
    // the guard goes on without it.
    const expected = major > 6 || (major === 6 && minor >= 3) ? / = 0$/ : / = (0|-1 EINVAL .*)$/;
    assert.match(lines[mdwe]!, expected);
    // The only executable mappings are the binaries' (file-backed, read-only), all made by the
    // dynamic loader before the runtime starts; nothing after, nothing anonymous, nothing
    // writable and executable, and no mprotect that adds execution (without --jitless, V8's
    // mprotect of a read-write-execute code space shows here).
    const exec = lines.filter((l) => /PROT_EXEC/.test(l));
    assert.ok(exec.length > 0, "strace saw no mapping of a binary: the trace is wrong");
    for (const l of exec) {
      assert.match(
        l,
        /^\d+ +mmap\(.*PROT_READ\|PROT_EXEC, MAP_PRIVATE\|MAP_FIXED\|MAP_DENYWRITE, \d+,/,
        l,
      );
    }
    const lastExec = lines.findLastIndex((l) => /PROT_EXEC/.test(l));
    assert.ok(lastExec < mdwe, `executable memory mapped after the guard: ${lines[lastExec]}`);
  });
}
