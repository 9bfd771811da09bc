// Tests for acl/parse.ts: every point of the bridge.conf line grammar (behaviour doc §4.2, §10),
// with the places where we fail closed instead of copying C.

import assert from "node:assert/strict";
import { type AclEntry, AclSyntaxError, MAX_LINE_BYTES, parseAcl } from "../../acl/parse.ts";

const FILE = "/etc/qemu/bridge.conf";

Deno.test({
  name: "MAX_LINE_BYTES is 64 KiB",
  permissions: "none",
  fn() {
    assert.equal(MAX_LINE_BYTES, 65536);
  },
});

Deno.test({
  name: "AclSyntaxError is a SyntaxError carrying file, line and detail",
  permissions: "none",
  fn() {
    const error = new AclSyntaxError("a.conf", 7, "Unknown command `x'");
    assert.ok(error instanceof SyntaxError);
    assert.equal(error.name, "AclSyntaxError");
    assert.equal(error.message, "a.conf:7: Unknown command `x'");
    assert.equal(error.file, "a.conf");
    assert.equal(error.line, 7);
    assert.equal(error.detail, "Unknown command `x'");
  },
});

Deno.test({
  name: "AclSyntaxError escapes control characters of the file name in its message only",
  permissions: "none",
  fn() {
    const error = new AclSyntaxError("a\nb.conf", 1, "x");
    assert.equal(error.message, "a\\nb.conf:1: x");
    assert.equal(error.file, "a\nb.conf");
  },
});

const allow = (name: string): AclEntry => ({ kind: "allow", name });
const deny = (name: string): AclEntry => ({ kind: "deny", name });
const include = (path: string, line: number): AclEntry => ({ kind: "include", path, line });

const PARSED: ReadonlyArray<readonly [string, string, readonly AclEntry[]]> = [
  ["an empty file", "", []],
  ["a file of blank lines", "\n\n\n", []],
  ["a file of whitespace-only lines", " \n\t\n\f\n\r\n \t\f\r \n", []],
  ["comments", "# allow br0\n#deny all\n#\n", []],
  ["a comment after leading spaces", "   # allow br0\n", []],
  ["a comment after a leading tab", "\t# allow br0\n", []],
  ["a comment after a leading form feed and CR", "\f\r# allow br0\n", []],
  ["allow NAME", "allow br0\n", [allow("br0")]],
  ["allow NAME without a final newline", "allow br0", [allow("br0")]],
  ["deny NAME", "deny br0\n", [deny("br0")]],
  ["allow all", "allow all\n", [{ kind: "allow-all" }]],
  ["deny all", "deny all\n", [{ kind: "deny-all" }]],
  ["allow all with trailing whitespace", "allow all \t\r\n", [{ kind: "allow-all" }]],
  ["allow all after a tab and spaces", "allow \t all\n", [{ kind: "allow-all" }]],
  ["ALL as a bridge name", "allow ALL\n", [allow("ALL")]],
  ["All as a bridge name for deny", "deny All\n", [deny("All")]],
  ["allx as a bridge name", "allow allx\n", [allow("allx")]],
  ["a tab separator", "allow\tbr0\n", [allow("br0")]],
  ["two tabs as the separator", "allow\t\tbr0\n", [allow("br0")]],
  ["a space then a tab then a space", "allow \t br0\n", [allow("br0")]],
  ["several spaces", "allow    br0\n", [allow("br0")]],
  ["leading spaces", "   allow br0\n", [allow("br0")]],
  ["a leading tab", "\tallow br0\n", [allow("br0")]],
  ["a leading form feed (whitespace)", "\fallow br0\n", [allow("br0")]],
  ["a trailing form feed (whitespace)", "allow br0\f\n", [allow("br0")]],
  ["a leading carriage return (whitespace)", "\rallow br0\n", [allow("br0")]],
  ["a CRLF file", "allow br0\r\ndeny br1\r\n# c\r\n\r\n", [allow("br0"), deny("br1")]],
  ["a # inside a name", "allow br#0\n", [allow("br#0")]],
  ["a control character the kernel allows in a name", "allow br\x1b0\n", [allow("br\x1b0")]],
  ["a 15-byte name", `allow ${"a".repeat(15)}\n`, [allow("a".repeat(15))]],
  ["a 15-byte UTF-8 name", `allow ${"é".repeat(7)}x\n`, [allow(`${"é".repeat(7)}x`)]],
  ["a name like an object key", "allow __proto__\ndeny constructor\n", [
    allow("__proto__"),
    deny("constructor"),
  ]],
  ["rules in file order", "deny br1\nallow all\nallow br0\ndeny all\n", [
    deny("br1"),
    { kind: "allow-all" },
    allow("br0"),
    { kind: "deny-all" },
  ]],
  ["an include", "include /etc/qemu/lab.conf\n", [include("/etc/qemu/lab.conf", 1)]],
  ["an include with its line number", "# head\n\nallow br0\ninclude x.conf\n", [
    allow("br0"),
    include("x.conf", 4),
  ]],
  ["an include path with spaces inside", "include /etc/my dir/a b.conf \n", [
    include("/etc/my dir/a b.conf", 1),
  ]],
  ["an include path longer than 16 bytes", "include /etc/qemu/a-rather-long-name.conf\n", [
    include("/etc/qemu/a-rather-long-name.conf", 1),
  ]],
  ["an include with a tab separator and CRLF", "include\tlab.conf\r\n", [include("lab.conf", 1)]],
  [
    "a long comment followed by a rule, as ONE comment line (C would split it and allow br0)",
    "#" + "a".repeat(4094) + " allow br0\n",
    [],
  ],
  [
    "a rule padded past 4095 bytes, as ONE line (C would split it and fail)",
    "allow" + " ".repeat(4088) + "br0\n",
    [allow("br0")],
  ],
  ["a line of exactly MAX_LINE_BYTES", "#" + "a".repeat(MAX_LINE_BYTES - 1) + "\n", []],
  [
    "a line of exactly MAX_LINE_BYTES in multi-byte characters",
    "#" + "é".repeat((MAX_LINE_BYTES - 2) / 2) + "a\n",
    [],
  ],
];

