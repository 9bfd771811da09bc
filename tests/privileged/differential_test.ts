// Differential tests: QEMU's C qemu-bridge-helper and ours, run the same way in identical
// sandboxes (own network namespace, private /etc/qemu), must end the same way. Where we differ
// on purpose (the "deliberately safer" list of the issue), the row states C's outcome, ours, and
// why. Needs root.

import assert from "node:assert/strict";
import { tapInfo } from "../../net/tap.ts";
import {
  C_HELPER,
  HELPER_FROM_SOURCE,
  NetNs,
  rootTest,
  sandbox,
  type SandboxOptions,
} from "../_support/ns.ts";
import { sourceForOthers } from "../_support/readable_source.ts";
import { closeAll, describeStatus, type RawRun, runRaw, type SocketMode } from "./_spawn.ts";

/** How a run ended: `status` as "exit N" / "signal N", and the first line of stderr. */
interface Outcome {
  /** "timeout": still running after the row's timeout, then killed. */
  status: "exit 0" | "exit 1" | "signal 13" | "timeout";
  /** The first line of stderr ("" when nothing was printed). */
  stderr: string;
}

interface Row {
  name: string;
  /** Files of the private /etc/qemu; default `bridge.conf` = `allow br0`. */
  etc?: SandboxOptions["etcQemu"];
  /** The helper's arguments; default `--br=br0 --fd=3`. */
  args?: readonly string[];
  /** fd 3; default a connected socketpair, as QEMU passes. */
  socket?: SocketMode;
  /** argv between the sandbox and the helper (setpriv, env). */
  prefix?: readonly string[];
  /** Shell run in the sandbox before the helper (ulimit). */
  setup?: string;
  /** A 0666 /dev/net/tun in the sandbox, for rows run as another user. */
  tun0666?: boolean;
  /** TUNGETIFF flags of the received tap, for rows that succeed. */
  flags?: number;
  /** Kill the C helper if it still runs after this long (default 60 s, as for ours). */
  cTimeoutMs?: number;
  /** What the C helper does. */
  c: Outcome;
  /** What ours does, when it differs from C on purpose. */
  ours?: Outcome & { why: string };
}

const OK: Outcome = { status: "exit 0", stderr: "" };
const DENIED: Outcome = { status: "exit 1", stderr: "access denied by acl file" };
const USAGE: Outcome = {
  status: "exit 1",
  stderr: "Usage: qemu-bridge-helper [--use-vnet] --br=bridge --fd=unixfd",
};
const CONF = "/etc/qemu/bridge.conf";
const C_PARSE_FAILED: Outcome = {
  status: "exit 1",
  stderr: `failed to parse default acl file \`${CONF}'`,
};
/** Our one-line form of an ACL error: C's last line, then the reason after a colon. */
const oursAclError = (detail: string, why: string): Outcome & { why: string } => ({
  status: "exit 1",
  stderr: `failed to parse default acl file \`${CONF}': ${detail}`,
  why,
});
/** C prints the detail line first, then `failed to parse default acl file`; we print one line. */
const ONE_LINE =
  "same failure; we print C's `failed to parse default acl file' line with file, line number " +
  "and C's detail (control characters escaped) after a colon, instead of two lines";

/** Runs as nobody but with CAP_NET_ADMIN, like a set-user-ID helper after its drop. */
const AS_NOBODY = [
  "setpriv",
  "--reuid=65534",
  "--regid=65534",
  "--clear-groups",
  "--inh-caps=+net_admin",
  "--ambient-caps=+net_admin",
];
const LONG19 = "0123456789abcdefghi";

