// Frames through a real bridge: each test makes a namespace with br0 and a private /etc/qemu,
// gets taps on it from our helper run from source (as bridgeNetdev does for an emulator), and
// sends 0x88b5 frames (a non-IP ethertype, so the bridge netfilter leaves them alone) between
// them. Needs root; every namespace is deleted at the end.

import assert from "node:assert/strict";
import { bridgeNetdev, tapNetdev } from "../../net/open.ts";
import { type Netdev, parseVnetHeader } from "../../net/netdev.ts";
import { pollerCounts } from "../../net/poller.ts";
import { runHelper } from "../../net/run_helper.ts";
import { HELPER_FROM_SOURCE, NetNs, ROOT, rootTest, sandbox } from "../_support/ns.ts";
import type { SandboxOptions } from "../_support/ns.ts";

const ETHERTYPE = 0x88b5; // IEEE 802 local experimental
const MAC_A = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C = [0x02, 0, 0, 0, 0, 0x0c];

/** A namespace with br0, a private /etc/qemu allowing it, and the helper argv to use. */
class Lab implements AsyncDisposable {
  private constructor(
    readonly ns: NetNs,
    readonly helper: string[],
    private readonly cleanup: () => Promise<void>,
  ) {}

  static async create(): Promise<Lab> {
    const ns = await NetNs.create("vmbnd");
    try {
      // No IPv6 chatter (router solicitations, MLD) from br0 into the taps.
      await ns.sh(
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
      );
      await ns.bridge("br0", { up: false });
      // No IGMP either: with multicast snooping on, br0 joins 224.0.0.106 and reports it to
      // every port about half a second after it comes up.
      await ns.ip("link", "set", "br0", "type", "bridge", "mcast_snooping", "0");
      await ns.ip("link", "set", "br0", "up");
      const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
      return new Lab(ns, [...sb.argv, HELPER_FROM_SOURCE], sb.cleanup);
    } catch (e) {
      await ns[Symbol.asyncDispose]();
      throw e;
    }
  }

  /** A Netdev on br0 through the helper, once br0 forwards to and from it. */
  async nic(options: Parameters<typeof bridgeNetdev>[0] = {}): Promise<Netdev> {
    const nic = await bridgeNetdev({ helper: this.helper, ...options });
    await this.forwarding(nic.name);
    return nic;
  }

