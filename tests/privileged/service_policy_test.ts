// The service decides per user exactly as our helper run by that user decides. Differential:
// several users with different groups, many ACL trees (group-only includes, deny rules in
// them, missing includes, unreadable directories, broken files only some can read), every
// bridge: the helper run as the user without privilege and without service (its ACL verdict)
// against the same unprivileged helper run as the same user asking the service.

import assert from "node:assert/strict";
import { BridgeHelperError, runHelper } from "../../net/run_helper.ts";
import { tempDirFor } from "../_support/deno_copy.ts";
import {
  HELPER_FROM_SOURCE,
  NetNs,
  rootTest,
  sandbox,
  type SandboxOptions,
} from "../_support/ns.ts";
import { noTapsLeft, startService } from "./_service.ts";

const LAB = 60100;
const OPS = 60101;

/** The users: groups decide which includes they can read. */
const USERS = [
  { name: "lab member", uid: 60001, gid: 60001, groups: [LAB] },
  { name: "ops member", uid: 60002, gid: 60002, groups: [OPS] },
  { name: "lab as primary group", uid: 60003, gid: LAB, groups: [] },
  { name: "lab and ops", uid: 60004, gid: 60004, groups: [LAB, OPS] },
  { name: "nobody", uid: 65534, gid: 65534, groups: [] },
];

const BRIDGES = ["br0", "br1", "br2"];

type Tree = NonNullable<SandboxOptions["etcQemu"]>;
const f = (text: string, mode: number, gid = 0) => ({ text, mode, gid });

/** The ACL trees: name → private /etc/qemu, plus directory modes to apply. */
const TREES: Array<{ name: string; tree: Tree; setup?: string }> = [
  {
    name: "group-only includes with deny rules, and a missing include",
    tree: {
      "bridge.conf": f(
        "allow br0\ninclude /etc/qemu/lab.conf\ninclude /etc/qemu/ops.conf\n" +
          "include /etc/qemu/missing.conf\n",
        0o644,
      ),
      "lab.conf": f("allow br1\ndeny br0\n", 0o640, LAB),
      "ops.conf": f("allow all\ndeny br2\n", 0o640, OPS),
    },
  },
  {
    name: "main file readable by lab only",
    tree: { "bridge.conf": f("allow all\n", 0o640, LAB) },
  },
  {
    name: "include in a directory only lab may search",
    tree: {
      "bridge.conf": f("allow br0\ninclude /etc/qemu/lab.d/x.conf\n", 0o644),
      "lab.d/x.conf": f("allow br2\n", 0o644),
    },
    setup: `chgrp ${LAB} /etc/qemu/lab.d && chmod 0750 /etc/qemu/lab.d`,
  },
  {
    name: "deny all in an ops-only include",
    tree: {
      "bridge.conf": f("allow all\ninclude ops.conf\n", 0o644),
      "ops.conf": f("deny all\n", 0o640, OPS),
    },
  },
  {
    name: "a group-writable include only lab can read is refused by those who read it",
    tree: {
      "bridge.conf": f("allow br1\ninclude lab.conf\n", 0o644),
      "lab.conf": f("allow br2\n", 0o660, LAB),
    },
  },
  {
    name: "a syntax error in an ops-only include",
    tree: {
      "bridge.conf": f("allow br0\ninclude ops.conf\n", 0o644),
      "ops.conf": f("allow br1\npermit br2\n", 0o640, OPS),
    },
  },
  {
    name: "a root-only include and nested group includes",
    tree: {
      "bridge.conf": f("include root.conf\ninclude lab.conf\n", 0o644),
      "root.conf": f("allow all\n", 0o600),
      "lab.conf": f("allow br0\ninclude ops.conf\n", 0o640, LAB),
      "ops.conf": f("allow br1\n", 0o640, OPS),
    },
  },
  {
    name: "no bridge.conf at all",
    tree: { "other.conf": f("allow all\n", 0o644) },
  },
];

/** The helper's verdict from its exit: "allow" past the ACL, else its first stderr line. */
async function verdict(p: Promise<{ close(): void }>, viaService: boolean): Promise<string> {
  try {
    (await p).close();
    return "allow";
  } catch (e) {
    if (!(e instanceof BridgeHelperError)) throw e;
    const first = e.stderr.split("\n")[0] ?? "";
    // Without privilege and without service, getting past the ACL ends at the kernel.
    if (!viaService && /^failed to (open \/dev\/net\/tun|create tun device): /.test(first)) {
      return "allow";
    }
    return first;
  }
}

rootTest(
  "service policy equals the helper's decision for each user, ACL tree and bridge",
  async () => {
    await using ns = await NetNs.create();
    for (const [i, br] of BRIDGES.entries()) {
      await ns.bridge(br, {
        mac: `02:00:00:00:00:0${i + 1}`,
      });
    }
    const dirs: Array<{ path: string } & AsyncDisposable> = [];
    for (const u of USERS) dirs.push(await tempDirFor(u.uid, 0o700, "vmb-denodir-"));
    try {
      let compared = 0;
      let allowed = 0;
      for (const { name, tree, setup } of TREES) {
        await using svc = await startService(ns, { etcQemu: tree, ...(setup ? { setup } : {}) });
        // One user at a time, its bridges in parallel: six Deno processes at once is enough here.
        for (const [ui, u] of USERS.entries()) {
          await Promise.all(BRIDGES.map(async (br) => {
            const env = `export DENO_DIR=${dirs[ui]!.path}`;
            const user = { uid: u.uid, gid: u.gid, groups: u.groups };
            const plain = await sandbox(ns, {
              etcQemu: tree,
              user,
              setup: [setup ?? "", env].join("\n"),
            });
            const client = await sandbox(ns, {
              etcQemu: { "bridge.conf": "deny all\n" }, // the client's own view must not matter
              user,
              setup: [
                env,
                "mount -t tmpfs -o mode=0755 vmb-run /run",
                "mkdir /run/vm-bridge",
                `mount --bind ${svc.dir} /run/vm-bridge`,
              ].join("\n"),
            });
            try {
              const opts = { bridge: br, vnetHdr: false, signal: AbortSignal.timeout(120_000) };
              const [helper, service] = await Promise.all([
                verdict(runHelper({ ...opts, helper: [...plain.argv, HELPER_FROM_SOURCE] }), false),
                verdict(runHelper({ ...opts, helper: [...client.argv, HELPER_FROM_SOURCE] }), true),
              ]);
              assert.equal(service, helper, `${name}: ${u.name} asking for ${br}`);
              compared++;
              if (helper === "allow") allowed++;
            } finally {
              await plain.cleanup();
              await client.cleanup();
            }
          }));
        }
        assert.deepEqual(await noTapsLeft(ns), []);
      }
      console.log(`${compared} decisions compared, ${allowed} allowed`);
      assert.equal(compared, TREES.length * USERS.length * BRIDGES.length);
      assert.ok(allowed > 10 && allowed < compared - 10, "the trees allow some and deny some");
    } finally {
      for (const d of dirs) await d[Symbol.asyncDispose]();
    }
  },
);