const ROWS: readonly Row[] = [
  // --- The ACL: decisions we keep identical ---
  { name: "allow br0 allows br0", etc: { "bridge.conf": "allow br0\n" }, c: OK, flags: 0x1002 },
  {
    name: "--use-vnet gives IFF_VNET_HDR",
    args: ["--use-vnet", "--fd=3", "--br=br0"],
    c: OK,
    flags: 0x5002,
  },
  { name: "allow br1 does not allow br0", etc: { "bridge.conf": "allow br1\n" }, c: DENIED },
  { name: "an empty ACL denies", etc: { "bridge.conf": "" }, c: DENIED },
  {
    name: "allow then deny br0 denies",
    etc: { "bridge.conf": "allow br0\ndeny br0\n" },
    c: DENIED,
  },
  {
    name: "deny then allow br0 denies",
    etc: { "bridge.conf": "deny br0\nallow br0\n" },
    c: DENIED,
  },
  { name: "allow all allows br0", etc: { "bridge.conf": "allow all\n" }, c: OK },
  {
    name: "allow all + deny br0 denies br0",
    etc: { "bridge.conf": "allow all\ndeny br0\n" },
    c: DENIED,
  },
  {
    name: "allow all + deny br1 allows br0",
    etc: { "bridge.conf": "allow all\ndeny br1\n" },
    c: OK,
  },
  {
    name: "deny all + allow br0 denies",
    etc: { "bridge.conf": "deny all\nallow br0\n" },
    c: DENIED,
  },
  { name: "allow ALL is a name, not all", etc: { "bridge.conf": "allow ALL\n" }, c: DENIED },
  {
    name: "deny all in an include denies",
    etc: { "bridge.conf": `allow br0\ninclude /etc/qemu/deny.conf\n`, "deny.conf": "deny all\n" },
    c: DENIED,
  },
  {
    name: "allow in an absolute include allows",
    etc: { "bridge.conf": "include /etc/qemu/lab.conf\n", "lab.conf": "allow br0\n" },
    c: OK,
  },
  {
    name: "a missing include is skipped",
    etc: { "bridge.conf": "allow br0\ninclude /etc/qemu/missing.conf\n" },
    c: OK,
  },
  {
    name: "an include the caller cannot read is skipped (deny in it ignored)",
    etc: {
      "bridge.conf": "allow br0\ninclude /etc/qemu/secret.conf\n",
      "secret.conf": { text: "deny br0\n", mode: 0o600 },
    },
    prefix: AS_NOBODY,
    tun0666: true,
    c: OK,
  },
  {
    name: "an include the caller can read applies",
    etc: {
      "bridge.conf": "allow br0\ninclude /etc/qemu/public.conf\n",
      "public.conf": { text: "deny br0\n", mode: 0o644 },
    },
    prefix: AS_NOBODY,
    tun0666: true,
    c: DENIED,
  },
  {
    name: "comments and blank lines are skipped",
    etc: { "bridge.conf": "# allow all\n\n   # indented\n\t\nallow br0\n#deny br0\n" },
    c: OK,
  },
  { name: "a tab separates command and name", etc: { "bridge.conf": "allow\tbr0\n" }, c: OK },
  {
    name: "whitespace around the name is trimmed",
    etc: { "bridge.conf": "allow \t br0 \t\n" },
    c: OK,
  },
  { name: "CRLF line endings work", etc: { "bridge.conf": "allow br0\r\ndeny br1\r\n" }, c: OK },
  { name: "a last line without newline works", etc: { "bridge.conf": "allow br0" }, c: OK },

  // --- ACL errors: both fail; our message is one line ---
  {
    name: "an unknown command fails",
    etc: { "bridge.conf": "allow br1\npermit br0\n" },
    c: { status: "exit 1", stderr: "Unknown command `permit'" },
    ours: oursAclError(`${CONF}:2: Unknown command \`permit'`, ONE_LINE),
  },
  {
    name: "\\v is not whitespace",
    etc: { "bridge.conf": "\vallow br0\n" },
    c: { status: "exit 1", stderr: "Unknown command `\vallow'" },
    ours: oursAclError(`${CONF}:1: Unknown command \`\\vallow'`, ONE_LINE),
  },
  {
    name: "a trailing space after a tab-separated rule breaks it",
    etc: { "bridge.conf": "allow\tbr0 \n" },
    c: { status: "exit 1", stderr: "Unknown command `allow\tbr0'" },
    ours: oursAclError(`${CONF}:1: Unknown command \`allow\\tbr0'`, ONE_LINE),
  },
  {
    name: "a too-long name in the ACL fails",
    etc: { "bridge.conf": `allow ${LONG19}\n` },
    c: { status: "exit 1", stderr: `name \`${LONG19}' too long: 19` },
    ours: oursAclError(`${CONF}:1: name \`${LONG19}' too long: 19`, ONE_LINE),
  },
  {
    name: "the length check comes before the command check",
    etc: { "bridge.conf": "foo 0123456789abcdef\n" },
    c: { status: "exit 1", stderr: "name `0123456789abcdef' too long: 16" },
    ours: oursAclError(`${CONF}:1: name \`0123456789abcdef' too long: 16`, ONE_LINE),
  },
  {
    name: "a line without a separator fails",
    etc: { "bridge.conf": "allow\n" },
    c: { status: "exit 1", stderr: "Invalid config line:" },
    ours: oursAclError(
      `${CONF}:1: Invalid config line: "allow"`,
      "same failure; the raw line is quoted on the same line instead of on the next two",
    ),
  },
  {
    name: "no bridge.conf fails",
    etc: {},
    c: C_PARSE_FAILED,
    ours: oursAclError(
      `cannot open \`${CONF}': No such file or directory`,
      "same failure and C's text; we add why the file could not be read",
    ),
  },
  {
    name: "a bridge.conf the caller cannot read fails",
    etc: { "bridge.conf": { text: "allow br0\n", mode: 0o600 } },
    prefix: AS_NOBODY,
    tun0666: true,
    c: C_PARSE_FAILED,
    ours: oursAclError(
      `cannot open \`${CONF}': Permission denied`,
      "same failure and C's text; we add why the file could not be read",
    ),
  },

  // --- Kernel failures: identical ---
  {
    name: "a missing bridge fails at SIOCGIFMTU",
    etc: { "bridge.conf": "allow all\n" },
    args: ["--br=brX", "--fd=3"],
    c: { status: "exit 1", stderr: "failed to get mtu of bridge `brX': No such device" },
  },
  {
    name: "a veth as bridge fails at SIOCBRADDIF",
    etc: { "bridge.conf": "allow all\n" },
    args: ["--br=veth0", "--fd=3"],
    c: {
      status: "exit 1",
      stderr: "failed to add interface `tap0' to bridge `veth0': Operation not supported",
    },
  },
  {
    name: "lo as bridge fails at SIOCSIFMTU",
    etc: { "bridge.conf": "allow all\n" },
    args: ["--br=lo", "--fd=3"],
    c: {
      status: "exit 1",
      stderr: "failed to set mtu of device `tap0' to 65536: Invalid argument",
    },
  },
  {
    name: "a closed peer (SIGPIPE ignored, as under QEMU) gives EPIPE",
    socket: "closed-peer",
    c: { status: "exit 1", stderr: "failed to write fd to unix socket: Broken pipe" },
  },

  // --- The command line: identical ---
  {
    name: "a 16-byte --br is too long",
    args: ["--br=0123456789abcdef", "--fd=3"],
    c: { status: "exit 1", stderr: "name `0123456789abcdef' too long: 16" },
  },
  {
    name: "the --br length is counted in bytes",
    args: [`--br=${"é".repeat(8)}`, "--fd=3"],
    c: { status: "exit 1", stderr: `name \`${"é".repeat(8)}' too long: 16` },
  },
  { name: "an unknown argument is a usage error", args: ["--br=br0", "--fd=3", "--x"], c: USAGE },
  {
    name: "--use-vnet=1 is an unknown argument",
    args: ["--use-vnet=1", "--br=br0", "--fd=3"],
    c: USAGE,
  },
  { name: "--help is a usage error", args: ["--help"], c: USAGE },
  { name: "a missing --fd is a usage error", args: ["--br=br0"], c: USAGE },
  { name: "a missing --br is a usage error", args: ["--fd=3"], c: USAGE },
  { name: "--fd=-1 is a usage error", args: ["--br=br0", "--fd=-1"], c: USAGE },
  {
    name: "a missing --fd beats a too-long --br",
    args: [`--br=${"a".repeat(20)}`],
    c: USAGE,
  },
  {
    name: "an unknown argument beats a too-long --br",
    args: [`--br=${"a".repeat(20)}`, "--fd=3", "--x"],
    c: USAGE,
  },

  // --- Deliberately safer ---
  {
    name: "--fd=abc",
    args: ["--br=br0", "--fd=abc"],
    etc: { "bridge.conf": "allow all\n" },
    socket: "none",
    c: {
      status: "exit 1",
      stderr: "failed to write fd to unix socket: Socket operation on non-socket",
    },
    ours: {
      ...USAGE,
      why: "--fd is decimal digits only; C's atoi turns abc into fd 0 and fails only at sendmsg",
    },
  },
  {
    name: "--fd=99 (not open)",
    args: ["--br=br0", "--fd=99"],
    socket: "none",
    c: { status: "exit 1", stderr: "failed to write fd to unix socket: Bad file descriptor" },
    ours: {
      status: "exit 1",
      stderr: "invalid --fd=99: not an open Unix socket",
      why: "--fd must be an open Unix socket, checked before any tap exists",
    },
  },
  {
    name: "a duplicate --br",
    args: ["--br=brX", "--br=br0", "--fd=3"],
    etc: { "bridge.conf": "allow all\n" },
    c: OK,
    ours: { ...USAGE, why: "a duplicate --br is a usage error, not last-one-wins" },
  },
  {
    name: "a duplicate --fd",
    args: ["--br=br0", "--fd=7", "--fd=3"],
    c: OK,
    ours: { ...USAGE, why: "a duplicate --fd is a usage error, not last-one-wins" },
  },
  {
    name: "an empty --br=",
    args: ["--br=", "--fd=3"],
    etc: { "bridge.conf": "allow all\n" },
    c: { status: "exit 1", stderr: "failed to get mtu of bridge `': No such device" },
    ours: {
      status: "exit 1",
      stderr: "invalid interface name `': empty",
      why:
        "--br must be a valid interface name, checked before the ACL (C finds out at the kernel)",
    },
  },
  {
    name: "--br=a/b",
    args: ["--br=a/b", "--fd=3"],
    etc: { "bridge.conf": "allow all\n" },
    c: { status: "exit 1", stderr: "failed to get mtu of bridge `a/b': No such device" },
    ours: {
      status: "exit 1",
      stderr: "invalid interface name `a/b': contains `/'",
      why: "--br must be a valid interface name, checked before the ACL",
    },
  },
  {
    name: "an inline comment: allow br0 # lab",
    etc: { "bridge.conf": "allow br0 # lab\n" },
    c: DENIED,
    ours: oursAclError(
      `${CONF}:1: invalid bridge name \`br0 # lab' (comments must be on their own line)`,
      "ACL names must be valid interface names or `all'; C silently adds a rule for the " +
        "impossible name `br0 # lab' and so denies br0",
    ),
  },
  {
    name: "a relative include",
    etc: { "bridge.conf": "include vmb-relative.conf\n", "vmb-relative.conf": "allow br0\n" },
    c: DENIED,
    ours: {
      ...OK,
      why: "a relative include is resolved against the including file's directory; C uses the " +
        "caller's cwd, where the file is not",
    },
  },
  {
    name: "an include with an error fails open in C",
    etc: {
      "bridge.conf": "allow all\ninclude /etc/qemu/deny.conf\n",
      "deny.conf": `deny ${LONG19}\ndeny br0\n`,
    },
    c: { status: "exit 0", stderr: `name \`${LONG19}' too long: 19` },
    ours: oursAclError(
      `/etc/qemu/deny.conf:1: name \`${LONG19}' too long: 19`,
      "a syntax error inside a readable include rejects the whole ACL; C stops reading the " +
        "include, so `deny br0' is lost and br0 is allowed",
    ),
  },
  {
    name: "a syntax error in an include keeps its earlier rules in C",
    etc: { "bridge.conf": "include /etc/qemu/a.conf\n", "a.conf": "allow br0\nbogus x\n" },
    c: { status: "exit 0", stderr: "Unknown command `bogus'" },
    ours: oursAclError(
      "/etc/qemu/a.conf:2: Unknown command `bogus'",
      "a syntax error inside a readable include rejects the whole ACL",
    ),
  },
  {
    name: "a rule smuggled after a 4094-byte comment",
    etc: { "bridge.conf": "#" + "a".repeat(4094) + " allow br0\n" },
    c: OK,
    ours: { ...DENIED, why: "no 4095-byte chunking: the whole line is a comment" },
  },
  {
    name: "a rule split at C's 4095-byte boundary",
    etc: { "bridge.conf": "allow" + " ".repeat(4088) + "br0\n" },
    c: { status: "exit 1", stderr: "Invalid config line:" },
    ours: { ...OK, why: "no 4095-byte chunking: the line is one rule" },
  },
  {
    name: "an include of a directory",
    etc: { "bridge.conf": "allow br0\ninclude /etc/qemu\n" },
    c: OK,
    ours: oursAclError(
      "`/etc/qemu' is not a regular file (a directory)",
      "ACL files that are not regular files are refused; C reads a directory as empty",
    ),
  },
  {
    name: "a world-writable bridge.conf",
    etc: { "bridge.conf": { text: "allow br0\n", mode: 0o666 } },
    c: OK,
    ours: oursAclError(
      `\`${CONF}' is writable by others (mode 0666): refusing it`,
      "ACL files writable by non-root are refused",
    ),
  },
  {
    name: "a group-writable include",
    etc: {
      "bridge.conf": "allow br0\ninclude /etc/qemu/lab.conf\n",
      "lab.conf": { text: "allow br1\n", mode: 0o664, gid: 100 },
    },
    c: OK,
    ours: oursAclError(
      "`/etc/qemu/lab.conf' is writable by its group (mode 0664): refusing it",
      "ACL files writable by non-root are refused",
    ),
  },
  {
    name: "a bridge.conf owned by a user",
    etc: { "bridge.conf": { text: "allow br0\n", uid: 65534, gid: 65534 } },
    c: OK,
    ours: oursAclError(
      `\`${CONF}' is owned by uid 65534, not root: refusing it`,
      "ACL files not owned by root are refused",
    ),
  },
  {
    name: "a file that includes itself (RLIMIT_NOFILE 256)",
    etc: { "bridge.conf": `include ${CONF}\nallow br0\n` },
    setup: "ulimit -n 256",
    // C recurses until fopen fails with EMFILE, then every level adds `allow br0`.
    c: OK,
    ours: oursAclError(
      `include cycle: ${CONF} -> ${CONF}`,
      "include cycles are errors; C's outcome depends on RLIMIT_NOFILE and stack size",
    ),
  },
  {
    name: "includes nested 9 deep",
    etc: Object.fromEntries([
      ["bridge.conf", "include /etc/qemu/d1.conf\n"],
      ...Array.from(
        { length: 8 },
        (_, i) => [`d${i + 1}.conf`, `include /etc/qemu/d${i + 2}.conf\n`],
      ),
      ["d9.conf", "allow br0\n"],
    ]),
    c: OK,
    ours: oursAclError(
      "includes nested deeper than 8: `/etc/qemu/d9.conf'",
      "nesting deeper than MAX_INCLUDE_DEPTH (8) is an error; C has no limit",
    ),
  },
  {
    name: "a closed peer with SIGPIPE at its default",
    prefix: ["env", "--default-signal=PIPE"],
    socket: "closed-peer",
    c: { status: "signal 13", stderr: "" },
    ours: {
      status: "exit 1",
      stderr: "failed to write fd to unix socket: Broken pipe",
      why: "sendmsg uses MSG_NOSIGNAL: a closed peer is an error message, never a silent death",
    },
  },
  {
    name: "a NUL byte in an ACL line",
    etc: { "bridge.conf": "allow br0\0junk\n" },
    c: OK,
    ours: oursAclError(
      `${CONF}:1: NUL byte in line`,
      "text after a NUL is not what anyone meant to write; C ends the line there",
    ),
  },
  {
    name: "a bridge.conf that is not valid UTF-8",
    etc: {},
    // Raw bytes cannot go through a JS string: the shell writes them (0xE9 is Latin-1 "é").
    setup: "printf 'allow br0\\n# caf\\351\\n' > /etc/qemu/bridge.conf",
    c: OK,
    ours: oursAclError(
      `\`${CONF}' is not valid UTF-8`,
      "a file that is not UTF-8 is refused: a name we cannot represent exactly must not turn " +
        "into another one by replacement",
    ),
  },
  {
    name: "a bridge.conf over 1 MiB",
    etc: {},
    // awk, not a pipe: SIGPIPE is ignored here, so `yes | head` would complain on stderr.
    setup: 'awk \'BEGIN { print "allow br0"; for (i = 0; i < 120000; i++) print "# padding" }\' ' +
      "> /etc/qemu/bridge.conf",
    c: OK,
    ours: oursAclError(
      `\`${CONF}' is larger than 1048576 bytes`,
      "ACL files are read up to MAX_FILE_BYTES (1 MiB); C reads any size",
    ),
  },
  {
    name: "an include that is a FIFO",
    etc: { "bridge.conf": "allow br0\ninclude /etc/qemu/fifo.conf\n" },
    setup: "mkfifo -m 0644 /etc/qemu/fifo.conf",
    cTimeoutMs: 2000,
    // C's fopen blocks until a writer appears: the helper, and QEMU waiting for it, hang.
    c: { status: "timeout", stderr: "" },
    ours: oursAclError(
      "`/etc/qemu/fifo.conf' is not a regular file (a FIFO)",
      "ACL files that are not regular files are refused, and opened with O_NONBLOCK first",
    ),
  },
  {
    name: "an include with an empty path",
    etc: { "bridge.conf": "allow br0\ninclude \n" },
    c: OK,
    ours: oursAclError(
      `${CONF}:2: include needs a path`,
      'an include without a path is a syntax error; C\'s fopen("") fails and is ignored',
    ),
  },
  {
    name: "an --fd socket that was never connected",
    socket: "unconnected",
    c: {
      status: "exit 1",
      stderr: "failed to write fd to unix socket: Transport endpoint is not connected",
    },
    ours: {
      status: "exit 1",
      stderr: "invalid --fd=3: the socket is not connected",
      why: "a socket without a peer (SO_PEERCRED pid 0) is refused before any tap exists",
    },
  },
  {
    name: "a caller that never reads (a full socket buffer)",
    socket: "full",
    cTimeoutMs: 8000,
    // C's blocking sendmsg waits forever, with the tap up on the bridge.
    c: { status: "timeout", stderr: "" },
    ours: {
      status: "exit 1",
      stderr: "failed to write fd to unix socket: the caller did not read it within 5 seconds",
      why: "the final sendmsg waits at most 5 s for room (poll, then MSG_DONTWAIT); then the " +
        "helper fails and its tap goes with its fd",
    },
  },
  {
    name: "an alternative name of a denied bridge (allow all, deny br0, --br=prod0)",
    etc: { "bridge.conf": "allow all\ndeny br0\n" },
    setup: "ip link property add dev br0 altname prod0",
    args: ["--br=prod0", "--fd=3"],
    // The kernel resolves prod0 to br0 in SIOCGIFMTU and SIOCBRADDIF: C gives a tap on br0.
    c: OK,
    ours: {
      status: "exit 1",
      stderr: "bridge `prod0' is an alternative name of `br0': use its name",
      why: "the ACL compares names, the kernel also resolves alternative names: --br is settled " +
        "to the bridge's own name before the ACL, and an alternative name is refused",
    },
  },
  {
    name: "a --br byte that is not UTF-8 (bridge br\\xff exists)",
    etc: { "bridge.conf": "allow all\n" },
    setup: `ip link add "$(printf 'br\\377')" type bridge`,
    // Raw bytes cannot go through a JS string: a shell builds the argument.
    prefix: ["sh", "-c", 'exec "$0" "--br=$(printf "br\\377")" --fd=3'],
    args: [],
    c: OK,
    ours: {
      status: "exit 1",
      stderr: "invalid interface name `br\uFFFD': not valid UTF-8 (or U+FFFD)",
      why: "Deno decodes argv lossily (0xFF -> U+FFFD), so the name would not be the one asked " +
        "for; refused before the ACL instead of using another bridge",
    },
  },
  {
    name: "a --br byte that is not UTF-8 where the ACL allows its U+FFFD form",
    etc: { "bridge.conf": "allow br\uFFFD\n" },
    setup: `ip link add "$(printf 'br\\357\\277\\275')" type bridge`,
    prefix: ["sh", "-c", 'exec "$0" "--br=$(printf "br\\377")" --fd=3'],
    args: [],
    c: DENIED,
    ours: {
      status: "exit 1",
      stderr: "invalid interface name `br\uFFFD': not valid UTF-8 (or U+FFFD)",
      why: "without the check, Deno's lossy argv turned br\\xff into the allowed br\\uFFFD and " +
        "attached the tap to that other bridge",
    },
  },
];