  /**
   * Waits until the bridge port `name` forwards. The kernel's linkwatch turns carrier-on into
   * operstate UP up to a second later, and until then the port is "disabled": frames sent to
   * or from it in that window are silently lost. (An emulator does not care; a test that sends
   * each frame once does.)
   */
  async forwarding(name: string): Promise<void> {
    const end = Date.now() + 5000;
    for (;;) {
      const [link] = JSON.parse(await this.ns.ip("-j", "-d", "link", "show", "dev", name));
      const state = link?.linkinfo?.info_slave_data?.state;
      if (state === "forwarding") return;
      if (Date.now() > end) throw new Error(`Bridge port ${name} is still ${state}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.cleanup();
    await this.ns[Symbol.asyncDispose]();
  }
}

/** A test frame: `len` bytes, to `dst` from `src`, ethertype 0x88b5, `seq`, then a pattern. */
function testFrame(len: number, seq: number, dst = MAC_B, src = MAC_A): Uint8Array<ArrayBuffer> {
  const f = new Uint8Array(new ArrayBuffer(len));
  f.set(dst, 0);
  f.set(src, 6);
  const v = new DataView(f.buffer);
  v.setUint16(12, ETHERTYPE);
  v.setUint32(14, seq);
  for (let i = 18; i < len; i++) f[i] = (i * 7 + seq) & 0xff;
  return f;
}

const isTest = (f: Uint8Array) => f.length >= 18 && f[12] === 0x88 && f[13] === 0xb5;

/** Every frame a Netdev receives, counted; copies of the test frames kept. */
function collect(nic: Netdev) {
  const c = { frames: 0, bytes: 0, got: [] as Uint8Array[], done: Promise.resolve() };
  c.done = nic.listen((f) => {
    c.frames++;
    c.bytes += f.length;
    if (isTest(f)) c.got.push(f.slice());
  });
  return c;
}

async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Sends frames in small batches, waiting for the receiver so no queue overflows. */
async function sendPaced(
  from: Netdev,
  frames: Uint8Array[],
  received: () => number,
  batch = 64,
): Promise<void> {
  const start = received();
  for (let i = 0; i < frames.length; i += batch) {
    for (const f of frames.slice(i, i + batch)) assert.ok(from.send(f), "send() dropped a frame");
    const want = start + Math.min(i + batch, frames.length);
    await waitFor(`${want - start} frames`, () => received() >= want);
  }
}

const withHeader = (hdrLen: number, f: Uint8Array) => {
  const out = new Uint8Array(hdrLen + f.length);
  out.set(f, hdrLen);
  return out;
};

rootTest("Netdev frames of 60 to 1514 bytes cross a bridge intact and are counted", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  assert.notEqual(a.name, b.name);
  assert.deepEqual((await lab.ns.taps()).sort(), [a.name, b.name].sort());
  assert.equal(a.vnetHdr, false);
  assert.equal(a.vnetHdrLen, 0);
  const rx = collect(b);
  const sent: Uint8Array[] = [];
  for (let len = 60; len <= 1514; len++) sent.push(testFrame(len, len));
  await sendPaced(a, sent, () => rx.got.length);

  assert.equal(rx.got.length, sent.length);
  for (const [i, f] of rx.got.entries()) {
    assert.equal(f.length, sent[i]!.length, `frame ${i}: length`);
    assert.deepEqual(f, sent[i], `frame ${i} (${f.length} bytes) differs`);
  }
  const total = sent.reduce((n, f) => n + f.length, 0);
  assert.deepEqual(a.counters.tx, { frames: sent.length, bytes: total, drops: 0, errors: 0 });
  assert.deepEqual(b.counters.rx, { frames: rx.frames, bytes: rx.bytes, drops: 0, errors: 0 });

  // And back, unicast to the MAC the bridge has now learnt on a's port.
  const ra = collect(a);
  const back = [60, 1000, 1514].map((n, i) => testFrame(n, 9000 + i, MAC_A, MAC_B));
  await sendPaced(b, back, () => ra.got.length);
  assert.deepEqual(ra.got, back);
  await a.close();
  await b.close();
  await rx.done;
  await ra.done;
  assert.deepEqual(await lab.ns.taps(), []);
});

rootTest("for await over a Netdev yields owned copies; break leaves it open", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const sent = Array.from({ length: 20 }, (_, i) => testFrame(64 + i, i));
  const pump = (async () => {
    // The iterator's reader must be running before the frames arrive.
    await new Promise((r) => setTimeout(r, 50));
    for (const f of sent) a.send(f);
  })();
  const got: Uint8Array[] = [];
  for await (const f of b) {
    if (!isTest(f)) continue;
    got.push(f);
    if (got.length === sent.length) break;
  }
  await pump;
  assert.deepEqual(got, sent);
  // Copies, not views into one reused read buffer: no two frames share a byte.
  for (const [i, f] of got.entries()) {
    for (const g of got.slice(i + 1)) {
      const apart = f.buffer !== g.buffer || f.byteOffset + f.length <= g.byteOffset ||
        g.byteOffset + g.length <= f.byteOffset;
      assert.ok(apart, "two frames share bytes");
    }
  }
  assert.equal(b.closed, false);
  // The reader ended with the loop: a new one may start.
  const rx = collect(b);
  a.send(testFrame(100, 99));
  await waitFor("a frame after the loop", () => rx.got.length === 1);
  await b.close();
  await rx.done;
});

rootTest("Netdev.readable and .writable carry frames between two taps", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const reader = b.readable.getReader();
  await new Promise((r) => setTimeout(r, 50));
  const writer = a.writable.getWriter();
  const sent = Array.from({ length: 100 }, (_, i) => testFrame(60 + i * 14, i));
  const got: Uint8Array[] = [];
  const reading = (async () => {
    while (got.length < sent.length) {
      const r = await reader.read();
      if (r.done) break;
      if (isTest(r.value)) got.push(r.value);
    }
  })();
  for (const f of sent) await writer.write(f);
  await reading;
  assert.deepEqual(got, sent);
  assert.equal(a.counters.tx.frames, sent.length);
  await writer.close();
  assert.equal(b.closed, false, "closing the writable does not close the Netdev");
  // Closing the Netdev ends the stream.
  await b.close();
  assert.deepEqual(await reader.read(), { done: true, value: undefined });
});

rootTest("Netdev.readable cancel() ends a pull that is waiting for a frame", async () => {
  // A ReadableStream pulls ahead, so after the last read a pull is usually waiting inside the
  // frames() generator; cancel() must not wait for another frame to arrive before it settles.
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const reader = b.readable.getReader();
  await new Promise((r) => setTimeout(r, 50));
  a.send(testFrame(60, 1));
  assert.deepEqual((await reader.read()).value, testFrame(60, 1));
  await new Promise((r) => setTimeout(r, 50)); // the next pull is now waiting
  const cancelled = reader.cancel().then(() => "cancelled");
  const timeout = new Promise((r) => setTimeout(() => r("still waiting after 2 s"), 2000));
  assert.equal(await Promise.race([cancelled, timeout]), "cancelled");
  assert.equal(b.closed, false);
  // The reader is gone: another may start.
  const rx = collect(b);
  a.send(testFrame(60, 2));
  await waitFor("a frame after cancel()", () => rx.got.length === 1);
  await b.close();
  await cancelled; // settles once the Netdev closes, with or without the fix
});

rootTest("Netdev.close() is idempotent and ends listen(), for-await and the tap", async () => {
  await using lab = await Lab.create();
  const a = await lab.nic();
  const b = await lab.nic();
  let heard = 0;
  const listening = b.listen(() => heard++);
  const iterating = (async () => {
    let n = 0;
    for await (const _ of a) n++;
    return n;
  })();
  await new Promise((r) => setTimeout(r, 50));
  const first = b.close();
  assert.equal(b.close(), first, "close() returns the same promise every time");
  await first;
  await listening; // settles, does not reject
  assert.equal(b.closed, true);
  await a.close();
  assert.equal(typeof await iterating, "number"); // the loop ended
  await a.close(); // again: nothing happens
  assert.throws(() => a.send(testFrame(60, 1)), { name: "Error", message: "Netdev is closed" });
  await assert.rejects(a.write(testFrame(60, 1)), { message: "Netdev is closed" });
  // A listen() after close() resolves at once.
  await b.listen(() => heard++);
  assert.deepEqual(await lab.ns.taps(), [], "closing the fds removes the taps");
});

rootTest("await using disposes a Netdev and removes its tap", async () => {
  await using lab = await Lab.create();
  let name: string;
  let nic: Netdev;
  {
    await using n = await lab.nic();
    nic = n;
    name = n.name;
    assert.deepEqual(await lab.ns.taps(), [name]);
  }
  assert.equal(nic.closed, true);
  assert.deepEqual(await lab.ns.taps(), []);
});

rootTest("vnetHdr: strip mode hides the header both ways and counts bytes without it", async () => {
  await using lab = await Lab.create();
  await using v = await lab.nic({ vnetHdr: true });
  await using p = await lab.nic();
  assert.equal(v.vnetHdr, true);
  assert.equal(v.vnetMode, "strip");
  assert.ok(v.vnetHdrLen === 10 || v.vnetHdrLen === 12, `header length ${v.vnetHdrLen}`);

  // Sent without a header: a zeroed one is prepended and the plain tap sees the frame intact.
  const rp = collect(p);
  const out = [60, 777, 1514].map((n, i) => testFrame(n, i));
  await sendPaced(v, out, () => rp.got.length);
  assert.deepEqual(rp.got, out);
  assert.equal(v.counters.tx.bytes, 60 + 777 + 1514, "bytes counted without the header");

  // Received: no header in the frame.
  const rv = collect(v);
  const back = [60, 1514].map((n, i) => testFrame(n, 100 + i, MAC_A, MAC_B));
  await sendPaced(p, back, () => rv.got.length);
  assert.deepEqual(rv.got, back);
  assert.equal(v.counters.rx.bytes, rv.bytes, "bytes counted without the header");
  await v.close();
  await rv.done;
});

rootTest(
  "vnetHdr: listenPackets gives the parsed header next to the frame (strip mode)",
  async () => {
    await using lab = await Lab.create();
    await using v = await lab.nic({ vnetHdr: true });
    await using p = await lab.nic();
    const got: { frame: Uint8Array; gsoType: number; flags: number; numBuffers?: number }[] = [];
    const done = v.listenPackets(({ frame, header }) => {
      if (isTest(frame)) got.push({ frame: frame.slice(), ...header });
    });
    const back = [60, 1514].map((n, i) => testFrame(n, i, MAC_A, MAC_B));
    await sendPaced(p, back, () => got.length);
    assert.deepEqual(got.map((g) => g.frame), back);
    for (const g of got) {
      // A frame from a plain tap: no GSO, no checksum offload.
      assert.equal(g.gsoType, 0);
      assert.equal(g.flags, 0);
      assert.equal("numBuffers" in g, v.vnetHdrLen === 12);
    }
    await v.close();
    await done;
  },
);

rootTest("vnetHdr: raw mode hands over and takes frames with the header", async () => {
  await using lab = await Lab.create();
  await using v = await lab.nic({ vnetHdr: true, vnetMode: "raw" });
  await using p = await lab.nic();
  assert.equal(v.vnetMode, "raw");
  const h = v.vnetHdrLen;

  // Received frames start with the header.
  const raw: Uint8Array[] = [];
  const done = v.listen((f) => {
    if (f.length >= h + 18 && f[h + 12] === 0x88 && f[h + 13] === 0xb5) raw.push(f.slice());
  });
  const back = [60, 1514].map((n, i) => testFrame(n, i, MAC_A, MAC_B));
  await sendPaced(p, back, () => raw.length);
  assert.deepEqual(raw.map((f) => f.length), back.map((f) => f.length + h));
  assert.deepEqual(raw.map((f) => f.subarray(h)), back);
  assert.deepEqual(raw.map((f) => f.subarray(0, h)), back.map(() => new Uint8Array(h)));

  // The caller writes the header: a zeroed one gives the frame unchanged to the plain tap.
  const rp = collect(p);
  const out = [60, 1514].map((n, i) => testFrame(n, 50 + i));
  await sendPaced(v, out.map((f) => withHeader(h, f)), () => rp.got.length);
  assert.deepEqual(rp.got, out);

  await v.close();
  await done;
});

rootTest("vnetHdr: raw mode counts frame bytes without the header, as documented", async () => {
  // DirectionCounters.bytes: "frame bytes, without any virtio-net header", in either mode, so
  // that they compare with the kernel's interface counters.
  await using lab = await Lab.create();
  await using v = await lab.nic({ vnetHdr: true, vnetMode: "raw" });
  await using p = await lab.nic();
  const h = v.vnetHdrLen;
  let frames = 0;
  let wire = 0;
  const done = v.listen((f) => {
    frames++;
    wire += f.length - h;
  });
  await sendPaced(p, [testFrame(100, 1, MAC_A, MAC_B)], () => frames);
  assert.deepEqual(v.counters.rx, { frames, bytes: wire, drops: 0, errors: 0 });
  const rp = collect(p);
  await sendPaced(v, [withHeader(h, testFrame(200, 2))], () => rp.got.length);
  assert.deepEqual(v.counters.tx, { frames: 1, bytes: 200, drops: 0, errors: 0 });
  await v.close();
  await done;
});

rootTest(
  "vnetHdr: listenPackets in raw mode strips the header from the frame it gives",
  async () => {
    await using lab = await Lab.create();
    await using v = await lab.nic({ vnetHdr: true, vnetMode: "raw" });
    await using p = await lab.nic();
    const got: { frame: Uint8Array; gsoType: number }[] = [];
    const done = v.listenPackets(({ frame, header }) => {
      if (isTest(frame)) got.push({ frame: frame.slice(), gsoType: header.gsoType });
    });
    const back = [60, 1514].map((n, i) => testFrame(n, i, MAC_A, MAC_B));
    await sendPaced(p, back, () => got.length);
    assert.deepEqual(got, back.map((frame) => ({ frame, gsoType: 0 })));
    await v.close();
    await done;
  },
);

rootTest("listenPackets() on a tap without a virtio-net header throws", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  assert.throws(() => a.listenPackets(() => {}), { message: "This tap has no virtio-net header" });
});

rootTest("tapNetdev({ fd }) adopts a tap fd and closes it on close()", async () => {
  await using lab = await Lab.create();
  await using b = await lab.nic();
  const fd = (await runHelper({ helper: lab.helper, bridge: "br0", vnetHdr: false })).release();
  const a = await tapNetdev({ fd });
  await lab.forwarding(a.name);
  assert.match(await Deno.readLink(`/proc/self/fd/${fd}`), /tun/);
  const rx = collect(b);
  const sent = [testFrame(60, 1), testFrame(1514, 2)];
  await sendPaced(a, sent, () => rx.got.length);
  assert.deepEqual(rx.got, sent);
  await a.close();
  assert.deepEqual(await lab.ns.taps(), [b.name], "the adopted fd was closed");
});

/**
 * Copies mod.ts and every local module it imports into `dir`, keeping their relative paths:
 * another user may not be able to read the checkout (CI's may live under /root).
 */
async function stageLibrary(dir: string): Promise<string> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", "--no-config", "--no-lock", `${ROOT}/mod.ts`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!info.success) throw new Error(new TextDecoder().decode(info.stderr));
  const modules = JSON.parse(new TextDecoder().decode(info.stdout)).modules as { local?: string }[];
  for (const { local } of modules) {
    if (!local?.startsWith(`${ROOT}/`)) continue;
    const to = `${dir}/${local.slice(ROOT.length + 1)}`;
    await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true, mode: 0o755 });
    await Deno.copyFile(local, to);
    await Deno.chmod(to, 0o644);
  }
  return `file://${dir}/mod.ts`;
}

/**
 * Runs `code` (TypeScript importing mod.ts as `MOD`) with deno inside the namespace, in a
 * sandbox (`opts`, possibly as another user), with a private DENO_DIR and a private copy of the
 * library. Returns the child.
 */
async function denoInNs(
  ns: NetNs,
  code: string,
  opts: SandboxOptions,
): Promise<{ child: Deno.ChildProcess; cleanup: () => Promise<void> }> {
  const work = await Deno.makeTempDir({ prefix: "vmb-deno-eval-" });
  try {
    await Deno.chmod(work, 0o755);
    const mod = await stageLibrary(`${work}/lib`);
    await Deno.mkdir(`${work}/deno-dir`);
    if (opts.user) await Deno.chown(`${work}/deno-dir`, opts.user.uid, opts.user.gid);
    const sb = await sandbox(ns, opts);
    const src = code.replaceAll("MOD", JSON.stringify(mod));
    const argv = [...sb.argv, Deno.execPath(), "eval", "--no-config", "--no-lock", "--ext=ts", src];
    const child = new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      cwd: work,
      env: { DENO_DIR: `${work}/deno-dir`, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return {
      child,
      cleanup: async () => {
        await sb.cleanup();
        await Deno.remove(work, { recursive: true });
      },
    };
  } catch (e) {
    await Deno.remove(work, { recursive: true });
    throw e;
  }
}

/** The first line a child prints (its ready message), as JSON. */
async function firstLine(child: Deno.ChildProcess): Promise<Record<string, unknown>> {
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const r = await lines.read();
    if (r.done) break;
    text += r.value;
  }
  lines.releaseLock();
  const line = text.split("\n")[0]!;
  if (!line) {
    const out = await child.output().catch(() => undefined);
    throw new Error(`child printed nothing: ${new TextDecoder().decode(out?.stderr)}`);
  }
  return JSON.parse(line);
}

rootTest(
  "tapNetdev({ ifname }) attaches its owner to a persistent tap, without privilege",
  async () => {
    // Persistent taps belong to a network namespace and TUNSETIFF looks the name up in the
    // namespace of whoever opened /dev/net/tun. The test process is in the host namespace, so the
    // attaching side runs as a separate deno process inside the lab's namespace, as uid 65534
    // with no capabilities: it echoes test frames back, and this process checks the echoes.
    await using lab = await Lab.create();
    await lab.ns.ip("tuntap", "add", "dev", "tap7", "mode", "tap", "user", "65534");
    await lab.ns.ip("link", "set", "tap7", "master", "br0", "up");
    await using a = await lab.nic();
    const COUNT = 5;
    const { child, cleanup } = await denoInNs(
      lab.ns,
      `import { tapNetdev } from MOD;
     const nic = await tapNetdev({ ifname: "tap7" });
     console.log(JSON.stringify({ name: nic.name, mtu: nic.mtu, uid: Deno.uid() }));
     let n = 0;
     await nic.listen((f) => {
       if (f[12] !== 0x88 || f[13] !== 0xb5) return;
       const r = f.slice();
       r.set(f.subarray(6, 12), 0);
       r.set(f.subarray(0, 6), 6);
       nic.send(r);
       if (++n === ${COUNT}) void nic.close();
     });`,
      { tun0666: true, user: { uid: 65534, gid: 65534 } },
    );
    try {
      assert.deepEqual(await firstLine(child), { name: "tap7", mtu: 1500, uid: 65534 });
      await lab.forwarding("tap7");
      const rx = collect(a);
      const sent = Array.from({ length: COUNT }, (_, i) => testFrame(60 + 100 * i, i, MAC_B));
      await sendPaced(a, sent, () => rx.got.length, 1);
      const echoed = sent.map((f) => {
        const r = f.slice();
        r.set(MAC_A, 0);
        r.set(MAC_B, 6);
        return r;
      });
      assert.deepEqual(rx.got, echoed);
      const status = await child.status;
      assert.equal(status.code, 0);
      // Persistent: still there after its user closed it.
      assert.ok((await lab.ns.taps()).includes("tap7"));
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.output().catch(() => {});
      await cleanup();
    }
  },
);

rootTest("tapNetdev({ ifname }) on a tap owned by someone else fails with EPERM", async () => {
  await using lab = await Lab.create();
  await lab.ns.ip("tuntap", "add", "dev", "tap7", "mode", "tap", "user", "65534");
  const { child, cleanup } = await denoInNs(
    lab.ns,
    `import { tapNetdev } from MOD;
     try {
       await tapNetdev({ ifname: "tap7" });
       console.log(JSON.stringify({ ok: true }));
     } catch (e) {
       console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message }));
     }`,
    { tun0666: true, user: { uid: 65533, gid: 65533 } },
  );
  try {
    assert.deepEqual(await firstLine(child), {
      name: "OsError",
      code: "EPERM",
      message: "ioctl(TUNSETIFF): Operation not permitted",
    });
    assert.equal((await child.status).code, 0);
  } finally {
    await child.output().catch(() => {});
    await cleanup();
  }
});

rootTest("tapNetdev({ ifname }) never creates a tap: a missing name is ENODEV", async () => {
  await using lab = await Lab.create();
  // As root (CAP_NET_ADMIN), TUNSETIFF with a free name would make a new tap; we must not.
  const { child, cleanup } = await denoInNs(
    lab.ns,
    `import { tapNetdev } from MOD;
     try {
       await tapNetdev({ ifname: "tap9" });
       console.log(JSON.stringify({ ok: true }));
     } catch (e) {
       console.log(JSON.stringify({ name: e.name, code: e.code }));
     }`,
    {},
  );
  try {
    assert.deepEqual(await firstLine(child), { name: "OsError", code: "ENODEV" });
    assert.equal((await child.status).code, 0);
    assert.deepEqual(await lab.ns.taps(), [], "a tap was created");
  } finally {
    await child.output().catch(() => {});
    await cleanup();
  }
});

rootTest("The event loop keeps ticking while 100k frames flood into a Netdev", async () => {
  await using lab = await Lab.create();
  await using b = await lab.nic();
  // The flood comes from another process (a deno sending as fast as it can through its own
  // tap on br0), so this process's event loop only has the receiving side to run.
  const { child, cleanup } = await denoInNs(
    lab.ns,
    `import { bridgeNetdev } from MOD;
     const nic = await bridgeNetdev({ helper: ${JSON.stringify([HELPER_FROM_SOURCE])} });
     const f = new Uint8Array(60);
     f.set([2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a, 0x88, 0xb5]);
     console.log(JSON.stringify({ ready: nic.name }));
     for (;;) {
       for (let i = 0; i < 256; i++) nic.send(f);
       await new Promise((r) => setTimeout(r, 0));
     }`,
    { etcQemu: { "bridge.conf": "allow br0\n" } },
  );
  try {
    let flood = 0;
    // The longest stretch of frames handed over without the timer getting a turn in between:
    // what the Netdev's burst limit controls, whatever else the machine is doing.
    let lastTick = 0;
    let burstStart = 0;
    let longestBurst = 0;
    const done = b.listen((f) => {
      const now = performance.now();
      if (lastTick >= burstStart) burstStart = now;
      longestBurst = Math.max(longestBurst, now - burstStart);
      if (isTest(f)) flood++;
    });
    assert.ok((await firstLine(child)).ready);
    await waitFor("the first flood frame", () => flood > 0);
    const gaps: number[] = [];
    lastTick = performance.now();
    longestBurst = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      gaps.push(now - lastTick);
      lastTick = now;
    }, 10);
    const t0 = performance.now();
    try {
      await waitFor("100000 frames", () => flood >= 100_000, 60_000);
    } finally {
      clearInterval(timer);
    }
    const secs = (performance.now() - t0) / 1000;
    gaps.sort((x, y) => x - y);
    const pct = (p: number) => gaps[Math.min(gaps.length - 1, Math.floor(gaps.length * p))]!;
    const summary =
      `${flood} frames in ${secs.toFixed(2)} s (${(flood / secs / 1000).toFixed(0)}k/s); ` +
      `${gaps.length} ticks of 10 ms: median ${pct(0.5).toFixed(1)}, p95 ${
        pct(0.95).toFixed(1)
      }, ` +
      `max ${pct(1).toFixed(1)} ms; longest burst without a tick ${longestBurst.toFixed(1)} ms`;
    console.log(`flood: ${summary}`);
    // The spec is "a tick at least every ~50 ms". The machine may be shared and deschedule
    // this process now and then, so single outliers get more room than the bulk of the ticks.
    assert.ok(pct(0.5) < 20, `ticks are late: ${summary}`);
    assert.ok(pct(0.95) < 50, `ticks are late: ${summary}`);
    assert.ok(pct(1) < 250, `the event loop stalled: ${summary}`);
    assert.ok(longestBurst < 100, `frames kept the event loop busy: ${summary}`);
    assert.equal(b.counters.rx.drops, 0);
    await b.close();
    await done;
  } finally {
    child.kill("SIGKILL");
    await child.output().catch(() => {});
    await cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// What a first user tripped on (issue 9, section 3)

rootTest(
  "send() on a tap whose link is down returns false and counts EIO; never throws",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await lab.ns.ip("link", "set", a.name, "down");
    let ok: boolean | undefined;
    assert.doesNotThrow(() => (ok = a.send(testFrame(60, 1))));
    assert.equal(ok, false);
    assert.equal(a.counters.tx.errors, 1);
    assert.equal(a.counters.tx.frames, 0);
    assert.equal(a.counters.tx.lastError?.code, "EIO");
    assert.equal(a.counters.tx.lastError?.message, `write(${a.name}): Input/output error`);
    // write() and the writable stream: the same, a resolved false and no rejection.
    assert.equal(await a.write(testFrame(60, 2)), false);
    const w = a.writable.getWriter();
    await w.write(testFrame(60, 3));
    await w.close();
    assert.equal(a.counters.tx.errors, 3);
  },
);

rootTest(
  "send() of a 13-byte frame returns false and counts EINVAL; listen() goes on",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await using b = await lab.nic();
    // A forwarder b → a whose sends all fail (a 13-byte cut of each frame): listen() must survive.
    let forwarded = 0;
    const fwd = b.listen((f) => {
      if (!isTest(f)) return;
      a.send(f.subarray(0, 13));
      forwarded++;
    });
    const back = [testFrame(60, 1, MAC_A, MAC_B), testFrame(61, 2, MAC_A, MAC_B)];
    const rxa = collect(a);
    await sendPaced(a, back, () => forwarded);
    assert.equal(a.counters.tx.lastError?.code, "EINVAL");
    assert.equal(a.counters.tx.errors, 2);
    assert.equal(b.closed, false);
    // Still forwarding: the handler never threw, listen() is still reading.
    await sendPaced(a, [testFrame(62, 3, MAC_A, MAC_B)], () => forwarded);
    assert.equal(forwarded, 3);
    await b.close();
    await a.close();
    await fwd;
    await rxa.done;
  },
);

rootTest("a forwarder keeps forwarding after the far link goes down and up again", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  await using c = await lab.nic();
  // c → (b listens, forwards to a) ; the test watches a's peer side via the bridge on c.
  const fwd = b.listen((f) => {
    if (isTest(f)) a.send(f);
  });
  const rxc = collect(c);
  await lab.ns.ip("link", "set", a.name, "down");
  c.send(testFrame(60, 1, MAC_B, MAC_A));
  await waitFor("an EIO", () => a.counters.tx.errors >= 1);
  await lab.ns.ip("link", "set", a.name, "up");
  await lab.forwarding(a.name);
  c.send(testFrame(70, 2, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff], MAC_A));
  await waitFor("the forwarded frame", () => a.counters.tx.frames >= 1);
  assert.equal(b.closed, false);
  await b.close();
  await fwd; // resolves: listen() never rejected
  await c.close();
  await rxc.done;
});

