/**
 * @vm/bridge/v86: puts the network card of a [v86](https://github.com/copy/v86) emulator (x86 in
 * WebAssembly, `npm:v86`) on a {@linkcode Netdev}, so a guest booted in Deno sits on a real
 * Linux bridge. This module does not import v86: it works with the emulator object you made.
 *
 * What it takes care of, found the hard way with `npm:v86@0.5.462`:
 *
 * - v86's virtio-net throws out of the emulator (`RangeError: offset is out of bounds`) when a
 *   frame arrives before the guest driver has set up its receive queue, and a bridge sends
 *   frames at once. Frames are dropped (and counted) until the guest can receive, then held
 *   briefly (bounded, counted) when the guest has no free receive buffer.
 * - There is no backpressure on the v86 side: everything dropped is counted.
 * - ne2k hands its listeners a view into its own memory; frames are sent to the tap before
 *   anything asynchronous happens (and {@linkcode Netdev.send} copies what it must queue).
 *
 * Use virtio-net (`net_device: { type: "virtio" }`). With ne2k, Linux guests stall under
 * sustained traffic: v86 0.5.462's interrupt controller can leave the cascade IRQ 2 in service
 * with nothing delivered, which silences the NIC's IRQ for good (`NETDEV WATCHDOG`).
 *
 * v86 gives its NIC a random MAC at every boot. Set a fixed one in the guest
 * (`ip link set eth0 address ...` before `up`) and send a gratuitous ARP
 * (`arping -U -c 1 -I eth0 IP`), or hosts on the bridge keep a stale neighbour entry.
 *
 * @example Boot a guest on br0
 * ```ts ignore
 * import { V86 } from "npm:v86@0.5.462";
 * import { bridgeNetdev } from "@vm/bridge";
 * import { attachV86 } from "@vm/bridge/v86";
 *
 * await using nic = await bridgeNetdev({ br: "br0" });
 * const emulator = new V86({
 *   wasm_path: new URL(import.meta.resolve("npm:v86@0.5.462/build/v86.wasm")).pathname,
 *   bios: { url: "/usr/share/seabios/bios-256k.bin" },
 *   bzimage: { url: "vmlinuz" },
 *   initrd: { url: "initrd.img" },
 *   cmdline: "console=ttyS0",
 *   net_device: { type: "virtio" },
 *   autostart: true,
 * });
 * await using link = attachV86(emulator, nic);
 * ```
 *
 * @module
 */

import type { Netdev } from "./net/netdev.ts";

/** The v86 release whose internals {@linkcode attachV86} reads (see `receiveState` in v86.ts). */
export const V86_VERSION = "0.5.462";

/**
 * What {@linkcode attachV86} needs from a v86 emulator: a `V86` instance from `npm:v86`
 * satisfies it. `bus` (where v86's own network adapters send received frames) and `v86` (the
 * machine) are on every instance but not in v86's type declarations, so they are optional here
 * and checked at run time.
 */
export interface V86Emulator {
  /** v86's `add_listener`. */
  add_listener(event: string, listener: (value: unknown) => void): void;
  /** v86's `remove_listener`. */
  remove_listener(event: string, listener: (value: unknown) => void): void;
  /** The emulator's side of v86's message bus. */
  readonly bus?: unknown;
  /** The emulated machine, once v86 has loaded (internal to v86). */
  readonly v86?: unknown;
}

/** Options for {@linkcode attachV86}. */
export interface AttachV86Options {
  /** Which v86 NIC: 0 for the `net0-*` events (the only NIC v86 makes by default). */
  nic?: number;
  /**
   * Frames held while the guest has no free receive buffer, waiting for it to post more
   * (default 256). Beyond that they are dropped and counted in `toGuest.overflow`.
   */
  holdFrames?: number;
}

/** Frame counters of an attachment (the Netdev has its own). */
export interface V86NetCounters {
  /** From the guest's NIC to the Netdev. */
  fromGuest: {
    /** Frames handed to the Netdev. */
    frames: number;
    /** Their bytes. */
    bytes: number;
    /** Frames the Netdev refused: its transmit queue was full, or it was closed. */
    drops: number;
  };
  /** From the Netdev to the guest's NIC. */
  toGuest: {
    /** Frames delivered to the NIC. */
    frames: number;
    /** Their bytes. */
    bytes: number;
    /** Frames dropped because the guest's driver was not receiving yet (or was reset). */
    notReady: number;
    /** Frames that had to wait for a receive buffer. */
    held: number;
    /** Frames dropped because the hold queue was full. */
    overflow: number;
  };
}

