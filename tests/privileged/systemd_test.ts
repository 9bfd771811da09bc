// The shipped units (systemd/vm-bridge.socket and vm-bridge.service, read from the repository
// unchanged) under a real systemd: Debian's systemd as PID 1 of a throwaway container in a
// network namespace of the test's own (tests/_support/systemd.ts). systemd-analyze scores the
// unit offline (tests/service/units_test.ts); this runs it, with every sandboxing directive
// applied by systemd itself: the seccomp filters, ProtectSystem, DevicePolicy, the capability
// bounding set, socket activation.
//
// Besides the units the container has one drop-in, for running the service from source where
// `deno compile` cannot run: DENO_DIR in the service's private /tmp (ProtectHome hides root's
// cache, and the compiled service needs none) and stderr to a file (no journald runs here). And
// /usr/local/libexec/vm-bridged, the unit's ExecStart, is a link to bin/vm-bridged, which runs
// service/main.ts with exactly the flags `deno task compile:service` embeds.

import assert from "node:assert/strict";
import { madeCode } from "../_support/exec_maps.ts";
import { NetNs, ROOT, rootTest, run } from "../_support/ns.ts";
import { OvsInstance } from "../_support/ovs.ts";
import { REPO, SystemdContainer } from "../_support/systemd.ts";
import { noTapsLeft } from "./_service.ts";

const LOG = "/run/vmb-service.log";
const FROM_SOURCE_DROP_IN =
  `[Service]\nEnvironment=DENO_DIR=/tmp/deno\nStandardError=file:${LOG}\n`;
// Paths inside the container: the checkout is at REPO there.
const ASK = `${REPO}/tests/_support/ask_tap.ts`;
const HELPER = `${REPO}/bin/qemu-bridge-helper`;
const SERVICE = `${REPO}/bin/vm-bridged`;
/** CAP_NET_ADMIN (12) alone, as /proc/PID/status shows a capability set. */
const NET_ADMIN_ONLY = (1n << 12n).toString(16).padStart(16, "0");

/** The shipped units, unchanged, and the drop-in for running from source. */
async function shippedUnits(): Promise<Record<string, string>> {
  return {
    "vm-bridge.socket": await Deno.readTextFile(`${ROOT}/systemd/vm-bridge.socket`),
    "vm-bridge.service": await Deno.readTextFile(`${ROOT}/systemd/vm-bridge.service`),
    "vm-bridge.service.d/from-source.conf": FROM_SOURCE_DROP_IN,
  };
}

/** As uid 65534, with no privilege, in the container. */
const NOBODY = [
  "setpriv",
  "--reuid=65534",
  "--regid=65534",
  "--clear-groups",
  "--inh-caps=-all",
  "env",
  "DENO_DIR=/tmp/deno-65534",
];

type Answer = { tap?: string; vnetHdr?: boolean; error?: string };

/**
 * Asks for a tap on `bridge` inside the container: as QEMU would, through our helper run as
 * uid 65534 without privilege ("helper"), or as the library would, from the service directly
 * as uid 65534 ("service").
 */