rootTest(
  "a forwarder's two idle readers share one wait; closing one leaves the other reading",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await using b = await lab.nic();
    await using c = await lab.nic();
    const before = pollerCounts();
    const rxa = collect(a);
    const rxb = collect(b);
    await new Promise((r) => setTimeout(r, 50));
    // Both readers wait on one epoll_wait on a worker thread (before: one poll(2) each).
    assert.equal(pollerCounts().parks - before.parks, 1);
    // From c to an address no port has sent from: br0 floods each frame to both a and b.
    const frames = Array.from({ length: 200 }, (_, i) => testFrame(60 + i, i, MAC_B, MAC_C));
    await sendPaced(c, frames, () => Math.min(rxa.got.length, rxb.got.length), 16);
    assert.deepEqual(rxa.got, frames);
    assert.deepEqual(rxb.got, frames);
    await a.close();
    await rxa.done;
    // b still waits and reads, alone in the shared set now.
    const more = Array.from({ length: 50 }, (_, i) => testFrame(80, 1000 + i, MAC_B, MAC_C));
    await sendPaced(c, more, () => rxb.got.length, 10);
    assert.deepEqual(rxb.got.slice(200), more);
    await b.close();
    await rxb.done;
  },
);

rootTest("nic.readable is one stream; getting it claims nothing until it is read", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const s = b.readable;
  assert.equal(b.readable, s, "one cached stream per Netdev");
  await new Promise((r) => setTimeout(r, 50));
  // Never read: the for-await loop below must still be allowed to read.
  const pump = (async () => {
    await new Promise((r) => setTimeout(r, 50));
    a.send(testFrame(60, 1));
  })();
  for await (const f of b) {
    if (isTest(f)) break;
  }
  await pump;
  // Now read the stream for real: it claims the reader, and names itself to the next one.
  const reader = s.getReader();
  const first = reader.read();
  await new Promise((r) => setTimeout(r, 50));
  assert.throws(() => b.listen(() => {}), {
    message: `Netdev \`${b.name}' already has a reader: the readable stream`,
  });
  a.send(testFrame(60, 2));
  assert.ok((await first).value);
  await reader.cancel();
});