interface Observed {
  outcome: Outcome;
  run: RawRun;
  taps: string[];
}

/** Runs one helper for `row` in a namespace and sandbox of its own. */
async function observe(row: Row, helperPath: string): Promise<Observed> {
  await using ns = await NetNs.create();
  await ns.bridge("br0");
  await ns.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
  const opts: SandboxOptions = { etcQemu: row.etc ?? { "bridge.conf": "allow br0\n" } };
  if (row.setup !== undefined) opts.setup = row.setup;
  if (row.tun0666) opts.tun0666 = true;
  const sb = await sandbox(ns, opts);
  try {
    const argv = [...sb.argv, ...(row.prefix ?? []), helperPath, ...(row.args ?? DEFAULT_ARGS)];
    const run = await runRaw(argv, {
      socket: row.socket ?? "pair",
      timeoutMs: (helperPath === C_HELPER ? row.cTimeoutMs : undefined) ?? 60_000,
    });
    try {
      const status = run.timedOut ? "timeout" : describeStatus(run.status) as Outcome["status"];
      const outcome = { status, stderr: run.stderr.split("\n")[0] ?? "" };
      // Checked while the received fd (if any) still holds its tap.
      if (status === "exit 0") {
        assert.equal(run.fds.length, 1, `${helperPath}: one fd`);
        assert.equal(run.bytes, 1, `${helperPath}: one data byte`);
        const info = tapInfo(run.fds[0]!.value);
        assert.match(info.name, /^tap\d+$/);
        if (row.flags !== undefined) assert.equal(info.flags, row.flags, `${helperPath}: flags`);
      } else {
        assert.equal(run.fds.length, 0, `${helperPath}: no fd on failure`);
      }
      assert.equal(run.stdout, "", `${helperPath}: nothing on stdout`);
      closeAll(run);
      return { outcome, run, taps: await tapsAfter(ns) };
    } finally {
      closeAll(run);
    }
  } finally {
    await sb.cleanup();
  }
}

