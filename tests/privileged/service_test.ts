// The bridge service end to end: started under systemd-socket-activate in a throwaway network
// namespace with a private /etc/qemu, holding only CAP_NET_ADMIN; asked by this (root) process.

import assert from "node:assert/strict";
import { listBridgesSync, requestTap, requestTapSync, ServiceError } from "../../service/client.ts";
import { STATUS } from "../../service/protocol.ts";
import { tapInfo, vnetHdrSize } from "../../net/tap.ts";
import { ioctlValue } from "../../sys/libc.ts";
import { bridgeNetdev } from "../../net/open.ts";
import { BridgeHelperError, runHelper } from "../../net/run_helper.ts";
import { ServiceUnavailableError } from "../../service/client.ts";
import { tempDirFor } from "../_support/deno_copy.ts";
import { HELPER_FROM_SOURCE, NetNs, rootTest, run, sandbox } from "../_support/ns.ts";
import { clientSetup, noTapsLeft, SERVICE_FROM_SOURCE, startService } from "./_service.ts";
import { madeCode } from "../_support/exec_maps.ts";

const TUNSETPERSIST = 0x400454cb;

rootTest(
  "service: a tap on br0 for the asking client, bridged, up, MTU copied, labelled, audited",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0", { mtu: 1400 });
    await using svc = await startService(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    {
      using fd = requestTapSync("br0", true, { socket: svc.socket, timeoutMs: 30_000 });
      const info = tapInfo(fd.value);
      assert.equal(info.tap, true);
      assert.equal(info.vnetHdr, true);
      assert.equal(vnetHdrSize(fd.value), 10);
      const link = JSON.parse(await ns.ip("-j", "-d", "link", "show", info.name))[0];
      assert.equal(link.master, "br0");
      assert.equal(link.mtu, 1400);
      assert.ok(link.flags.includes("UP"), JSON.stringify(link.flags));
      assert.match(link.address, /^fe:/);
      assert.match(link.ifalias, new RegExp(`^vm-bridge uid=0 gid=0 pid=${Deno.pid} comm=deno$`));
      const line = await svc.waitFor(/event=request .*decision=allow/);
      assert.match(
        line,
        new RegExp(
          `^time=\\S+ event=request uid=0 gid=0 pid=${Deno.pid} comm=deno op=open bridge=br0 kind=linux ` +
            `tap=${info.name} decision=allow reason=ok$`,
        ),
      );
    }
    assert.deepEqual(await noTapsLeft(ns), [], "the tap goes with the client's fd");
    assert.deepEqual(listBridgesSync({ socket: svc.socket }), ["br0"]);
    // Having served, it made no machine code: --jitless, libc through addresses (SECURITY.md).
    const maps = (await Deno.readTextFile(`/proc/${svc.pid}/maps`)).trim().split("\n");
    assert.ok(maps.some((l) => /\/deno$/.test(l)), `not the service's map: ${maps.join("; ")}`);
    assert.deepEqual(madeCode(maps), []);
  },
);

rootTest("service: refusals carry the helper's one-line messages and leave no tap", async () => {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  await ns.bridge("br1", { mac: "02:00:00:00:00:02" });
  await using svc = await startService(ns, {
    etcQemu: { "bridge.conf": "allow br0\nallow nosuch\nallow prod0\n" },
  });
  const refused = async (bridge: string): Promise<ServiceError> => {
    try {
      (await requestTap(bridge, false, { socket: svc.socket, timeoutMs: 30_000 })).close();
    } catch (e) {
      assert.ok(e instanceof ServiceError, String(e));
      return e;
    }
    throw new Error(`expected a refusal for ${bridge}`);
  };
  const denied = await refused("br1");
  assert.equal(denied.status, STATUS.DENIED);
  assert.equal(denied.message, "access denied by acl file");
  const missing = await refused("nosuch");
  assert.equal(missing.status, STATUS.FAILED);
  assert.equal(missing.message, "failed to get mtu of bridge `nosuch': No such device");
  await ns.ip("link", "property", "add", "dev", "br1", "altname", "prod0");
  const altname = await refused("prod0");
  assert.equal(altname.status, STATUS.BAD_REQUEST);
  assert.equal(altname.message, "bridge `prod0' is an alternative name of `br1': use its name");
  const badName = await refused("a/b");
  assert.equal(badName.status, STATUS.BAD_REQUEST);
  assert.deepEqual(await noTapsLeft(ns), []);
  await svc.waitFor(/bridge=br1 decision=denied reason="access denied by acl file"/);
  assert.deepEqual(listBridgesSync({ socket: svc.socket }), ["br0"]);
});

rootTest(
  "service: a tap its holder makes persistent is deleted, and so never outlives the VM",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using svc = await startService(ns, {
      etcQemu: { "bridge.conf": "allow br0\n" },
      args: ["--sweep-ms", "100"],
    });
    using fd = requestTapSync("br0", false, { socket: svc.socket, timeoutMs: 30_000 });
    const name = tapInfo(fd.value).name;
    ioctlValue(fd.value, TUNSETPERSIST, 1, "TUNSETPERSIST"); // needs no capability
    await svc.waitFor(new RegExp(`event=tap-persistent .*tap=${name} action=deleted`));
    assert.deepEqual(await noTapsLeft(ns), [], "deleted while the fd is still open");
    fd.close();
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);