rootTest("'already has a reader' names the reader: listen() or the async iterator", async () => {
  await using lab = await Lab.create();
  await using b = await lab.nic();
  const stop = new AbortController();
  const l = b.listen(() => {}, { signal: stop.signal });
  assert.throws(() => b.listen(() => {}), {
    message: `Netdev \`${b.name}' already has a reader: listen()`,
  });
  await assert.rejects(b.frames().next(), {
    message: `Netdev \`${b.name}' already has a reader: listen()`,
  });
  stop.abort();
  await l;
  const it = b.frames();
  const pending = it.next();
  await new Promise((r) => setTimeout(r, 20));
  assert.throws(() => b.listen(() => {}), {
    message: `Netdev \`${b.name}' already has a reader: frames()`,
  });
  await b.close();
  assert.deepEqual(await pending, { done: true, value: undefined });
});

rootTest("tapNetdev({ ifname }) on a tun says it is a tun, not a tap", async () => {
  await using lab = await Lab.create();
  await lab.ns.ip("tuntap", "add", "dev", "tun7", "mode", "tun");
  const { child, cleanup } = await denoInNs(
    lab.ns,
    `import { tapNetdev } from MOD;
     const out = [];
     for (const ifname of ["tun7", "br0"]) {
       try {
         await tapNetdev({ ifname });
         out.push({ ok: true });
       } catch (e) {
         out.push({ name: e.name, message: e.message });
       }
     }
     console.log(JSON.stringify(out));`,
    {},
  );
  try {
    assert.deepEqual(await firstLine(child), [
      { name: "TypeError", message: "`tun7' is a tun, not a tap" },
      { name: "TypeError", message: "`br0' is not a tun/tap device" },
    ]);
    assert.equal((await child.status).code, 0);
  } finally {
    await child.output().catch(() => {});
    await cleanup();
  }
});

