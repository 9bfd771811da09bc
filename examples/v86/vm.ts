// Boots the guest from build-guest.ts in v86 (npm:v86, x86 in WebAssembly) inside this Deno
// process, with its NIC on a Netdev through @vm/bridge/v86, and watches its serial console.
// Used by main.ts, `deno task demo --v86` and tests/privileged/v86_test.ts.

import { V86 } from "npm:v86@0.5.462";
import type { Netdev } from "../../mod.ts";
import { attachV86 } from "../../v86.ts";
import type { V86Attachment } from "../../v86.ts";
import { guestCmdline, POWEROFF_COMMAND, SEABIOS } from "./build-guest.ts";
import type { V86Guest, V86GuestParams } from "./build-guest.ts";

/** v86's WebAssembly module, from the pinned npm package (v86 cannot find it by itself here). */
export const V86_WASM: string = new URL(import.meta.resolve("npm:v86@0.5.462/build/v86.wasm"))
  .pathname;

/** Options for {@linkcode startV86}. */
export interface StartV86Options extends V86GuestParams {
  /** Where the guest's NIC goes. */
  netdev: Netdev;
  /** Kernel and initramfs from buildV86Guest(). */
  guest: V86Guest;
  /** Guest memory in MiB (default 128). */
  memoryMiB?: number;
  /** Called with every line the guest writes to its serial console. */
  onLine?: (line: string) => void;
}

/** A running v86 guest. */
export interface V86Vm extends AsyncDisposable {
  /** The v86 emulator. */
  readonly emulator: V86;
  /** Its NIC's wiring to the Netdev. */
  readonly link: V86Attachment;
  /** Everything the guest wrote to its serial console so far. */
  readonly serial: string;
  /** Milliseconds since `new V86(...)`. */
  elapsed(): number;
  /** Resolves with the first serial line starting with `marker` (past or future). */
  waitFor(marker: string, timeoutMs: number): Promise<string>;
  /** Types a line on the guest's serial console. */
  type(line: string): void;
  /** Unwires the NIC and destroys the emulator (the Netdev stays open). Idempotent. */
  stop(): Promise<void>;
}

/**
 * Boots the guest. Requires `--allow-read` (v86, the BIOS and the guest) and `--allow-ffi`
 * (the Netdev).
 */
export async function startV86(options: StartV86Options): Promise<V86Vm> {
  const [kernel, initrd] = await Promise.all([
    Deno.readFile(options.guest.kernel),
    Deno.readFile(options.guest.initrd),
  ]);
  const nic = options.nic ?? "virtio";
  const t0 = performance.now();
  const emulator = new V86({
    wasm_path: V86_WASM,
    bios: { url: SEABIOS },
    bzimage: { buffer: kernel.buffer },
    initrd: { buffer: initrd.buffer },
    cmdline: guestCmdline({ ...options, nic }),
    memory_size: (options.memoryMiB ?? 128) * 1024 * 1024,
    net_device: { type: nic },
    autostart: true,
  });
  // Attached at once: frames that come before the guest can take them are counted, not lost
  // silently, and never reach v86 too early.
  const link = attachV86(emulator, options.netdev);

  const lines: string[] = [];
  let serial = "";
  let partial = "";
  const waiters = new Set<{ marker: string; resolve: (line: string) => void }>();
  const decoder = new TextDecoder();
  emulator.add_listener("serial0-output-byte", (byte: number) => {
    const ch = decoder.decode(Uint8Array.of(byte), { stream: true });
    serial += ch;
    if (ch !== "\n") {
      if (ch !== "\r") partial += ch;
      return;
    }
    const line = partial;
    partial = "";
    lines.push(line);
    options.onLine?.(line);
    for (const w of waiters) {
      if (line.startsWith(w.marker)) {
        waiters.delete(w);
        w.resolve(line);
      }
    }
  });

  let stopping: Promise<void> | undefined;
  const vm: V86Vm = {
    emulator,
    link,
    get serial() {
      return serial;
    },
    elapsed: () => performance.now() - t0,
    waitFor(marker, timeoutMs) {
      const seen = lines.find((l) => l.startsWith(marker));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<string>((resolve, reject) => {
        const w = {
          marker,
          resolve: (line: string) => {
            clearTimeout(timer);
            resolve(line);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`The guest did not print "${marker}" within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    type(line) {
      emulator.serial0_send(`${line}\n`);
    },
    stop() {
      stopping ??= (async () => {
        await link.detach();
        await emulator.destroy();
      })();
      return stopping;
    },
    [Symbol.asyncDispose]() {
      return vm.stop();
    },
  };
  return vm;
}

/** Asks the guest to power off, then stops the emulator whatever it did. */
export async function powerOff(vm: V86Vm, timeoutMs = 5000): Promise<void> {
  vm.type(POWEROFF_COMMAND);
  await vm.waitFor("VMB-POWEROFF", timeoutMs).catch(() => {});
  await vm.stop();
}

/** What {@linkcode httpGet} measured. */
export interface HttpGetResult {
  /** The status line, for example `"HTTP/1.0 200 OK"`. */
  status: string;
  /** Body length. */
  bytes: number;
  /** SHA-256 of the body, in hex. */
  sha256: string;
  /** Milliseconds from connect() to the end of the body. */
  ms: number;
}

/**
 * Fetches `http://host:port/path` with HTTP/1.0 from a small Deno client run under `prefix`
 * (for example `ip netns exec NS`, so it runs inside a network namespace while this process
 * stays outside). Requires `--allow-run`.
 *
 * @throws {Error} when the client fails (its stderr is in the message) or `timeoutMs` passes.
 */
export async function httpGet(
  prefix: readonly string[],
  host: string,
  port: number,
  path: string,
  timeoutMs = 60_000,
): Promise<HttpGetResult> {
  const argv = [
    ...prefix,
    Deno.execPath(),
    "eval",
    "--no-config",
    HTTP_CLIENT,
    host,
    String(port),
    path,
  ];
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `HTTP GET ${host}:${port}${path} failed (${out.code}): ${dec.decode(out.stderr).trim()}`,
    );
  }
  return JSON.parse(dec.decode(out.stdout)) as HttpGetResult;
}

// Runs with no permission prompt beyond the network: it reads the whole response, splits the
// header off, and prints one JSON line.
const HTTP_CLIENT = `
const [host, port, path] = Deno.args;
const t0 = performance.now();
const conn = await Deno.connect({ hostname: host, port: Number(port) });
await conn.write(new TextEncoder().encode("GET " + path + " HTTP/1.0\\r\\n\\r\\n"));
const chunks = [];
let total = 0;
for await (const c of conn.readable) { chunks.push(c); total += c.length; }
const ms = performance.now() - t0;
const all = new Uint8Array(total);
let off = 0;
for (const c of chunks) { all.set(c, off); off += c.length; }
let end = -1;
for (let i = 0; i + 3 < all.length && end < 0; i++) {
  if (all[i] === 13 && all[i + 1] === 10 && all[i + 2] === 13 && all[i + 3] === 10) end = i;
}
if (end < 0) throw new Error("no HTTP header in " + total + " bytes");
const status = new TextDecoder().decode(all.subarray(0, end)).split("\\r\\n")[0];
const body = all.subarray(end + 4);
const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
const sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
console.log(JSON.stringify({ status, bytes: body.length, sha256, ms }));
`;
