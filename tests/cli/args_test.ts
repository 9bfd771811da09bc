// Tests for cli/args.ts: QEMU's `[--use-vnet] --br=BRIDGE --fd=N` grammar, parsed strictly,
// and the `--check` mode.

import assert from "node:assert/strict";
import { type HelperArgs, parseHelperArgs, USAGE, UsageError } from "../../cli/args.ts";

const LONG20 = "a".repeat(20);

Deno.test({
  name: "USAGE is the C helper's usage line",
  permissions: "none",
  fn() {
    assert.equal(USAGE, "Usage: qemu-bridge-helper [--use-vnet] --br=bridge --fd=unixfd");
  },
});

Deno.test({
  name: "UsageError is a SyntaxError named UsageError whose message is USAGE",
  permissions: "none",
  fn() {
    const error = new UsageError();
    assert.ok(error instanceof SyntaxError);
    assert.ok(error instanceof UsageError);
    assert.equal(error.name, "UsageError");
    assert.equal(error.message, USAGE);
  },
});

const ACCEPTED: ReadonlyArray<readonly [string, readonly string[], HelperArgs]> = [
  ["QEMU's usual order", ["--use-vnet", "--br=br0", "--fd=3"], {
    useVnet: true,
    bridge: "br0",
    fd: 3,
    check: false,
  }],
  ["no --use-vnet", ["--br=br0", "--fd=3"], {
    useVnet: false,
    bridge: "br0",
    fd: 3,
    check: false,
  }],
  ["--fd before --br", ["--fd=7", "--br=virbr0"], {
    useVnet: false,
    bridge: "virbr0",
    fd: 7,
    check: false,
  }],
  ["--use-vnet last", ["--fd=7", "--br=br0", "--use-vnet"], {
    useVnet: true,
    bridge: "br0",
    fd: 7,
    check: false,
  }],
  ["--use-vnet in the middle", ["--br=br0", "--use-vnet", "--fd=7"], {
    useVnet: true,
    bridge: "br0",
    fd: 7,
    check: false,
  }],
  [
    "--use-vnet repeated (idempotent, as in C)",
    ["--use-vnet", "--br=br0", "--use-vnet", "--fd=3"],
    {
      useVnet: true,
      bridge: "br0",
      fd: 3,
      check: false,
    },
  ],
  ["fd 0", ["--br=br0", "--fd=0"], { useVnet: false, bridge: "br0", fd: 0, check: false }],
  ["fd INT_MAX", ["--br=br0", "--fd=2147483647"], {
    useVnet: false,
    bridge: "br0",
    fd: 2147483647,
    check: false,
  }],
  ["leading zeros (still plain decimal)", ["--br=br0", "--fd=007"], {
    useVnet: false,
    bridge: "br0",
    fd: 7,
    check: false,
  }],
  ["a 15-byte bridge", ["--br=" + "b".repeat(15), "--fd=3"], {
    useVnet: false,
    bridge: "b".repeat(15),
    fd: 3,
    check: false,
  }],
  ["a 15-byte UTF-8 bridge", ["--br=" + "é".repeat(7) + "x", "--fd=3"], {
    useVnet: false,
    bridge: "é".repeat(7) + "x",
    fd: 3,
    check: false,
  }],
  ["a bridge named all", ["--br=all", "--fd=3"], {
    useVnet: false,
    bridge: "all",
    fd: 3,
    check: false,
  }],
  ["a bridge name containing =", ["--br=a=b", "--fd=3"], {
    useVnet: false,
    bridge: "a=b",
    fd: 3,
    check: false,
  }],
  ["--check alone", ["--check"], { useVnet: false, bridge: "", fd: -1, check: true }],
  ["--check with --br", ["--check", "--br=br0"], {
    useVnet: false,
    bridge: "br0",
    fd: -1,
    check: true,
  }],
  ["--check after --br, with --use-vnet", ["--br=br0", "--use-vnet", "--check"], {
    useVnet: true,
    bridge: "br0",
    fd: -1,
    check: true,
  }],
  ["--check repeated", ["--check", "--check"], {
    useVnet: false,
    bridge: "",
    fd: -1,
    check: true,
  }],
];

for (const [what, argv, expected] of ACCEPTED) {
  Deno.test({
    name: `parseHelperArgs() accepts ${what}`,
    permissions: "none",
    fn() {
      assert.deepEqual(parseHelperArgs(argv), expected);
    },
  });
}