// ---------------------------------------------------------------------------------------------
// Controls: creating a tap, carrier, MAC, sndbuf, the kernel's counters, multiqueue. Each runs
// as root inside the lab's namespace (a tap is created in the caller's namespace, and the
// kernel's counters are read from it), reporting what it saw as one JSON line.

/** Runs `code` in the lab's namespace as root; returns its first line, parsed. */
async function inLab(lab: Lab, code: string): Promise<Record<string, unknown>> {
  const { child, cleanup } = await denoInNs(lab.ns, code, {});
  try {
    const line = await firstLine(child);
    assert.equal((await child.status).code, 0);
    return line;
  } finally {
    await child.output().catch(() => {});
    await cleanup();
  }
}

rootTest("createTap() makes a tap on a bridge, up, 0xfe MAC; closing removes it", async () => {
  await using lab = await Lab.create();
  const got = await inLab(
    lab,
    `import { createTap } from MOD;
     const sh = async (...a) => new TextDecoder().decode((await new Deno.Command("ip", { args: a }).output()).stdout);
     const [nic] = await createTap({ bridge: "br0", name: "vmtap%d" });
     const link = JSON.parse(await sh("-j", "link", "show", nic.name))[0];
     const out = { name: nic.name, master: link.master, up: link.flags.includes("UP"), mac: nic.mac, ipMac: link.address, mtu: nic.mtu };
     await nic.close();
     out.after = (await sh("-br", "link")).includes(out.name);
     let bad;
     try { await createTap({ bridge: "nosuchbr" }); } catch (e) { bad = e.message; }
     out.bad = bad;
     out.left = (await sh("-br", "link")).split("\\n").filter((l) => l.startsWith("tap")).length;
     console.log(JSON.stringify(out));`,
  );
  assert.equal(got.name, "vmtap0");
  assert.equal(got.master, "br0");
  assert.equal(got.up, true);
  assert.equal(got.mac, got.ipMac);
  assert.match(String(got.mac), /^fe:/);
  assert.equal(got.mtu, 1500);
  assert.equal(got.after, false, "the tap outlived its Netdev");
  assert.match(String(got.bad), /^if_nametoindex|SIOCBRADDIF|No such device/);
  assert.equal(got.left, 0, "a failed createTap() left a tap behind");
});

rootTest("Netdev.setCarrier(), setMac() and setSndbuf() change the tap as asked", async () => {
  await using lab = await Lab.create();
  const got = await inLab(
    lab,
    `import { createTap } from MOD;
     const read = (p) => Deno.readTextFileSync(p).trim();
     const [nic] = await createTap({ bridge: "br0" });
     const sys = "/sys/class/net/" + nic.name;
     await new Promise((r) => setTimeout(r, 100));
     const out = { carrier0: read(sys + "/carrier") };
     nic.setCarrier(false);
     out.carrierOff = read(sys + "/carrier");
     nic.setCarrier(true);
     out.carrierOn = read(sys + "/carrier");
     nic.setMac("52:54:00:aa:bb:cc");
     out.mac = nic.mac;
     out.sysMac = read(sys + "/address");
     out.sndbuf0 = nic.sndbuf;
     nic.setSndbuf(65536);
     out.sndbuf = nic.sndbuf;
     try { nic.setMac("01:00:5e:00:00:01"); } catch (e) { out.multicast = e.message; }
     await nic.close();
     console.log(JSON.stringify(out));`,
  );
  assert.deepEqual(got, {
    carrier0: "1",
    carrierOff: "0",
    carrierOn: "1",
    mac: "52:54:00:aa:bb:cc",
    sysMac: "52:54:00:aa:bb:cc",
    sndbuf0: 0x7fffffff,
    sndbuf: 65536,
    multicast: "A multicast MAC address cannot be a NIC's: `01:00:5e:00:00:01'",
  });
});

rootTest("Netdev.kernelCounters() shows the tap's own drops next to our counters", async () => {
  await using lab = await Lab.create();
  const got = await inLab(
    lab,
    `import { createTap } from MOD;
     const [a] = await createTap({ bridge: "br0" });
     const [b] = await createTap({ bridge: "br0" });
     await new Deno.Command("ip", { args: ["link", "set", a.name, "txqueuelen", "10"] }).output();
     // Wait for both ports to forward.
     for (let i = 0; i < 200; i++) {
       const j = JSON.parse(new TextDecoder().decode((await new Deno.Command("ip", { args: ["-j", "-d", "link", "show", "master", "br0"] }).output()).stdout));
       if (j.length === 2 && j.every((l) => l.linkinfo?.info_slave_data?.state === "forwarding")) break;
       await new Promise((r) => setTimeout(r, 20));
     }
     const k0 = a.kernelCounters();
     const f = new Uint8Array(60).fill(0xff, 0, 6);
     f.set([2, 0, 0, 0, 0, 0x0b], 6); f[12] = 0x88; f[13] = 0xb5;
     for (let i = 0; i < 100; i++) b.send(f);
     await new Promise((r) => setTimeout(r, 200));
     const k1 = a.kernelCounters();
     const kb = b.kernelCounters();
     // Now read what a's queue kept: the kernel counts a frame as sent when we read it.
     const stop = new AbortController();
     setTimeout(() => stop.abort(), 300);
     await a.listen(() => {}, { signal: stop.signal });
     const k2 = a.kernelCounters();
     console.log(JSON.stringify({ dropped: k1.txDropped - k0.txDropped, read: a.counters.rx.frames, kernelRead: k2.txPackets - k0.txPackets, bSent: b.counters.tx.frames, bKernel: kb.rxPackets }));
     await a.close(); await b.close();`,
  );
  assert.equal(got.bSent, 100);
  assert.equal(got.bKernel, 100, "the kernel's rx count of b matches our tx count");
  // Nobody read a: its queue of 10 filled and the rest was dropped, which only the kernel saw.
  assert.equal(got.dropped, 90);
  assert.equal(got.read, 10);
  assert.equal(got.kernelRead, 10, "the kernel's tx count of a matches our rx count");
});

rootTest("createTap({ queues: 2 }) gives two Netdevs on one multiqueue tap", async () => {
  await using lab = await Lab.create();
  const got = await inLab(
    lab,
    `import { createTap } from MOD;
     const qs = await createTap({ bridge: "br0", queues: 2 });
     const link = JSON.parse(new TextDecoder().decode((await new Deno.Command("ip", { args: ["-j", "-d", "link", "show", qs[0].name] }).output()).stdout))[0];
     const out = { n: qs.length, names: qs.map((q) => q.name), multi: link.linkinfo?.info_data?.multi_queue ?? null, numTx: link.num_tx_queues };
     let bad;
     try { await createTap({ queues: 0 }); } catch (e) { bad = e.message; }
     out.bad = bad;
     for (const q of qs) await q.close();
     console.log(JSON.stringify(out));`,
  );
  assert.equal(got.n, 2);
  assert.equal((got.names as string[])[0], (got.names as string[])[1]);
  assert.equal(got.multi, true);
  assert.equal(got.bad, "Invalid number of queues: 0 (1 to 256)");
});

