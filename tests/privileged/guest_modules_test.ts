// The test guests' /init loads kernel modules in an order the kernel accepts, checked against
// the real packages: Debian's current 686 kernel (the v86 guest, fetched by build-guest.ts) and
// the host's installed kernel (the QEMU guest). The oracle is kmod's `modinfo`, not our reader.
// Root: build-guest.ts fetches the 686 package with apt-get into private directories.

import assert from "node:assert/strict";
import { rootTest } from "../_support/ns.ts";
import { buildGuest } from "../_support/guest.ts";
import { buildV86Guest, V86_GUEST_DIR } from "../../examples/v86/build-guest.ts";

/** The files of a newc cpio archive, by name. */
function readCpio(archive: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const dec = new TextDecoder();
  let off = 0;
  const align = (n: number) => (n + 3) & ~3;
  while (off + 110 <= archive.length) {
    const h = dec.decode(archive.subarray(off, off + 110));
    assert.equal(h.slice(0, 6), "070701", `cpio header at ${off}`);
    const field = (i: number) => parseInt(h.slice(6 + 8 * i, 14 + 8 * i), 16);
    const size = field(6);
    const nameSize = field(11);
    const name = dec.decode(archive.subarray(off + 110, off + 110 + nameSize - 1));
    const data = align(off + 110 + nameSize);
    if (name === "TRAILER!!!") break;
    out.set(name, archive.subarray(data, data + size));
    off = align(data + size);
  }
  return out;
}

async function gunzip(data: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(s).arrayBuffer());
}

async function modinfoDepends(args: string[]): Promise<string[]> {
  const r = await new Deno.Command("modinfo", { args: ["-F", "depends", ...args] }).output();
  assert.ok(r.success, `modinfo ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  return new TextDecoder().decode(r.stdout).trim().split(",").filter((d) => d !== "");
}

/** Each module in `order` comes after everything `depends(module)` names. */
async function assertLoadOrder(
  what: string,
  order: readonly string[],
  depends: (m: string) => Promise<string[]>,
): Promise<void> {
  assert.ok(order.length > 0, `${what}: no modules`);
  for (const [i, m] of order.entries()) {
    for (const d of await depends(m)) {
      const j = order.indexOf(d.replaceAll("-", "_"));
      assert.ok(j >= 0 && j < i, `${what}: ${m} needs ${d} loaded first, /init loads: ${order}`);
    }
  }
}

/** `name` → path of every `.ko` in an unpacked module tree. */
async function moduleFiles(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else if (e.name.endsWith(".ko")) {
        out.set(e.name.slice(0, -3).replaceAll("-", "_"), `${d}/${e.name}`);
      }
    }
  };
  await walk(root);
  return out;
}

rootTest(
  "the v86 guest's /init loads each module after its depends (Debian's 686 kernel)",
  async () => {
    const guest = await buildV86Guest();
    const init = new TextDecoder().decode(readCpio(await Deno.readFile(guest.initrd)).get("init"));
    const lists = [...init.matchAll(/^\s*(\S+)\) MODULES="([^"]*)"/gm)].map((m) => [m[1]!, m[2]!]);
    assert.deepEqual(lists.map(([nic]) => nic), ["ne2k", "*"], init);

    // The oracle: kmod's modinfo on the modules of the kernel package the guest was built from.
    const debs = `${V86_GUEST_DIR}/debs`;
    const deb = [...Deno.readDirSync(debs)].find((e) => /^linux-image-.*_i386\.deb$/.test(e.name));
    assert.ok(deb, `no kernel package in ${debs}`);
    const tmp = await Deno.makeTempDir({ prefix: "vmb-kmod-" });
    try {
      const x = await new Deno.Command("dpkg-deb", { args: ["-x", `${debs}/${deb.name}`, tmp] })
        .output();
      assert.ok(x.success, new TextDecoder().decode(x.stderr));
      const files = await moduleFiles(`${tmp}/lib/modules/${guest.release}`);
      for (const [nic, list] of lists) {
        const order = list!.split(" ").filter((m) => m !== "");
        assert.ok(order.length >= 2, `${nic}: ${order}`);
        await assertLoadOrder(`v86 ${nic}`, order, (m) => {
          const path = files.get(m);
          assert.ok(path, `${m} is not in ${deb.name}`);
          return modinfoDepends([path]);
        });
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

rootTest(
  "the QEMU guest's /init loads each module after its depends (the host's kernel)",
  async () => {
    const guest = await buildGuest();
    const files = readCpio(await gunzip(await Deno.readFile(guest.initrd)));
    const init = new TextDecoder().decode(files.get("init"));
    const list = /^for m in ([^;]*); do$/m.exec(init)?.[1];
    assert.ok(list !== undefined, init);
    const order = list.split(" ");
    assert.ok(order.includes("virtio_net") && order.includes("virtio_pci"), list);
    const release = guest.kernel.split("/").at(-2)!.replace(/-[0-9a-f]{16}$/, "");
    await assertLoadOrder("QEMU guest", order, (m) => modinfoDepends(["-k", release, m]));
  },
);