rootTest(
  "service: the per-user live-tap limit refuses with a clear message, and frees up",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using svc = await startService(ns, {
      etcQemu: { "bridge.conf": "allow br0\n" },
      args: ["--max-taps-per-user", "2"],
    });
    const opts = { socket: svc.socket, timeoutMs: 30_000 };
    const a = requestTapSync("br0", false, opts);
    using b = requestTapSync("br0", false, opts);
    assert.throws(() => requestTapSync("br0", false, opts), {
      name: "ServiceError",
      message: "too many taps: uid 0 has 2 of 2 allowed",
    });
    a.close();
    await noTapsLeft(ns, 300); // let the kernel remove it
    using c = requestTapSync("br0", false, opts);
    assert.notEqual(tapInfo(c.value).name, tapInfo(b.value).name);
  },
);

rootTest("service: refuses to start holding more than CAP_NET_ADMIN", async () => {
  const out = await run([SERVICE_FROM_SOURCE, "--listen", "/nonexistent/x"]);
  assert.equal(out.code, 1);
  assert.match(
    out.stderr.trim(),
    /^vm-bridged: refusing to run: thread \d+ holds more than CAP_NET_ADMIN: Cap\w+=[0-9a-f]+; start it from vm-bridge\.service/,
  );
});

rootTest("service: the preload guard refuses any other main module", async () => {
  const out = await run([
    "deno",
    "run",
    "--quiet",
    "--allow-ffi",
    "--preload",
    `${SERVICE_FROM_SOURCE}/../../service/guard.ts`,
    `${SERVICE_FROM_SOURCE}/../../service/args.ts`,
  ]);
  assert.equal(out.code, 70);
  assert.match(out.stderr, /only service\/main\.ts may run/);
});

rootTest(
  "bridgeNetdev(): asks the service when it listens (no process), falls back to the helper, and via forces either",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using svc = await startService(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    const nohelper = "/nonexistent/qemu-bridge-helper";
    {
      await using nic = await bridgeNetdev({
        br: "br0",
        helper: nohelper,
        serviceSocket: svc.socket,
      });
      assert.match(nic.name, /^tap\d+$/);
      await svc.waitFor(new RegExp(`tap=${nic.name} decision=allow`));
    }
    const missing = `${svc.dir}/no-such-socket`;
    await assert.rejects(
      bridgeNetdev({ br: "br0", helper: nohelper, serviceSocket: missing }),
      BridgeHelperError,
      "auto falls back to the helper when no service listens",
    );
    await assert.rejects(
      bridgeNetdev({ br: "br0", helper: nohelper, serviceSocket: missing, via: "service" }),
      ServiceUnavailableError,
    );
    await assert.rejects(
      bridgeNetdev({ br: "br0", helper: nohelper, serviceSocket: svc.socket, via: "helper" }),
      BridgeHelperError,
      "via helper never asks the service",
    );
    await assert.rejects(
      bridgeNetdev({ br: "br1", helper: nohelper, serviceSocket: svc.socket }),
      { name: "ServiceError", message: "access denied by acl file" },
      "a refusal does not fall back",
    );
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);

rootTest(
  "--check as uid 65534 with no capability reports the service and the bridges it would give",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await ns.bridge("br1", { mac: "02:00:00:00:00:02" });
    await using svc = await startService(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    const sb = await sandbox(ns, {
      user: { uid: 65534, gid: 65534 },
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup: clientSetup(svc, denoDir.path),
    });
    try {
      const r = await run([...sb.argv, HELPER_FROM_SOURCE, "--check"]);
      const lines = r.stdout.trim().split("\n");
      assert.equal(
        lines[0],
        "ok   the bridge service at `/run/vm-bridge/socket' answers and would give you `br0'",
        r.stdout + r.stderr,
      );
      assert.equal(
        lines[1],
        "ok   no CAP_NET_ADMIN, which is fine: the bridge service creates taps",
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
    } finally {
      await sb.cleanup();
    }
  },
);

rootTest(
  "the unprivileged helper without a service fails as before, with a hint naming both fixes",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using denoDir = await tempDirFor(65534, 0o700, "vmb-denodir-");
    const sb = await sandbox(ns, {
      user: { uid: 65534, gid: 65534 },
      tun0666: true,
      etcQemu: { "bridge.conf": "allow br0\n" },
      setup: `export DENO_DIR=${denoDir.path}\nmount -t tmpfs -o mode=0755 vmb-run /run`,
    });
    try {
      let caught: unknown;
      try {
        (await runHelper({
          helper: [...sb.argv, HELPER_FROM_SOURCE],
          bridge: "br0",
          vnetHdr: false,
        }))
          .close();
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof BridgeHelperError, String(caught));
      const lines = caught.stderr.trim().split("\n");
      assert.equal(lines[0], "failed to create tun device: Operation not permitted");
      assert.match(
        lines[1]!,
        /^hint: .*no bridge service listens on `\/run\/vm-bridge\/socket': start the service \(systemctl enable --now vm-bridge\.socket\) or give the helper the capability \(sudo deno task install-suid\)$/,
      );
    } finally {
      await sb.cleanup();
    }
  },
);