async function ask(
  sd: SystemdContainer,
  how: "helper" | "service",
  bridge: string,
): Promise<Answer> {
  await run(sd.exec(["install", "-d", "-o", "65534", "-g", "65534", "/tmp/deno-65534"]));
  const deno = [Deno.execPath(), "run", "--allow-all", "--no-lock", ASK, how, bridge];
  const r = await run(
    sd.exec(
      how === "helper"
        ? ["env", "DENO_DIR=/tmp/deno-root", ...deno, ...NOBODY, HELPER]
        : [...NOBODY, ...deno],
    ),
  );
  assert.equal(r.code, 0, `ask_tap.ts: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!) as Answer;
}

/**
 * The mount a path is on, from a /proc/PID/mountinfo: the one with the longest mount point that
 * is the path or above it, the last listed where mounts are stacked (the one on top).
 */
function mountOf(mountinfo: string, path: string): { mountPoint: string; readOnly: boolean } {
  let best: { mountPoint: string; readOnly: boolean } | undefined;
  for (const line of mountinfo.split("\n")) {
    const [, , , , mountPoint, options] = line.split(" ");
    if (mountPoint === undefined || options === undefined) continue;
    const above = mountPoint === "/" || path === mountPoint || path.startsWith(`${mountPoint}/`);
    if (above && mountPoint.length >= (best?.mountPoint.length ?? 0)) {
      best = { mountPoint, readOnly: options.split(",").includes("ro") };
    }
  }
  if (best === undefined) throw new Error(`no mount holds ${path}`);
  return best;
}

/** The service's audit lines so far. */
async function audit(sd: SystemdContainer): Promise<string[]> {
  return (await sd.readFile(LOG).catch(() => "")).split("\n").filter((l) => l !== "");
}

rootTest(
  "systemd: the shipped units under a real systemd start the service on the first request, " +
    "with CAP_NET_ADMIN only and its seccomp filters, serve an unprivileged helper, refuse by " +
    "the ACL, and stop cleanly",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await ns.bridge("br1", { mac: "02:00:00:00:00:02" });
    await using sd = await SystemdContainer.start(ns, {
      units: await shippedUnits(),
      start: ["vm-bridge.socket"],
      etcQemu: { "bridge.conf": "allow br0\n" },
      usrLocal: { "libexec/vm-bridged": SERVICE },
    });
    const ctx = () => sd.context();

    // Booted: the socket listens where clients look; the service waits for its first client.
    assert.equal(await sd.property("vm-bridge.socket", "SubState"), "listening", await ctx());
    assert.equal(await sd.property("vm-bridge.service", "ActiveState"), "inactive", await ctx());

    // 1. The helper without CAP_NET_ADMIN asks the service, which systemd starts on that request.
    const first = await ask(sd, "helper", "br0");
    assert.ok(first.tap, `no tap: ${first.error}\n${await ctx()}`);
    assert.equal(first.vnetHdr, true);
    const allowed = (await audit(sd)).find((l) => / event=request /.test(l));
    assert.match(
      allowed ?? "",
      new RegExp(
        `^time=\\S+ event=request uid=65534 gid=65534 pid=\\d+ comm=\\S+ op=open bridge=br0 ` +
          `kind=linux tap=${first.tap} decision=allow reason=ok$`,
      ),
      (await audit(sd)).join("\n"),
    );
    assert.deepEqual(await noTapsLeft(ns), [], "the tap goes with the helper's caller's fd");

    // 2. What systemd made of the unit, read from the running service.
    assert.equal(await sd.property("vm-bridge.service", "ActiveState"), "active", await ctx());
    const mainPid = Number(await sd.property("vm-bridge.service", "MainPID"));
    assert.ok(mainPid > 1, `MainPID ${mainPid}`);
    const status = await sd.readFile(`/proc/${mainPid}/status`);
    const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1];
    assert.deepEqual(
      {
        CapEff: field("CapEff"),
        CapPrm: field("CapPrm"),
        CapBnd: field("CapBnd"),
        CapInh: field("CapInh"),
        CapAmb: field("CapAmb"),
        NoNewPrivs: field("NoNewPrivs"),
        Seccomp: field("Seccomp"),
      },
      {
        CapEff: NET_ADMIN_ONLY,
        CapPrm: NET_ADMIN_ONLY,
        CapBnd: NET_ADMIN_ONLY,
        CapInh: "0000000000000000",
        CapAmb: "0000000000000000",
        NoNewPrivs: "1",
        Seccomp: "2",
      },
    );
    assert.ok(Number(field("Seccomp_filters")) > 0, status);
    // (The path as this process's cgroup namespace shows it: the container's cgroup above.)
    assert.match(
      await sd.readFile(`/proc/${mainPid}/cgroup`),
      /^0::(\/[^\n]*)?\/system\.slice\/vm-bridge\.service$/m,
    );
    // ProtectSystem=strict and ReadOnlyPaths=: it can write nowhere but its private /tmp. (/run
    // is on that list because systemd 252 leaves it writable under ProtectSystem=strict once
    // any of ProtectKernelTunables=, ProtectControlGroups= or ProcSubset= is set:
    // they mount the API file systems, /run among them, and so exempt it.)
    const mounts = await sd.readFile(`/proc/${mainPid}/mountinfo`);
    const writable = [
      "/",
      "/etc",
      "/usr",
      "/var",
      "/run",
      "/run/vm-bridge",
      "/run/lock",
      "/dev/shm",
    ]
      .filter((path) => !mountOf(mounts, path).readOnly);
    assert.deepEqual(writable, [], mounts);
    assert.equal(mountOf(mounts, "/tmp").readOnly, false, "PrivateTmp= gives it a writable /tmp");
    // MemoryDenyWriteExecute=yes holds because the service made no machine code (--jitless).
    assert.deepEqual(madeCode((await sd.readFile(`/proc/${mainPid}/maps`)).trim().split("\n")), []);

    // 3. A bridge the ACL does not allow: the helper fails with the service's refusal, and the
    //    service goes on (the same process).
    const refused = await ask(sd, "helper", "br1");
    assert.match(refused.error ?? "", /access denied by acl file/, JSON.stringify(refused));
    assert.ok(
      (await audit(sd)).some((l) =>
        / event=request uid=65534 .*bridge=br1 decision=denied reason="access denied by acl file"$/
          .test(l)
      ),
      (await audit(sd)).join("\n"),
    );
    assert.equal(Number(await sd.property("vm-bridge.service", "MainPID")), mainPid);

    // 4. A stop is clean (SIGTERM is a success), the socket stays, and the next request starts
    //    a new service.
    const stop = await sd.systemctl("stop", "vm-bridge.service");
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(await sd.property("vm-bridge.service", "Result"), "success", await ctx());
    assert.equal(await sd.property("vm-bridge.socket", "SubState"), "listening", await ctx());
    const again = await ask(sd, "helper", "br0");
    assert.ok(again.tap, `no tap after a restart: ${again.error}\n${await ctx()}`);
    const second = Number(await sd.property("vm-bridge.service", "MainPID"));
    assert.ok(second > 1 && second !== mainPid, `MainPID ${mainPid} then ${second}`);

    // 5. systemd exits by itself when asked (the service and the socket stopped on the way), and
    //    leaves no tap.
    assert.notEqual(await sd.exit(), undefined, "systemd had to be killed");
    assert.deepEqual(await noTapsLeft(ns), []);
  },
);

rootTest(
  "systemd: under the shipped unit the service attaches a tap to an Open vSwitch bridge " +
    "through the database at its default path (/run/openvswitch, read-only to it), " +
    "for a client of the library",
  async () => {
    await using ns = await NetNs.create();
    await using ovs = await OvsInstance.start(ns);
    await ovs.addBridge("sw0");
    await using sd = await SystemdContainer.start(ns, {
      units: await shippedUnits(),
      start: ["vm-bridge.socket"],
      etcQemu: { "bridge.conf": "allow sw0\n" },
      usrLocal: { "libexec/vm-bridged": SERVICE },
      run: { openvswitch: ovs.dir },
    });
    const got = await ask(sd, "service", "sw0");
    assert.ok(got.tap, `no tap: ${got.error}\n${await ovs.logs()}\n${await sd.context()}`);
    const lines = await audit(sd);
    assert.ok(
      lines.some((l) =>
        new RegExp(` event=request uid=65534 .*bridge=sw0 kind=ovs tap=${got.tap} decision=allow`)
          .test(l)
      ),
      lines.join("\n"),
    );
    // It needed no write access to get there: Open vSwitch's run directory is read-only to it.
    const mainPid = Number(await sd.property("vm-bridge.service", "MainPID"));
    const mounts = await sd.readFile(`/proc/${mainPid}/mountinfo`);
    assert.equal(mountOf(mounts, "/run/openvswitch/db.sock").readOnly, true, mounts);
    assert.notEqual(await sd.exit(), undefined, "systemd had to be killed");
  },
);