const USAGE_ERRORS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["no arguments", []],
  ["--help", ["--help"]],
  ["-h", ["-h"]],
  ["--help among valid arguments", ["--br=br0", "--fd=3", "--help"]],
  ["--br without =", ["--br", "br0", "--fd=3"]],
  ["--fd without =", ["--br=br0", "--fd", "3"]],
  ["--use-vnet=1", ["--use-vnet=1", "--br=br0", "--fd=3"]],
  ["--use-vnet=", ["--use-vnet=", "--br=br0", "--fd=3"]],
  ["--usevnet", ["--usevnet", "--br=br0", "--fd=3"]],
  ["a positional word", ["--br=br0", "--fd=3", "br0"]],
  ["an empty argument", ["--br=br0", "--fd=3", ""]],
  ["--", ["--", "--br=br0", "--fd=3"]],
  ["an upper-case option", ["--BR=br0", "--fd=3"]],
  ["a single-dash option", ["-br=br0", "--fd=3"]],
  ["an option with a leading space", [" --br=br0", "--fd=3"]],
  ["--bridge=", ["--bridge=br0", "--fd=3"]],
  ["--check=1", ["--check=1"]],
  ["missing --fd", ["--br=br0"]],
  ["missing --br", ["--fd=3"]],
  ["only --use-vnet", ["--use-vnet"]],
  ["a repeated --br=", ["--br=br0", "--br=br1", "--fd=3"]],
  ["a repeated --br= with the same value", ["--br=br0", "--br=br0", "--fd=3"]],
  ["a repeated --fd=", ["--br=br0", "--fd=3", "--fd=4"]],
  ["a repeated --fd= with the same value", ["--fd=3", "--br=br0", "--fd=3"]],
  ["--fd=3junk (atoi would give 3)", ["--br=br0", "--fd=3junk"]],
  ["--fd=-1", ["--br=br0", "--fd=-1"]],
  ["--fd=-2 (C accepts it)", ["--br=br0", "--fd=-2"]],
  ["--fd=+3", ["--br=br0", "--fd=+3"]],
  ["--fd= 3", ["--br=br0", "--fd= 3"]],
  ["--fd=3 (trailing space)", ["--br=br0", "--fd=3 "]],
  ["--fd=\\t3", ["--br=br0", "--fd=\t3"]],
  ["--fd=3\\n", ["--br=br0", "--fd=3\n"]],
  ["--fd= (atoi would give stdin)", ["--br=br0", "--fd="]],
  ["--fd=abc", ["--br=br0", "--fd=abc"]],
  ["--fd=0x3", ["--br=br0", "--fd=0x3"]],
  ["--fd=3.0", ["--br=br0", "--fd=3.0"]],
  ["--fd=1e3", ["--br=br0", "--fd=1e3"]],
  ["--fd=3_0", ["--br=br0", "--fd=3_0"]],
  ["--fd with non-ASCII digits", ["--br=br0", "--fd=\u0663"]],
  ["--fd with full-width digits", ["--br=br0", "--fd=\uff13"]],
  ["--fd=2147483648 (INT_MAX + 1)", ["--br=br0", "--fd=2147483648"]],
  ["--fd=4294967299 (would wrap to 3 in 32 bits)", ["--br=br0", "--fd=4294967299"]],
  ["--fd with 400 digits", ["--br=br0", "--fd=" + "9".repeat(400)]],
  ["--check with --fd", ["--check", "--fd=3"]],
  ["--check with --fd and --br", ["--check", "--br=br0", "--fd=3"]],
  ["--check with a repeated --br=", ["--check", "--br=br0", "--br=br1"]],
  ["--check with an unknown argument", ["--check", "--verbose"]],
  // The order of checks mirrors C: usage errors beat the name check.
  ["a 20-byte bridge without --fd (usage beats the length)", ["--br=" + LONG20]],
  ["a 20-byte bridge and an unknown argument", ["--br=" + LONG20, "--fd=3", "--x"]],
  ["an empty bridge with a bad --fd", ["--br=", "--fd=x"]],
  ["an invalid bridge with a repeated --br=", ["--br=a/b", "--br=c", "--fd=3"]],
];

for (const [what, argv] of USAGE_ERRORS) {
  Deno.test({
    name: `parseHelperArgs() rejects ${what} with the usage line`,
    permissions: "none",
    fn() {
      assert.throws(() => parseHelperArgs(argv), { name: "UsageError", message: USAGE });
      assert.throws(() => parseHelperArgs(argv), UsageError);
    },
  });
}

const NAME_ERRORS: ReadonlyArray<readonly [string, readonly string[], string]> = [
  ["a 20-byte bridge", ["--br=" + LONG20, "--fd=3"], `name \`${LONG20}' too long: 20`],
  ["a 16-byte bridge", ["--fd=3", "--br=0123456789abcdef"], "name `0123456789abcdef' too long: 16"],
  [
    "8 × é (16 bytes)",
    ["--br=" + "é".repeat(8), "--fd=3"],
    `name \`${"é".repeat(8)}' too long: 16`,
  ],
  [
    "an empty --br= (C fails later at the kernel)",
    ["--br=", "--fd=3"],
    "invalid interface name `': empty",
  ],
  ["a bridge with a slash", ["--br=br/0", "--fd=3"], "invalid interface name `br/0': contains `/'"],
  [
    "a bridge with a colon",
    ["--br=br0:1", "--fd=3"],
    "invalid interface name `br0:1': contains `:'",
  ],
  [
    "a bridge with a space",
    ["--br=br 0", "--fd=3"],
    "invalid interface name `br 0': contains the whitespace byte 0x20",
  ],
  [
    "a bridge with a tab, escaped",
    ["--br=br\t0", "--fd=3"],
    "invalid interface name `br\\t0': contains the whitespace byte 0x09",
  ],
  [
    "the bridge ..",
    ["--br=..", "--fd=3"],
    "invalid interface name `..': `.' and `..' are reserved",
  ],
  [
    "a too-long bridge in --check mode",
    ["--check", "--br=" + LONG20],
    `name \`${LONG20}' too long: 20`,
  ],
  ["an empty --br= in --check mode", ["--check", "--br="], "invalid interface name `': empty"],
];

for (const [what, argv, message] of NAME_ERRORS) {
  Deno.test({
    name: `parseHelperArgs() rejects ${what} with a RangeError`,
    permissions: "none",
    fn() {
      assert.throws(() => parseHelperArgs(argv), { name: "RangeError", message });
      assert.throws(() => parseHelperArgs(argv), RangeError);
    },
  });
}

Deno.test({
  name: "parseHelperArgs() does not modify its argument",
  permissions: "none",
  fn() {
    const argv = Object.freeze(["--use-vnet", "--br=br0", "--fd=3"]);
    parseHelperArgs(argv);
    assert.deepEqual(argv, ["--use-vnet", "--br=br0", "--fd=3"]);
  },
});
