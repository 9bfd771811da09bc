// Tests for the kernel module metadata reader and load-order computation used by both test
// guests (tests/_support/kmod.ts). The checks against real kernel packages are in
// tests/privileged/guest_modules_test.ts.

import assert from "node:assert/strict";
import { modinfoDepends, moduleLoadOrder, moduleName, parseModinfo } from "../_support/kmod.ts";

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

/** A minimal ELF relocatable file with a section name table and the given sections. */
function fakeElf(
  sections: ReadonlyArray<readonly [string, Uint8Array]>,
  opts: { is64: boolean; little: boolean },
): Uint8Array {
  const { is64, little } = opts;
  const enc = new TextEncoder();
  // Section name table: "\0" + names.
  const all: Array<readonly [string, Uint8Array]> = [...sections, [".shstrtab", new Uint8Array()]];
  const nameOff: number[] = [];
  let strtab = "\0";
  for (const [n] of all) {
    nameOff.push(strtab.length);
    strtab += n + "\0";
  }
  all[all.length - 1] = [".shstrtab", enc.encode(strtab)];
  const ehsize = is64 ? 0x40 : 0x34;
  const shentsize = is64 ? 0x40 : 0x28;
  let off = ehsize;
  const offsets: number[] = [];
  for (const [, data] of all) {
    offsets.push(off);
    off += data.length;
  }
  const shoff = (off + 7) & ~7;
  const total = shoff + shentsize * (all.length + 1);
  const b = new Uint8Array(total);
  const v = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, little ? 1 : 2, 1]);
  const w = (o: number, x: number) =>
    is64 ? v.setBigUint64(o, BigInt(x), little) : v.setUint32(o, x, little);
  w(is64 ? 0x28 : 0x20, shoff);
  v.setUint16(is64 ? 0x3a : 0x2e, shentsize, little);
  v.setUint16(is64 ? 0x3c : 0x30, all.length + 1, little);
  v.setUint16(is64 ? 0x3e : 0x32, all.length, little);
  for (const [i, [, data]] of all.entries()) {
    b.set(data, offsets[i]!);
    const h = shoff + shentsize * (i + 1); // section 0 is the null section
    v.setUint32(h, nameOff[i]!, little);
    v.setUint32(h + 4, 1, little);
    w(h + (is64 ? 0x18 : 0x10), offsets[i]!);
    w(h + (is64 ? 0x20 : 0x14), data.length);
  }
  return b;
}

const modinfo = (...kv: string[]) => new TextEncoder().encode(kv.map((s) => s + "\0").join(""));

test("parseModinfo() reads key=value strings from 32-bit little-endian and 64-bit big-endian ELF", () => {
  const info = modinfo("license=GPL", "depends=virtio_ring,virtio", "name=virtio_pci", "alias=a");
  for (const is64 of [false, true]) {
    for (const little of [true, false]) {
      const elf = fakeElf([[".text", new Uint8Array(5)], [".modinfo", info]], { is64, little });
      assert.deepEqual(parseModinfo(elf), [
        ["license", "GPL"],
        ["depends", "virtio_ring,virtio"],
        ["name", "virtio_pci"],
        ["alias", "a"],
      ], `is64=${is64} little=${little}`);
    }
  }
});

test("parseModinfo() rejects what is not a kernel module", () => {
  assert.throws(() => parseModinfo(new TextEncoder().encode("#!/bin/sh\n")), {
    name: "SyntaxError",
    message: "Not an ELF file: bad magic",
  });
  const noInfo = fakeElf([[".text", new Uint8Array(4)]], { is64: true, little: true });
  assert.throws(() => parseModinfo(noInfo), {
    name: "SyntaxError",
    message: "Not a kernel module: no .modinfo section",
  });
  const good = fakeElf([[".modinfo", modinfo("depends=")]], { is64: false, little: true });
  assert.throws(() => parseModinfo(good.subarray(0, good.length - 8)), {
    name: "SyntaxError",
    message: /^Truncated ELF file: /,
  });
});

test("modinfoDepends() splits depends= and spells names as the kernel does", () => {
  assert.deepEqual(modinfoDepends([["depends", ""]]), []);
  assert.deepEqual(modinfoDepends([["name", "x"], ["depends", "8390,ne2k-pci"]]), [
    "8390",
    "ne2k_pci",
  ]);
  assert.equal(moduleName("kernel/drivers/net/ethernet/8390/ne2k-pci.ko.xz"), "ne2k_pci");
});

/** The virtio stack as Debian's 6.1.0-57 kernels describe it (virtio needs virtio_ring). */
const VIRTIO_6_1_0_57: ReadonlyMap<string, readonly string[]> = new Map([
  ["virtio_ring", []],
  ["virtio", ["virtio_ring"]],
  ["virtio_pci_legacy_dev", []],
  ["virtio_pci_modern_dev", []],
  ["virtio_pci", ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"]],
  ["failover", []],
  ["net_failover", ["failover"]],
  ["virtio_net", ["virtio_ring", "virtio", "net_failover"]],
  ["virtio_blk", ["virtio", "virtio_ring"]],
]);

/** Every module comes after each module it depends on, and the closure is complete. */
function assertLoadable(order: readonly string[], depends: ReadonlyMap<string, readonly string[]>) {
  assert.equal(new Set(order).size, order.length, `duplicates in ${order}`);
  for (const [i, m] of order.entries()) {
    for (const d of depends.get(m) ?? assert.fail(`no metadata for ${m}`)) {
      const j = order.indexOf(d);
      assert.ok(j >= 0 && j < i, `${m} depends on ${d}, which is not loaded before it: ${order}`);
    }
  }
}

test("moduleLoadOrder() puts every module after its depends (virtio_ring before virtio)", () => {
  const order = moduleLoadOrder(["virtio_pci", "virtio_net"], VIRTIO_6_1_0_57);
  assertLoadable(order, VIRTIO_6_1_0_57);
  assert.deepEqual(order, [
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
  ]);
  // Only the closure: virtio_blk is known but not needed.
  assert.ok(!order.includes("virtio_blk"));
});

test("moduleLoadOrder() leaves out built-in modules and spells names with underscores", () => {
  const deps = new Map([["ne2k_pci", ["8390"]], ["8390", []]]);
  assert.deepEqual(moduleLoadOrder(["ne2k-pci"], deps), ["8390", "ne2k_pci"]);
  assert.deepEqual(moduleLoadOrder(["ne2k_pci"], deps, new Set(["8390"])), ["ne2k_pci"]);
});

test("moduleLoadOrder() names a missing module and who needs it, and refuses a cycle", () => {
  assert.throws(() => moduleLoadOrder(["a"], new Map([["a", ["b"]]])), {
    message: "Kernel module not found: b (needed by a)",
  });
  assert.throws(() => moduleLoadOrder(["a"], new Map([["a", ["b"]], ["b", ["a"]]])), {
    message: "Kernel module dependency cycle: a -> b -> a",
  });
});
