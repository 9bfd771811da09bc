// A real emulator hosted in Deno on our bridge: v86 (npm:v86, x86 in WebAssembly) boots a 32-bit
// Debian kernel in this process, its virtio-net NIC is attached through @vm/bridge/v86 to a tap
// that our helper (run from source) made in a throwaway namespace, and the namespace pings the
// guest and downloads 4 MiB from it over TCP. Prints the boot time, RTTs and the TCP rate.

import { bridgeNetdev } from "../../mod.ts";
import type { Netdev } from "../../mod.ts";
import { attachV86, V86_VERSION } from "../../v86.ts";
import {
  buildV86Guest,
  GUEST_HTTP_PORT,
  GUEST_IP,
  GUEST_MAC,
  MARKERS,
} from "../../examples/v86/build-guest.ts";
import { httpGet, powerOff, startV86 } from "../../examples/v86/vm.ts";
import { HELPER_FROM_SOURCE, NetNs, rootTest, sandbox } from "../_support/ns.ts";

const GUEST = GUEST_IP.split("/")[0]!;
/** Generous: the guest reaches its shell in 15 to 20 s on an idle two-core machine. */
const BOOT_TIMEOUT_MS = 70_000;

function assert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

rootTest(
  "v86 boots Linux on a bridge through our helper: 0% ping loss and 4 MiB over TCP",
  async () => {
    // Before any namespace: the guest's packages come from the Debian mirror (cached after the
    // first run, by scripts/cache-deps.sh in CI).
    const guest = await buildV86Guest();
    await using ns = await NetNs.create("vmb-v86");
    await ns.bridge("br0", { addr: "10.0.77.1/24" });
    const sb = await sandbox(ns, { etcQemu: { "bridge.conf": "allow br0\n" } });
    try {
      await using nic = await bridgeNetdev({ br: "br0", helper: [...sb.argv, HELPER_FROM_SOURCE] });
      await using vm = await startV86({ netdev: nic, guest });
      const ready = await vm.waitFor(MARKERS.ready, BOOT_TIMEOUT_MS).catch((e) => {
        throw new Error(`${e.message}\n--- serial ---\n${vm.serial}`);
      });
      const bootMs = vm.elapsed();
      assert(ready.includes(`mac=${GUEST_MAC}`), `the guest did not take its fixed MAC: ${ready}`);

      const ping = await ns.sh(`ping -c 5 -i 0.2 -W 2 ${GUEST}`);
      const rtts = [...ping.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
      assert(
        ping.code === 0 && /\b0% packet loss/.test(ping.stdout) && rtts.length === 5,
        `ping of the guest lost packets:\n${ping.stdout}${ping.stderr}\n--- serial ---\n${vm.serial}`,
      );

      const f = await httpGet(ns.exec([]), GUEST, GUEST_HTTP_PORT, guest.blob.path).catch((e) => {
        throw new Error(`${e.message}\n--- serial ---\n${vm.serial}`);
      });
      assert(/^HTTP\/1\.[01] 200/.test(f.status), `unexpected HTTP status: ${f.status}`);
      assert(f.bytes === guest.blob.size, `got ${f.bytes} bytes, expected ${guest.blob.size}`);
      assert(f.sha256 === guest.blob.sha256, "the downloaded bytes differ from the guest's file");

      const mib = f.bytes / 1048576;
      const c = vm.link.counters;
      console.log(
        `v86: boot ${(bootMs / 1000).toFixed(1)} s; ping RTTs ${rtts.join(" / ")} ms (0% loss); ` +
          `TCP ${mib} MiB in ${(f.ms / 1000).toFixed(2)} s = ${
            (mib / (f.ms / 1000)).toFixed(2)
          } MiB/s; ` +
          `to guest ${c.toGuest.frames} frames (${c.toGuest.notReady} before it was ready, ` +
          `${c.toGuest.held} held, ${c.toGuest.overflow} overflowed), from guest ` +
          `${c.fromGuest.frames} frames (${c.fromGuest.drops} dropped)`,
      );
      await powerOff(vm);
    } finally {
      await sb.cleanup();
    }
  },
);

// The adapter's guards, against a stand-in for the emulator and the Netdev (no root needed).

type Listener = (value: unknown) => void;

/** Just enough of a v86 emulator: listeners, a bus that records, and a virtio-net device. */
function fakeEmulator() {
  const listeners = new Map<string, Set<Listener>>();
  const delivered: Uint8Array[] = [];
  const queue = { configured: true, buffers: 0 };
  const virtio = {
    device_status: 0,
    queues: [{
      is_configured: () => queue.configured,
      has_request: () => queue.buffers > 0,
    }],
  };
  const emulator = {
    add_listener(event: string, fn: Listener) {
      if (!listeners.has(event)) listeners.set(event, new Set());
      listeners.get(event)!.add(fn);
    },
    remove_listener(event: string, fn: Listener) {
      listeners.get(event)?.delete(fn);
    },
    bus: {
      send(event: string, value: unknown) {
        assert(event === "net0-receive", `unexpected bus event ${event}`);
        delivered.push((value as Uint8Array).slice());
        queue.buffers--;
      },
    },
    v86: undefined as unknown,
  };
  return {
    emulator,
    delivered,
    queue,
    virtio,
    /** The machine appears (v86 finished loading). */
    load() {
      emulator.v86 = { cpu: { devices: { virtio_net: { id: 0, virtio } } } };
    },
    /** What the NIC would do: call every listener of `event`. */
    emit(event: string, value: unknown) {
      for (const fn of listeners.get(event) ?? []) fn(value);
    },
    listenerCount: () => [...listeners.values()].reduce((n, s) => n + s.size, 0),
  };
}

/** Just enough of a Netdev: one reader, and send() that can be told to refuse. */
function fakeNetdev() {
  let reader: ((frame: Uint8Array) => void) | undefined;
  const sent: Uint8Array[] = [];
  const nic = {
    closed: false,
    refuse: false,
    listen(handler: (frame: Uint8Array) => void, options: { signal?: AbortSignal } = {}) {
      reader = handler;
      return new Promise<void>((resolve) => {
        options.signal?.addEventListener("abort", () => {
          reader = undefined;
          resolve();
        });
      });
    },
    send(frame: Uint8Array) {
      if (nic.refuse) return false;
      sent.push(frame.slice());
      return true;
    },
  };
  return {
    netdev: nic as unknown as Netdev,
    nic,
    sent,
    /** A frame arrives from the tap, in a buffer that is then reused. */
    receive(bytes: number[]) {
      const buf = new Uint8Array(64);
      buf.set(bytes);
      reader?.(buf.subarray(0, bytes.length));
      buf.fill(0xee);
    },
  };
}

Deno.test("attachV86() drops and counts frames until the guest's virtio driver is up", async () => {
  const e = fakeEmulator();
  const n = fakeNetdev();
  const link = attachV86(e.emulator, n.netdev);
  n.receive([1]); // v86 still loading
  e.load();
  e.queue.buffers = 8;
  n.receive([2]); // device there, driver not OK yet
  e.virtio.device_status = 1 | 2 | 4 | 8;
  e.queue.configured = false;
  n.receive([3]); // queue not set up
  e.queue.configured = true;
  n.receive([4, 5]);
  assertEquals(e.delivered, [Uint8Array.of(4, 5)]);
  assertEquals(link.counters.toGuest, { frames: 1, bytes: 2, notReady: 3, held: 0, overflow: 0 });
  await link.detach();
});

Deno.test("attachV86() holds frames while the guest has no receive buffer, then delivers them", async () => {
  const e = fakeEmulator();
  const n = fakeNetdev();
  e.load();
  e.virtio.device_status = 15;
  const link = attachV86(e.emulator, n.netdev, { holdFrames: 2 });
  n.receive([1]);
  n.receive([2]);
  n.receive([3]); // beyond holdFrames
  assertEquals(e.delivered.length, 0);
  e.queue.buffers = 4;
  await new Promise((r) => setTimeout(r, 20));
  // Copies were held: the reused receive buffer did not change them.
  assertEquals(e.delivered, [Uint8Array.of(1), Uint8Array.of(2)]);
  n.receive([4]);
  assertEquals(e.delivered.length, 3);
  assertEquals(link.counters.toGuest, { frames: 3, bytes: 3, notReady: 0, held: 2, overflow: 1 });
  await link.detach();
});

Deno.test("attachV86() sends the guest's frames and counts what the Netdev refuses", async () => {
  const e = fakeEmulator();
  const n = fakeNetdev();
  const link = attachV86(e.emulator, n.netdev);
  e.emit("net0-send", Uint8Array.of(9, 9, 9));
  n.nic.refuse = true;
  e.emit("net0-send", Uint8Array.of(8));
  n.nic.closed = true;
  e.emit("net0-send", Uint8Array.of(7));
  e.emit("net0-mac", "52:54:00:00:77:02");
  assertEquals(n.sent, [Uint8Array.of(9, 9, 9)]);
  assertEquals(link.counters.fromGuest, { frames: 1, bytes: 3, drops: 2 });
  assertEquals(link.mac, "52:54:00:00:77:02");
  await link.detach();
});

Deno.test("attachV86() detach() removes its listeners, stops reading and is idempotent", async () => {
  const e = fakeEmulator();
  const n = fakeNetdev();
  const link = attachV86(e.emulator, n.netdev);
  assertEquals(e.listenerCount(), 2);
  const a = link.detach();
  assert(a === link.detach(), "detach() returns the same promise");
  await a;
  await link.done;
  assertEquals(e.listenerCount(), 0);
  e.emit("net0-send", Uint8Array.of(1));
  n.receive([1]);
  assertEquals(n.sent.length + e.delivered.length, 0);
});

Deno.test("attachV86() fails loudly when v86's virtio-net internals are not the pinned ones", async () => {
  const e = fakeEmulator();
  const n = fakeNetdev();
  e.emulator.v86 = { cpu: { devices: { virtio_net: { id: 0, virtio: { queues: [] } } } } };
  const link = attachV86(e.emulator, n.netdev);
  assertThrows(() => n.receive([1]), TypeError, `npm:v86@${V86_VERSION}`);
  await link.detach();
});

Deno.test("attachV86() rejects what is not a v86 emulator, and bad options", () => {
  const n = fakeNetdev();
  const noBus = { add_listener() {}, remove_listener() {} };
  assertThrows(() => attachV86(noBus, n.netdev), TypeError, "Not a v86 emulator");
  const e = fakeEmulator();
  assertThrows(() => attachV86(e.emulator, n.netdev, { nic: -1 }), RangeError, "NIC number");
  assertThrows(() => attachV86(e.emulator, n.netdev, { holdFrames: 1.5 }), RangeError, "hold");
});

function assertEquals(actual: unknown, expected: unknown): void {
  const a = JSON.stringify(actual, (_k, v) => v instanceof Uint8Array ? [...v] : v);
  const b = JSON.stringify(expected, (_k, v) => v instanceof Uint8Array ? [...v] : v);
  assert(a === b, `expected ${b}, got ${a}`);
}

function assertThrows(
  fn: () => unknown,
  cls: new (...args: never[]) => Error,
  includes: string,
): void {
  try {
    fn();
  } catch (e) {
    assert(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert(e.message.includes(includes), `"${e.message}" does not include "${includes}"`);
    return;
  }
  throw new Error(`expected ${cls.name}, nothing was thrown`);
}