for (const [what, text, expected] of PARSED) {
  Deno.test({
    name: `parseAcl() accepts ${what}`,
    permissions: "none",
    fn() {
      const entries = parseAcl(text, FILE);
      assert.ok(Array.isArray(entries));
      assert.deepEqual(entries, expected);
    },
  });
}

const LONG_COMMENT = "a #long comment here";

const REJECTED: ReadonlyArray<readonly [string, string, number, string]> = [
  // No separator at all: C's "Invalid config line".
  ["a command without an argument", "allow\n", 1, 'Invalid config line: "allow"'],
  ["include without a path or separator", "include\n", 1, 'Invalid config line: "include"'],
  ["a command after leading spaces", "  allow\n", 1, 'Invalid config line: "  allow"'],
  ["a command and CR (CR is no separator)", "allow\r\n", 1, 'Invalid config line: "allow\\r"'],
  ["a line of only \\v (not whitespace)", "\v\n", 1, 'Invalid config line: "\\v"'],
  ["a NBSP as the separator", "allow\u00a0br0\n", 1, 'Invalid config line: "allow\u00a0br0"'],
  // The separator is the first SP anywhere, else the first tab.
  [
    "a trailing space after a tab-separated rule",
    "allow\tbr0 \n",
    1,
    "Unknown command `allow\\tbr0'",
  ],
  [
    "a tab-separated rule with a space later in the line",
    "allow\tbr0\t# lab\n",
    1,
    "Unknown command `allow\\tbr0\\t#'",
  ],
  ["a leading \\v (not whitespace)", "\vallow br0\n", 1, "Unknown command `\\vallow'"],
  [
    "a leading NBSP (not ASCII whitespace)",
    "\u00a0allow br0\n",
    1,
    "Unknown command `\u00a0allow'",
  ],
  // Case-sensitive commands.
  ["Allow", "Allow br0\n", 1, "Unknown command `Allow'"],
  ["ALLOW", "ALLOW br0\n", 1, "Unknown command `ALLOW'"],
  ["DENY", "DENY all\n", 1, "Unknown command `DENY'"],
  ["Include", "Include x.conf\n", 1, "Unknown command `Include'"],
  ["an unknown command", "permit br0\n", 1, "Unknown command `permit'"],
  ["an unknown command with an empty argument", "bogus \n", 1, "Unknown command `bogus'"],
  // The length check comes first, for every command but include.
  ["a 16-byte name", "allow 0123456789abcdef\n", 1, "name `0123456789abcdef' too long: 16"],
  [
    "a 19-byte name for deny",
    `deny ${"d".repeat(19)}\n`,
    1,
    `name \`${"d".repeat(19)}' too long: 19`,
  ],
  ["8 × é (16 bytes)", `allow ${"é".repeat(8)}\n`, 1, `name \`${"é".repeat(8)}' too long: 16`],
  [
    "an unknown command with a 16-byte argument, as too long",
    "foo 0123456789abcdef\n",
    1,
    "name `0123456789abcdef' too long: 16",
  ],
  [
    "a long inline comment, as too long (length first)",
    `allow ${LONG_COMMENT}\n`,
    1,
    `name \`${LONG_COMMENT}' too long: 20`,
  ],
  [
    "a too-long name with a control character, escaped",
    `allow ${"\x1b".repeat(16)}\n`,
    1,
    `name \`${"\\x1b".repeat(16)}' too long: 16`,
  ],
  // Names must be valid interface names (fail closed).
  [
    "an inline comment after a name",
    "allow br0 # lab\n",
    1,
    "invalid bridge name `br0 # lab' (comments must be on their own line)",
  ],
  [
    "a bare # after a name",
    "deny br0 #\n",
    1,
    "invalid bridge name `br0 #' (comments must be on their own line)",
  ],
  [
    "a tab then # after a space-separated name",
    "allow br0\t# lab\n",
    1,
    "invalid bridge name `br0\\t# lab' (comments must be on their own line)",
  ],
  [
    "a tab-separated inline comment",
    "allow\tbr0\t#lab\n",
    1,
    "invalid bridge name `br0\\t#lab' (comments must be on their own line)",
  ],
  [
    "two words as a name",
    "allow br0 br1\n",
    1,
    "invalid interface name `br0 br1': contains the whitespace byte 0x20",
  ],
  [
    "a \\v inside the name",
    "allow \vbr0\n",
    1,
    "invalid interface name `\\vbr0': contains the whitespace byte 0x0b",
  ],
  ["an empty name", "allow \n", 1, "invalid interface name `': empty"],
  ["an empty name after whitespace", "deny \t \r\n", 1, "invalid interface name `': empty"],
  ["a name with a slash", "allow br/0\n", 1, "invalid interface name `br/0': contains `/'"],
  ["a name with a colon", "allow br0:1\n", 1, "invalid interface name `br0:1': contains `:'"],
  ["the name .", "deny .\n", 1, "invalid interface name `.': `.' and `..' are reserved"],
  // include needs a path.
  ["include with an empty path", "include \n", 1, "include needs a path"],
  ["include with a whitespace-only path", "include \t\r\n", 1, "include needs a path"],
  // NUL bytes and over-long lines.
  ["a NUL after a rule (C would cut the line)", "allow br0\0junk\n", 1, "NUL byte in line"],
  ["a NUL at the start (C would skip the line)", "\0allow br0\n", 1, "NUL byte in line"],
  ["a NUL in a comment", "# note\0\n", 1, "NUL byte in line"],
  [
    "a line one byte over MAX_LINE_BYTES",
    "#" + "a".repeat(MAX_LINE_BYTES) + "\n",
    1,
    `line too long: ${MAX_LINE_BYTES + 1} bytes (limit ${MAX_LINE_BYTES})`,
  ],
  [
    "a line over MAX_LINE_BYTES counted in bytes, not characters",
    "#" + "é".repeat(MAX_LINE_BYTES / 2) + "\n",
    1,
    `line too long: ${MAX_LINE_BYTES + 1} bytes (limit ${MAX_LINE_BYTES})`,
  ],
  [
    "a long comment hiding a rule past MAX_LINE_BYTES",
    "#" + "a".repeat(MAX_LINE_BYTES + 10) + " allow br0\n",
    1,
    `line too long: ${MAX_LINE_BYTES + 21} bytes (limit ${MAX_LINE_BYTES})`,
  ],
  // Line numbers count every physical line.
  [
    "a bad line after others",
    "allow br0\n\n# x\nbogus y\nallow br1\n",
    4,
    "Unknown command `bogus'",
  ],
  ["a bad line in a CRLF file", "allow br0\r\nbogus y\r\n", 2, "Unknown command `bogus'"],
  ["the first of two bad lines", "bogus x\nallow\n", 1, "Unknown command `bogus'"],
  ["a bad last line without a newline", "allow br0\ndeny", 2, 'Invalid config line: "deny"'],
];