/** A v86 NIC wired to a Netdev, from {@linkcode attachV86}. */
export interface V86Attachment extends AsyncDisposable {
  /** Live counters. */
  readonly counters: V86NetCounters;
  /**
   * The last MAC the NIC announced (`netN-mac`) since the attachment: v86's virtio-net announces
   * the MAC its guest driver sets; ne2k announces none.
   */
  readonly mac: string | undefined;
  /**
   * The Netdev reader: settles after {@linkcode V86Attachment.detach} or when the Netdev is
   * closed, and rejects on a tap I/O error or when the v86 internals are not the pinned ones.
   */
  readonly done: Promise<void>;
  /**
   * Unwires the NIC: stops reading the Netdev, removes the listeners and drops held frames.
   * It leaves the Netdev open and the emulator running. Idempotent.
   */
  detach(): Promise<void>;
}

/**
 * Wires v86's `netN-send` (frames from the guest) to {@linkcode Netdev.send} and the Netdev's
 * frames to the NIC (`netN-receive`), with the guards described in the module doc. Call it
 * right after `new V86(...)`; frames that arrive before the guest can receive are dropped and
 * counted.
 *
 * Requires `--allow-ffi` (the Netdev). v86 itself needs `--allow-read` for its files.
 *
 * @param emulator A `V86` instance (`npm:v86@0.5.462`).
 * @param netdev The Netdev to attach, for example from {@linkcode bridgeNetdev}; it must have
 *   no other reader. It stays the caller's to close.
 * @param options Which NIC, and how many frames to hold.
 * @returns The attachment: counters, the guest's MAC, and `detach()`.
 * @throws {TypeError} when `emulator` has no v86 message bus.
 * @throws {RangeError} when `nic` or `holdFrames` is not a non-negative integer.
 * @throws {Error} when the Netdev already has a reader.
 *
 * @example Attach, then print what went through
 * ```ts ignore
 * import { attachV86 } from "@vm/bridge/v86";
 *
 * const link = attachV86(emulator, nic);
 * // ...the guest boots and talks...
 * await link.detach();
 * console.log(link.counters.toGuest, link.counters.fromGuest, link.mac);
 * ```
 */
export function attachV86(
  emulator: V86Emulator,
  netdev: Netdev,
  options: AttachV86Options = {},
): V86Attachment {
  const nic = options.nic ?? 0;
  const holdMax = options.holdFrames ?? 256;
  if (!Number.isSafeInteger(nic) || nic < 0) throw new RangeError(`Invalid v86 NIC number: ${nic}`);
  if (!Number.isSafeInteger(holdMax) || holdMax < 0) {
    throw new RangeError(`Invalid number of frames to hold: ${holdMax}`);
  }
  const bus = busOf(emulator);
  const counters: V86NetCounters = {
    fromGuest: { frames: 0, bytes: 0, drops: 0 },
    toGuest: { frames: 0, bytes: 0, notReady: 0, held: 0, overflow: 0 },
  };
  const receiveEvent = `net${nic}-receive`;
  const held: Uint8Array[] = [];
  let mac: string | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let detached = false;

  const deliver = (frame: Uint8Array) => {
    counters.toGuest.frames++;
    counters.toGuest.bytes += frame.length;
    // Both NIC models copy the frame into guest memory before send() returns.
    bus.send(receiveEvent, frame);
  };

  // Delivers held frames while the guest has buffers; keeps polling while any are left, since
  // v86 tells nobody when the guest posts receive buffers.
  const flush = () => {
    timer = undefined;
    if (detached) return;
    while (held.length > 0) {
      const state = receiveState(emulator, nic);
      if (state === "down") {
        counters.toGuest.notReady += held.length;
        held.length = 0;
        return;
      }
      if (state === "full") break;
      deliver(held.shift()!);
    }
    if (held.length > 0) retryLater();
  };
  const retryLater = () => {
    if (timer !== undefined) return;
    timer = setTimeout(flush, 1);
    // Held frames alone must not keep the process alive.
    Deno.unrefTimer(timer);
  };

  const fromTap = (frame: Uint8Array) => {
    if (held.length === 0) {
      const state = receiveState(emulator, nic);
      if (state === "ready") return deliver(frame);
      if (state === "down") {
        counters.toGuest.notReady++;
        return;
      }
    }
    if (held.length >= holdMax) {
      counters.toGuest.overflow++;
      return;
    }
    // The Netdev reuses its buffer: keep a copy.
    held.push(frame.slice());
    counters.toGuest.held++;
    retryLater();
  };

  const fromGuest = (frame: unknown) => {
    if (!(frame instanceof Uint8Array)) return;
    // ne2k's frame is a view into its memory; send() writes it now, or copies it (a later frame
    // of a burst, written with the others when v86's task ends, or one queued while the kernel
    // is full).
    try {
      if (netdev.closed || !netdev.send(frame)) {
        counters.fromGuest.drops++;
      } else {
        counters.fromGuest.frames++;
        counters.fromGuest.bytes += frame.length;
      }
    } catch {
      // A failed write must not throw into the emulator's port I/O, which would stop the CPU.
      counters.fromGuest.drops++;
    }
    // The guest is running its driver: a good moment to hand it what it could not take.
    if (held.length > 0) {
      if (timer !== undefined) clearTimeout(timer);
      flush();
    }
  };
  const onMac = (value: unknown) => {
    if (typeof value === "string") mac = value;
  };

  const stop = new AbortController();
  const done = netdev.listen(fromTap, { signal: stop.signal });
  emulator.add_listener(`net${nic}-send`, fromGuest);
  emulator.add_listener(`net${nic}-mac`, onMac);

  let detaching: Promise<void> | undefined;
  const detach = () => {
    detaching ??= (async () => {
      detached = true;
      emulator.remove_listener(`net${nic}-send`, fromGuest);
      emulator.remove_listener(`net${nic}-mac`, onMac);
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      counters.toGuest.overflow += held.length;
      held.length = 0;
      stop.abort();
      // Errors stay on `done`; detaching itself does not fail.
      await done.catch(() => {});
    })();
    return detaching;
  };

  return {
    counters,
    get mac() {
      return mac;
    },
    done,
    detach,
    [Symbol.asyncDispose]: detach,
  };
}

