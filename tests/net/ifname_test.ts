// Tests for net/ifname.ts: the kernel's interface name rules on UTF-8 bytes, and the escaping
// that keeps echoed names on one line.

import assert from "node:assert/strict";
import { escapeForMessage, ifnameError, IFNAMSIZ, isValidIfname } from "../../net/ifname.ts";

Deno.test({
  name: "IFNAMSIZ is the kernel's 16-byte buffer size",
  permissions: "none",
  fn() {
    assert.equal(IFNAMSIZ, 16);
  },
});

const VALID: ReadonlyArray<readonly [string, string]> = [
  ["one byte", "b"],
  ["a typical bridge", "br0"],
  ["libvirt's default", "virbr0"],
  ["15 ASCII bytes", "a".repeat(15)],
  ["7 two-byte characters (14 bytes)", "é".repeat(7)],
  ["7 two-byte characters and one ASCII byte (15 bytes)", "é".repeat(7) + "a"],
  ["5 three-byte characters (15 bytes)", "€".repeat(5)],
  ["dots that are not . or ..", "..."],
  ["a leading dot", ".br"],
  ["punctuation the kernel allows", "br-0_x.y@+#%"],
  ["a backslash", "br\\0"],
  ["DEL, which the kernel's isspace() does not match", "br\x7f"],
  ["U+00A1, whose second byte is 0xA1 not 0xA0", "\u00a1"],
  ["U+00A0 encoded is C2 A0, but a name that merely looks alike is fine", "brA0"],
  ["the word all", "all"],
  ["a surrogate pair (4 bytes)", "br\u{1f600}"],
];

for (const [what, name] of VALID) {
  Deno.test({
    name: `ifnameError() accepts ${what}`,
    permissions: "none",
    fn() {
      assert.equal(ifnameError(name), undefined);
      assert.equal(isValidIfname(name), true);
    },
  });
}

const TOO_LONG: ReadonlyArray<readonly [string, string, string]> = [
  ["16 ASCII bytes", "0123456789abcdef", "name `0123456789abcdef' too long: 16"],
  ["20 ASCII bytes", "a".repeat(20), `name \`${"a".repeat(20)}' too long: 20`],
  ["8 × é (16 bytes, 8 characters)", "é".repeat(8), `name \`${"é".repeat(8)}' too long: 16`],
  [
    "15 ASCII bytes and one é (17 bytes)",
    "a".repeat(15) + "é",
    `name \`${"a".repeat(15)}é' too long: 17`,
  ],
  ["6 × € (18 bytes)", "€".repeat(6), `name \`${"€".repeat(6)}' too long: 18`],
  [
    "4 emoji (16 bytes, 8 UTF-16 units)",
    "\u{1f600}".repeat(4),
    `name \`${"\u{1f600}".repeat(4)}' too long: 16`,
  ],
  // The length check comes first, as in C, even when the name is also invalid otherwise.
  ["a long name with a slash", "a/".repeat(10), `name \`${"a/".repeat(10)}' too long: 20`],
  ["a long name with a tab, escaped", "\t".repeat(16), `name \`${"\\t".repeat(16)}' too long: 16`],
];

for (const [what, name, message] of TOO_LONG) {
  Deno.test({
    name: `ifnameError() rejects ${what} with C's "too long" wording`,
    permissions: "none",
    fn() {
      assert.equal(ifnameError(name), message);
      assert.equal(isValidIfname(name), false);
    },
  });
}