// ---------------------------------------------------------------------------------------------
// Batches, and every path delivering every frame (issue 9, section 1)

rootTest(
  "batches() hands over every frame in reusable batches; writeBatch() forwards them",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await using b = await lab.nic();
    await using c = await lab.nic();
    // b forwards to c with writeBatch(). b and c are isolated ports, so what c sends reaches only
    // a (no loop back into b), and a sees what it sent come back, byte for byte, in order.
    for (const n of [b.name, c.name]) {
      await lab.ns.sh(`bridge link set dev ${n} isolated on`);
    }
    const sent = Array.from({ length: 300 }, (_, i) => testFrame(60 + (i * 37) % 1455, i));
    const rxa = collect(a);
    const forwarded: Uint8Array[] = [];
    const seen = new Set<unknown>();
    let sizes = 0;
    const fwd = (async () => {
      for await (const batch of b.batches()) {
        seen.add(batch);
        sizes += batch.length;
        const tests = [...batch].filter(isTest);
        for (const f of tests) forwarded.push(f.slice());
        assert.equal(c.writeBatch(tests), tests.length);
        if (forwarded.length === sent.length) break;
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    await sendPaced(a, sent, () => forwarded.length);
    await fwd;
    assert.deepEqual(forwarded, sent);
    assert.equal(seen.size, 1, "one batch object, reused");
    assert.equal(b.counters.rx.frames, sizes);
    await waitFor("a to get every frame back", () => rxa.got.length === sent.length);
    assert.deepEqual(rxa.got, sent);
    assert.equal(c.counters.tx.frames, sent.length);
    // The loop ended with break: the reader is free again.
    const again = b.listen(() => {});
    await b.close();
    await again;
    await a.close();
    await rxa.done;
  },
);

for (const ioUring of [true, false]) {
  rootTest(`every receive path delivers every frame, counted (ioUring: ${ioUring})`, async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await using b = await lab.nic({ ioUring });
    const N = 200;
    const paths: [string, (want: number, got: Uint8Array[]) => Promise<void>][] = [
      ["listen()", async (want, got) => {
        const stop = new AbortController();
        const done = b.listen((f) => {
          if (isTest(f)) got.push(f.slice());
          if (got.length === want) stop.abort();
        }, { signal: stop.signal });
        await done;
      }],
      ["for await", async (want, got) => {
        for await (const f of b) if (isTest(f) && got.push(f) === want) break;
      }],
      ["frames({ reuse })", async (want, got) => {
        for await (const f of b.frames({ reuse: true })) {
          if (isTest(f) && got.push(f.slice()) === want) break;
        }
      }],
      ["readable", async (want, got) => {
        const r = b.readable.getReader();
        while (got.length < want) {
          const { value } = await r.read();
          if (value && isTest(value)) got.push(value);
        }
        await r.cancel();
      }],
      ["batches()", async (want, got) => {
        for await (const batch of b.batches()) {
          for (const f of batch) if (isTest(f)) got.push(f.slice());
          if (got.length >= want) break;
        }
      }],
    ];
    for (const [i, [what, read]] of paths.entries()) {
      const sent = Array.from(
        { length: N },
        (_, j) => testFrame(60 + ((j * 53) % 1455), i * N + j),
      );
      const got: Uint8Array[] = [];
      const rx0 = b.counters.rx.frames;
      const reading = read(N, got);
      await new Promise((r) => setTimeout(r, 50));
      await sendPaced(a, sent, () => got.length);
      await reading;
      assert.equal(got.length, N, `${what}: frames received`);
      assert.deepEqual(got, sent, `${what}: frames differ`);
      assert.ok(b.counters.rx.frames - rx0 >= N, `${what}: rx.frames`);
    }
    assert.equal(b.counters.rx.drops, 0);
  });
}

for (const ioUring of [true, false]) {
  rootTest(`every send path delivers every frame, counted (ioUring: ${ioUring})`, async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic({ ioUring });
    await using b = await lab.nic();
    const rx = collect(b);
    const N = 200;
    const writer = a.writable.getWriter();
    const paths: [string, (fs: Uint8Array[]) => Promise<void>][] = [
      ["send()", (fs) => {
        for (const f of fs) assert.ok(a.send(f));
        return Promise.resolve();
      }],
      ["write()", async (fs) => {
        for (const f of fs) assert.equal(await a.write(f), true);
      }],
      ["writable", async (fs) => {
        for (const f of fs) await writer.write(f);
      }],
      ["writeBatch()", (fs) => {
        assert.equal(a.writeBatch(fs), fs.length);
        return Promise.resolve();
      }],
    ];
    let total = 0;
    for (const [i, [what, write]] of paths.entries()) {
      const sent = Array.from(
        { length: N },
        (_, j) => testFrame(60 + ((j * 53) % 1455), i * N + j),
      );
      const before = rx.got.length;
      for (let k = 0; k < N; k += 50) {
        await write(sent.slice(k, k + 50));
        await waitFor(`${what}: frames`, () => rx.got.length >= before + k + Math.min(50, N - k));
      }
      assert.deepEqual(rx.got.slice(before), sent, `${what}: frames differ`);
      total += N;
      assert.equal(a.counters.tx.frames, total, `${what}: tx.frames`);
    }
    await writer.close();
    assert.deepEqual(
      { drops: a.counters.tx.drops, errors: a.counters.tx.errors },
      { drops: 0, errors: 0 },
    );
    await b.close();
    await rx.done;
  });
}

rootTest(
  "frames a listen() batch read after its handler threw are counted as drops, none lost",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await using b = await lab.nic();
    const N = 40;
    const sent = Array.from({ length: N }, (_, j) => testFrame(60 + j, j));
    // All queued on b's tap before anyone reads, so one system call reads several.
    const before = b.counters.rx.frames;
    for (const f of sent) assert.ok(a.send(f));
    // The bridge delivers within the sends; the wait only makes sure.
    await new Promise((r) => setTimeout(r, 100));
    const seen: Uint8Array[] = [];
    const boom = new Error("boom");
    // Every frame handed out is counted, ours or not (the bridge may pass IPv6 chatter too).
    let handed = 0;
    const failed = b.listen((f) => {
      handed++;
      if (!isTest(f)) return;
      seen.push(f.slice());
      if (seen.length === 3) throw boom;
    });
    await assert.rejects(failed, (e) => e === boom);
    const drops = b.counters.rx.drops;
    assert.ok(drops >= 1, `the batch after the throw: ${drops} drops`);
    const rest: Uint8Array[] = [];
    const stop = new AbortController();
    const later = b.listen((f) => {
      handed++;
      if (isTest(f)) rest.push(f.slice());
    }, { signal: stop.signal });
    await waitFor("the last frame", () => rest.at(-1)?.[17] === N - 1);
    stop.abort();
    await later;
    // Read from the kernel = handed out + dropped; of ours, the first three, then a gap of at
    // most `drops`, then the rest in order.
    assert.equal(b.counters.rx.frames - before, handed + drops);
    assert.deepEqual(seen, sent.slice(0, 3));
    const lost = N - seen.length - rest.length;
    assert.ok(lost >= 1 && lost <= drops, `${lost} of ours dropped, ${drops} counted`);
    assert.deepEqual(rest, sent.slice(N - rest.length), "after the dropped ones, in order");
  },
);

// ---------------------------------------------------------------------------------------------
// Offloads (issue 9, section 2)

const OFFLOADS = ["csum", "tso4", "tso6"] as const;