interface Bus {
  send(event: string, value: unknown): void;
}

function busOf(emulator: V86Emulator): Bus {
  const bus = emulator.bus as { send?: unknown } | undefined;
  if (typeof bus !== "object" || bus === null || typeof bus.send !== "function") {
    throw new TypeError("Not a v86 emulator: it has no message bus (emulator.bus.send)");
  }
  return bus as Bus;
}

/**
 * Can the guest take a frame on NIC `nic` now? `"ready"`: yes; `"full"`: its driver runs but
 * has no free receive buffer; `"down"`: there is no such NIC yet, or its driver is not up.
 *
 * This is the only code that reads v86 internals, and it is written against npm:v86@0.5.462
 * ({@linkcode V86_VERSION}). Why it must: v86's virtio-net, on `netN-receive`, pops a buffer
 * from receive queue 0 without checking that the guest driver has configured that queue; before
 * the driver is up the queue addresses are 0 and the pop reads descriptors from a bogus address
 * and throws `RangeError: offset is out of bounds` out of the emulator. Once the driver runs, a
 * frame with no free buffer is dropped with a `console.log`. v86 has no public way to ask
 * either, so we look at the device: `cpu.devices.virtio_net.virtio` (device_status bit 4 is
 * DRIVER_OK) and its queue 0 (`is_configured()`, `has_request()`). ne2k needs no check: it
 * drops frames itself while stopped, and holds no queue of buffers.
 *
 * @throws {TypeError} when the virtio-net device does not look like v86 0.5.462's, so that an
 *   upgraded v86 fails loudly instead of dropping every frame.
 */
function receiveState(emulator: V86Emulator, nic: number): "ready" | "full" | "down" {
  type Queue = { is_configured(): unknown; has_request(): boolean };
  type Devices = {
    net?: { id?: number };
    virtio_net?: { id?: number; virtio?: { device_status?: number; queues?: Queue[] } };
  };
  const machine = emulator.v86 as { cpu?: { devices?: Devices } } | undefined;
  const devices = machine?.cpu?.devices;
  if (devices === undefined) return "down"; // v86 is still loading: no NIC exists yet
  const vnet = devices.virtio_net;
  if (vnet === undefined || vnet.id !== nic) {
    // ne2k, or no NIC with that number (its frames would vanish on the bus anyway).
    return devices.net !== undefined && (devices.net.id ?? 0) === nic ? "ready" : "down";
  }
  const virtio = vnet.virtio;
  const queue = virtio?.queues?.[0];
  if (
    typeof virtio?.device_status !== "number" || typeof queue?.is_configured !== "function" ||
    typeof queue.has_request !== "function"
  ) {
    throw new TypeError(
      `The v86 virtio-net device is not the one attachV86 knows: it was written for ` +
        `npm:v86@${V86_VERSION}`,
    );
  }
  if ((virtio.device_status & 4) === 0 || !queue.is_configured()) return "down";
  return queue.has_request() ? "ready" : "full";
}