const DEFAULT_ARGS = ["--br=br0", "--fd=3"];

/** The taps left once every fd is closed; polls briefly for the kernel's teardown. */
async function tapsAfter(ns: NetNs): Promise<string[]> {
  const deadline = Date.now() + 3000;
  let taps = await ns.taps();
  while (taps.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    taps = await ns.taps();
  }
  return taps;
}

Deno.test({
  name: "every differing row says why, and no row claims a difference that is not one",
  permissions: "none",
  fn() {
    for (const row of ROWS) {
      if (row.ours === undefined) continue;
      assert.ok(row.ours.why.length > 20, `${row.name}: why is too short`);
      const same = row.ours.status === row.c.status && row.ours.stderr === row.c.stderr;
      assert.ok(!same, `${row.name}: ours is listed as different but equals C`);
    }
    assert.equal(new Set(ROWS.map((r) => r.name)).size, ROWS.length, "row names are unique");
  },
});

for (const row of ROWS) {
  const title = row.ours === undefined
    ? `C and ours agree: ${row.name} -> ${row.c.status}`
    : `ours differs from C on purpose: ${row.name} -> C ${row.c.status}, ours ${row.ours.status}`;
  rootTest(title, async () => {
    // A row run as uid 65534 takes the helper from a copy that user can read: the checkout
    // may be in a directory it cannot enter.
    const helper = row.prefix === AS_NOBODY ? (await sourceForOthers()).helper : HELPER_FROM_SOURCE;
    const [c, ours] = await Promise.all([observe(row, C_HELPER), observe(row, helper)]);
    const expectOurs: Outcome = row.ours === undefined
      ? row.c
      : { status: row.ours.status, stderr: row.ours.stderr };
    assert.deepEqual(c.outcome, row.c, `C helper (stderr: ${JSON.stringify(c.run.stderr)})`);
    assert.deepEqual(
      ours.outcome,
      expectOurs,
      `our helper (stderr: ${JSON.stringify(ours.run.stderr)})`,
    );
    // Whatever happened, no tap outlives the helper's fd.
    assert.deepEqual(c.taps, [], "taps left by the C helper");
    assert.deepEqual(ours.taps, [], "taps left by our helper");
  });
}