for (const [what, text, line, detail] of REJECTED) {
  Deno.test({
    name: `parseAcl() rejects ${what}`,
    permissions: "none",
    fn() {
      assert.throws(() => parseAcl(text, FILE), {
        name: "AclSyntaxError",
        message: `${FILE}:${line}: ${detail}`,
        file: FILE,
        line,
        detail,
      });
      assert.throws(() => parseAcl(text, FILE), AclSyntaxError);
    },
  });
}

Deno.test({
  name: "parseAcl() rejects the whole file at the first bad line, keeping no rules",
  permissions: "none",
  fn() {
    assert.throws(() => parseAcl("allow br0\nallow br0 # lab\nallow br1\n", FILE), {
      name: "AclSyntaxError",
      line: 2,
    });
  },
});

Deno.test({
  name: "parseAcl() keeps every error message on one line",
  permissions: "none",
  fn() {
    const texts = [
      "allow\r\n",
      "\v\x1b\x85\u2028\n",
      "allow\tbr0\x1b \n",
      `allow ${"\x07".repeat(16)}\n`,
      "allow a\x1b b\n",
      "bogus\x1b\x85 x\n",
    ];
    for (const text of texts) {
      assert.throws(() => parseAcl(text, "x\ny.conf"), (error: unknown) => {
        assert.ok(error instanceof AclSyntaxError);
        // deno-lint-ignore no-control-regex -- looking for control characters is the point
        assert.doesNotMatch(error.message, /[\x00-\x1f\x7f-\x9f\u2028\u2029]/);
        return true;
      });
    }
  },
});

Deno.test({
  name: "parseAcl() uses the file name it is given in errors",
  permissions: "none",
  fn() {
    assert.throws(() => parseAcl("nope x\n", "/etc/qemu/lab.conf"), {
      name: "AclSyntaxError",
      message: "/etc/qemu/lab.conf:1: Unknown command `nope'",
      file: "/etc/qemu/lab.conf",
    });
  },
});