const INVALID: ReadonlyArray<readonly [string, string, string]> = [
  ["the empty name", "", "invalid interface name `': empty"],
  [".", ".", "invalid interface name `.': `.' and `..' are reserved"],
  ["..", "..", "invalid interface name `..': `.' and `..' are reserved"],
  ["a slash", "br/0", "invalid interface name `br/0': contains `/'"],
  ["a lone slash", "/", "invalid interface name `/': contains `/'"],
  ["a colon (alias syntax)", "br0:1", "invalid interface name `br0:1': contains `:'"],
  ["a NUL byte", "br\x000", "invalid interface name `br\\x000': contains a NUL byte"],
  ["a tab", "br\t0", "invalid interface name `br\\t0': contains the whitespace byte 0x09"],
  ["a newline", "br\n0", "invalid interface name `br\\n0': contains the whitespace byte 0x0a"],
  ["a vertical tab", "br\v0", "invalid interface name `br\\v0': contains the whitespace byte 0x0b"],
  ["a form feed", "br\f0", "invalid interface name `br\\f0': contains the whitespace byte 0x0c"],
  [
    "a carriage return",
    "br0\r",
    "invalid interface name `br0\\r': contains the whitespace byte 0x0d",
  ],
  ["a space", "br 0", "invalid interface name `br 0': contains the whitespace byte 0x20"],
  ["a leading space", " br0", "invalid interface name ` br0': contains the whitespace byte 0x20"],
  [
    "U+00A0 (C2 A0), as the kernel sees the byte 0xA0",
    "br\u00a00",
    "invalid interface name `br\u00a00': contains the whitespace byte 0xa0",
  ],
  [
    "U+0560 (D5 A0), whose second byte is 0xA0",
    "br\u0560",
    "invalid interface name `br\u0560': contains the whitespace byte 0xa0",
  ],
  [
    "U+00E0 à (C3 A0), whose second byte is 0xA0",
    "brà",
    "invalid interface name `brà': contains the whitespace byte 0xa0",
  ],
  [
    "an unpaired surrogate, which has no UTF-8 form",
    "br\ud800",
    "invalid interface name `br\ud800': contains an unpaired UTF-16 surrogate",
  ],
];

for (const [what, name, message] of INVALID) {
  Deno.test({
    name: `ifnameError() rejects ${what}`,
    permissions: "none",
    fn() {
      assert.equal(ifnameError(name), message);
      assert.equal(isValidIfname(name), false);
    },
  });
}

Deno.test({
  name: "ifnameError() rejects every byte the kernel's isspace() matches, and only those",
  permissions: "none",
  fn() {
    const spaces = [9, 10, 11, 12, 13, 32, 0xa0];
    for (let code = 1; code < 0x100; code++) {
      const name = `a${String.fromCharCode(code)}b`;
      // Check the encoded bytes: U+00E0 (à) is C3 A0, so the kernel rejects it too.
      const bytes = [...new TextEncoder().encode(name)];
      const expectInvalid = bytes.some((b) => spaces.includes(b)) || code === 0x2f || code === 0x3a;
      assert.equal(isValidIfname(name), !expectInvalid, `U+${code.toString(16)}`);
    }
  },
});

Deno.test({
  name: "ifnameError() keeps every reason on one line, whatever the name contains",
  permissions: "none",
  fn() {
    for (let code = 0; code < 0xa0; code++) {
      for (const name of [`x${String.fromCharCode(code)}/`, String.fromCharCode(code).repeat(16)]) {
        const reason = ifnameError(name);
        assert.ok(reason !== undefined);
        // deno-lint-ignore no-control-regex -- looking for control characters is the point
        assert.doesNotMatch(reason, /[\x00-\x1f\x7f-\x9f]/, `U+${code.toString(16)}`);
      }
    }
  },
});

const ESCAPES: ReadonlyArray<readonly [string, string]> = [
  ["br0", "br0"],
  ["\t\n\v\f\r", "\\t\\n\\v\\f\\r"],
  ["\x00\x01\x1b[31m", "\\x00\\x01\\x1b[31m"],
  ["\x7f", "\\x7f"],
  ["\u0085\u009f", "\\u0085\\u009f"],
  ["\u2028\u2029", "\\u2028\\u2029"],
  ['back\\slash `quoted\' "double"', 'back\\slash `quoted\' "double"'],
  ["brücke \u00a0 €", "brücke \u00a0 €"],
];

for (const [input, output] of ESCAPES) {
  Deno.test({
    name: `escapeForMessage() turns ${JSON.stringify(input)} into ${JSON.stringify(output)}`,
    permissions: "none",
    fn() {
      assert.equal(escapeForMessage(input), output);
    },
  });
}