/** A TCP/IPv4 frame of `len` bytes (valid IP header, partial TCP checksum) behind `hdrLen`. */
function gsoFrame(hdrLen: number, len: number, seq: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(new ArrayBuffer(hdrLen + len));
  const h = new DataView(out.buffer, 0, hdrLen);
  h.setUint8(0, 1); // VIRTIO_NET_HDR_F_NEEDS_CSUM
  h.setUint8(1, 1); // VIRTIO_NET_HDR_GSO_TCPV4
  h.setUint16(2, 54, true); // hdr_len: Ethernet + IPv4 + TCP
  h.setUint16(4, 1448, true); // gso_size
  h.setUint16(6, 34, true); // csum_start: the TCP header
  h.setUint16(8, 16, true); // csum_offset: TCP's checksum field
  const f = out.subarray(hdrLen);
  const v = new DataView(out.buffer, hdrLen);
  f.set(MAC_B, 0);
  f.set(MAC_A, 6);
  v.setUint16(12, 0x0800);
  // IPv4: version/IHL, total length, DF, TTL 64, TCP, 10.0.0.1 → 10.0.0.2, header checksum.
  v.setUint8(14, 0x45);
  v.setUint16(16, len - 14);
  v.setUint16(18, seq & 0xffff);
  v.setUint16(20, 0x4000);
  v.setUint8(22, 64);
  v.setUint8(23, 6);
  f.set([10, 0, 0, 1, 10, 0, 0, 2], 26);
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += v.getUint16(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  v.setUint16(24, ~sum & 0xffff);
  // TCP: ports, sequence, data offset 5, ACK|PSH, window; the checksum field holds the
  // pseudo-header sum, as a sender with checksum offload leaves it (any value passes).
  v.setUint16(34, 40000);
  v.setUint16(36, 5201);
  v.setUint32(38, seq);
  v.setUint8(46, 0x50);
  v.setUint8(47, 0x18);
  v.setUint16(48, 65535);
  v.setUint16(50, 0x1234);
  for (let i = 54; i < len; i++) f[i] = (i * 13 + seq) & 0xff;
  return out;
}

rootTest(
  "offloads: the kernel's refusal names the offload; no header or strip mode is a TypeError",
  async () => {
    await using lab = await Lab.create();
    // TSO without csum: the kernel refuses (TUNSETOFFLOAD: EINVAL), and the tap is not kept.
    await assert.rejects(
      lab.nic({ vnetHdr: true, vnetMode: "raw", offloads: ["tso4"] }),
      {
        name: "RangeError",
        message:
          "The kernel refused offload `tso4' (TUNSETOFFLOAD: Invalid argument; TSO and USO need csum)",
      },
    );
    await assert.rejects(lab.nic({ offloads: ["csum"] }), {
      name: "TypeError",
      message: "Offloads need the virtio-net header: open the tap with vnetHdr: true",
    });
    await assert.rejects(lab.nic({ vnetHdr: true, offloads: ["csum"] }), {
      name: "TypeError",
      message:
        'Offloads need vnetMode "raw": strip mode would drop the header with the GSO metadata',
    });
    await assert.rejects(
      lab.nic({ vnetHdr: true, vnetMode: "raw", offloads: ["tso9" as "tso4"] }),
      { name: "RangeError", message: /^Unknown offload: `tso9' \(known: csum, tso4/ },
    );
    assert.deepEqual(await lab.ns.taps(), [], "a refused Netdev left its tap behind");
    await using ok = await lab.nic({ vnetHdr: true, vnetMode: "raw", offloads: OFFLOADS });
    assert.deepEqual(ok.offloads, OFFLOADS);
  },
);

rootTest(
  "for await keeps every frame byte-exact across pool refills: small, 4 KiB and GSO frames",
  async () => {
    // Frames are read straight into a 32 KiB pool; one longer than its free tail spills and
    // is copied (into a fresh pool up to 4 KiB, else into a buffer of its own). Every frame
    // kept must stay intact while later ones are read.
    await using lab = await Lab.create();
    const opts = { vnetHdr: true, vnetMode: "raw" as const, offloads: OFFLOADS };
    await using a = await lab.nic(opts);
    await using b = await lab.nic(opts);
    const h = a.vnetHdrLen;
    const sizes = [
      ...Array.from({ length: 40 }, (_, i) => 60 + ((i * 389) % 1455)),
      4096 - h,
      4096 - h + 1,
      30000,
      ...Array.from({ length: 40 }, (_, i) => 1514 - i),
      65000,
      3000,
      60,
    ];
    const sent = sizes.map((n, i) => gsoFrame(h, n, i + 1));
    const got: Uint8Array[] = [];
    const reading = (async () => {
      for await (const f of b) {
        if (f[h + 12] === 0x08 && f[h + 13] === 0x00 && got.push(f) === sent.length) break;
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    for (const f of sent) assert.equal(a.send(f), true, `send(): ${a.counters.tx.lastError}`);
    await reading;
    assert.equal(got.length, sent.length);
    for (const [i, f] of got.entries()) {
      assert.deepEqual(f.subarray(h), sent[i]!.subarray(h), `frame ${i} (${sizes[i]} B) differs`);
    }
  },
);

rootTest(
  "offloads: a 64 KiB TSO frame crosses the bridge whole, byte-exact, with its GSO header",
  async () => {
    await using lab = await Lab.create();
    const opts = { vnetHdr: true, vnetMode: "raw" as const, offloads: OFFLOADS };
    await using a = await lab.nic(opts);
    await using b = await lab.nic(opts);
    const h = a.vnetHdrLen;
    const got: { frame: Uint8Array; header: ReturnType<typeof parseVnetHeader> }[] = [];
    const done = b.listenPackets(({ frame, header }) => {
      if (frame[12] === 0x08 && frame[13] === 0x00) got.push({ frame: frame.slice(), header });
    });
    // Below the tap's GSO limit (64 KiB): a frame of 65536 bytes is segmented on the way out.
    const sizes = [65000, 60000, 3000];
    const sent = sizes.map((n, i) => gsoFrame(h, n, i + 1));
    for (const f of sent) assert.equal(a.send(f), true, `send(): ${a.counters.tx.lastError}`);
    await waitFor("the GSO frames", () => got.length === sent.length);
    for (const [i, g] of got.entries()) {
      assert.equal(g.frame.length, sizes[i], "one frame, not segments");
      assert.deepEqual(g.frame, sent[i]!.subarray(h), `frame ${i} differs`);
      assert.equal(g.header.gsoType, 1, "VIRTIO_NET_HDR_GSO_TCPV4");
      assert.equal(g.header.gsoSize, 1448);
      assert.equal(g.header.flags & 1, 1, "NEEDS_CSUM");
      assert.equal(g.header.csumStart, 34);
      assert.equal(g.header.csumOffset, 16);
    }
    assert.equal(a.counters.tx.bytes, sizes.reduce((x, y) => x + y, 0));
    assert.equal(a.counters.tx.errors, 0);
    await b.close();
    await done;
  },
);

rootTest(
  "offloads: batches() and writeBatch() carry GSO frames and small ones mixed, byte-exact, in order",
  async () => {
    await using lab = await Lab.create();
    const opts = { vnetHdr: true, vnetMode: "raw" as const, offloads: OFFLOADS };
    await using a = await lab.nic(opts);
    await using b = await lab.nic(opts);
    const h = a.vnetHdrLen;
    // Large frames stay where one batch of reads put them, small ones move down between them.
    const sent: Uint8Array<ArrayBuffer>[] = [];
    for (let i = 0; i < 24; i++) {
      sent.push(
        i % 3 === 0 ? gsoFrame(h, 20000 + i * 1000, i + 1) : withHeader(h, testFrame(60 + i, i)),
      );
    }
    // All queued on b's tap before b reads, so its batches take many at once.
    assert.equal(a.writeBatch(sent), sent.length, `writeBatch(): ${a.counters.tx.lastError}`);
    await new Promise((r) => setTimeout(r, 100));
    const got: Uint8Array[] = [];
    let batches = 0;
    for await (const batch of b.batches()) {
      batches++;
      for (const f of batch) {
        const eth = f.subarray(h);
        if ((eth[12] === 0x08 && eth[13] === 0x00) || isTest(eth)) got.push(eth.slice());
      }
      if (got.length >= sent.length) break;
    }
    assert.deepEqual(got, sent.map((f) => f.subarray(h)));
    assert.ok(batches < sent.length, `${batches} batches for ${sent.length} frames`);
    assert.equal(a.counters.tx.errors, 0);
    assert.equal(b.counters.rx.drops, 0);
  },
);

for (const ioUring of [true, false]) {
  rootTest(
    `writeBatch() counts every frame refused while the link is down, then sends (ioUring: ${ioUring})`,
    async () => {
      await using lab = await Lab.create();
      await using a = await lab.nic({ ioUring });
      await using b = await lab.nic();
      const rx = collect(b);
      await lab.ns.ip("link", "set", a.name, "down");
      const down = Array.from({ length: 5 }, (_, i) => testFrame(60 + i, i));
      assert.equal(a.writeBatch(down), 0);
      assert.equal(a.counters.tx.errors, 5);
      assert.equal(a.counters.tx.lastError?.errno, 5, "EIO");
      // A runt is refused alone; the frames around it go.
      await lab.ns.ip("link", "set", a.name, "up");
      await lab.forwarding(a.name);
      const up = Array.from({ length: 5 }, (_, i) => testFrame(60 + i, 100 + i));
      assert.equal(a.writeBatch([up[0]!, up[1]!, new Uint8Array(13), up[2]!, up[3]!, up[4]!]), 5);
      await waitFor("the frames", () => rx.got.length >= 5);
      assert.deepEqual(rx.got, up);
      assert.deepEqual(
        { frames: a.counters.tx.frames, errors: a.counters.tx.errors, drops: a.counters.tx.drops },
        { frames: 5, errors: 6, drops: 0 },
      );
      assert.equal(a.counters.tx.lastError?.errno, 22, "EINVAL");
      await b.close();
      await rx.done;
    },
  );
}

// ---------------------------------------------------------------------------------------------
// send() batches a burst: the frames sent after a write in the same chain of microtasks go out
// together, one system call (issue 9, section 1: send(), write() and writable at C's speed)

/** Lets the microtasks of the current task run out (the event loop's next turn). */
const nextTask = () => new Promise((r) => setTimeout(r, 0));

/** Waits until `rx` has as many test frames as `sent`, then checks they are `sent`, in order. */
async function arrived(rx: { got: Uint8Array[] }, sent: Uint8Array[]): Promise<void> {
  await waitFor(`${sent.length} frames`, () => rx.got.length >= sent.length);
  assert.deepEqual(rx.got, sent, "byte-exact and in order");
}

for (const ioUring of [true, false]) {
  rootTest(
    `send() in a loop: the first frame goes at once, the rest of the burst together, in order (ioUring: ${ioUring})`,
    async () => {
      await using lab = await Lab.create();
      await using a = await lab.nic({ ioUring });
      await using b = await lab.nic();
      const rx = collect(b);
      const sent = Array.from({ length: 150 }, (_, i) => testFrame(60 + ((i * 97) % 1455), i));
      for (const f of sent.slice(0, 40)) assert.equal(a.send(f), true);
      // With an io_uring the other 39 wait for the end of the burst; without, each went at once.
      assert.equal(a.counters.tx.frames, ioUring ? 1 : 40);
      await nextTask();
      assert.equal(a.counters.tx.frames, 40, "written before the event loop's next turn");
      // A burst longer than a batch (64) goes out a batch at a time while it lasts.
      for (const f of sent.slice(40)) a.send(f);
      assert.equal(a.counters.tx.frames, ioUring ? 41 + 64 : 150);
      await arrived(rx, sent);
      assert.deepEqual(
        { frames: a.counters.tx.frames, drops: a.counters.tx.drops, errors: a.counters.tx.errors },
        { frames: 150, drops: 0, errors: 0 },
      );
      await b.close();
      await rx.done;
    },
  );
}

rootTest("a chain of `await write()` and a writer's writes are batched too", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const rx = collect(b);
  const sent = Array.from({ length: 30 }, (_, i) => testFrame(100 + i, i));
  for (const f of sent.slice(0, 10)) assert.equal(await a.write(f), true);
  assert.equal(a.counters.tx.frames, 1, "the other nine wait for the end of the chain");
  await nextTask();
  assert.equal(a.counters.tx.frames, 10);
  const w = a.writable.getWriter();
  for (const f of sent.slice(10)) await w.write(f);
  assert.ok(a.counters.tx.frames < 30, `${a.counters.tx.frames} written one by one`);
  await nextTask();
  assert.equal(a.counters.tx.frames, 30);
  await w.close();
  await arrived(rx, sent);
  await b.close();
  await rx.done;
});

rootTest(
  "in a burst, send() still answers at once for a frame too short, after the batch",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic();
    await using b = await lab.nic();
    const rx = collect(b);
    const good = Array.from({ length: 6 }, (_, i) => testFrame(60, i));
    assert.equal(a.send(good[0]!), true);
    assert.equal(a.send(good[1]!), true);
    assert.equal(a.send(good[2]!), true);
    assert.equal(a.counters.tx.frames, 1);
    // Not batched: the kernel's own verdict, EINVAL, and the two batched before it went first.
    assert.equal(a.send(new Uint8Array(13)), false);
    assert.deepEqual(
      { frames: a.counters.tx.frames, errors: a.counters.tx.errors },
      { frames: 3, errors: 1 },
    );
    assert.equal(a.counters.tx.lastError?.code, "EINVAL");
    for (const f of good.slice(3)) assert.equal(a.send(f), true);
    await arrived(rx, good);
    assert.equal(a.counters.tx.frames, 6);
    await b.close();
    await rx.done;
  },
);

rootTest(
  "a batched frame the kernel refuses is counted, ends the burst, and the next send() answers for itself",
  async () => {
    await using lab = await Lab.create();
    await using a = await lab.nic({ vnetHdr: true, vnetMode: "raw" });
    const h = a.vnetHdrLen;
    // A header with a GSO type the kernel does not know: virtio_net_hdr_to_skb() says EINVAL,
    // which only the kernel can tell.
    const bad = withHeader(h, testFrame(60, 1));
    bad[1] = 0x7f;
    assert.equal(a.send(withHeader(h, testFrame(60, 0))), true);
    assert.equal(a.send(bad), true, "batched: the kernel has not seen it yet");
    assert.equal(a.counters.tx.errors, 0);
    a.flush();
    assert.deepEqual(
      { frames: a.counters.tx.frames, errors: a.counters.tx.errors },
      { frames: 1, errors: 1 },
    );
    assert.equal(a.counters.tx.lastError?.code, "EINVAL");
    assert.equal(a.send(bad), false, "the burst ended: this one was written at once");
    assert.equal(a.counters.tx.errors, 2);
    a.flush(); // nothing batched: a no-op
    assert.equal(a.counters.tx.errors, 2);
  },
);

rootTest("close() writes what send() batched before it closes the tap", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const rx = collect(b);
  const sent = Array.from({ length: 20 }, (_, i) => testFrame(200, i));
  for (const f of sent) a.send(f);
  assert.equal(a.counters.tx.frames, 1);
  const closing = a.close();
  assert.equal(a.counters.tx.frames, 20, "written synchronously by close()");
  await closing;
  a.flush(); // closed: a no-op, never a throw
  await arrived(rx, sent);
  await b.close();
  await rx.done;
});

rootTest("send() then writeBatch(): the batched frames go first", async () => {
  await using lab = await Lab.create();
  await using a = await lab.nic();
  await using b = await lab.nic();
  const rx = collect(b);
  const sent = Array.from({ length: 12 }, (_, i) => testFrame(80, i));
  for (const f of sent.slice(0, 5)) a.send(f);
  assert.equal(a.writeBatch(sent.slice(5)), 7);
  await arrived(rx, sent);
  await b.close();
  await rx.done;
});

rootTest(
  "strip mode: each batched frame gets a zeroed header, also where the batch buffer held a frame before",
  async () => {
    await using lab = await Lab.create();
    await using v = await lab.nic({ vnetHdr: true });
    await using p = await lab.nic();
    const rx = collect(p);
    const sent: Uint8Array[] = [];
    for (let round = 0; round < 3; round++) {
      // Other lengths each round, so headers land where earlier frames' bytes were.
      const burst = Array.from(
        { length: 30 },
        (_, i) => testFrame(60 + ((i * 131 + round * 977) % 1455), round * 100 + i),
      );
      for (const f of burst) assert.equal(v.send(f), true);
      sent.push(...burst);
      await waitFor("the burst", () => rx.got.length === sent.length);
    }
    assert.deepEqual(rx.got, sent);
    assert.deepEqual(
      { frames: v.counters.tx.frames, errors: v.counters.tx.errors, drops: v.counters.tx.drops },
      { frames: 90, errors: 0, drops: 0 },
    );
    await p.close();
    await rx.done;
  },
);
