// Who may bind a tap to which OVN logical port. OVN binds a logical switch port to whichever
// interface carries `external_ids:iface-id=<port name>`, so an iface-id is a claim on someone's
// network identity: the service writes one only when this policy allows it for the client.
//
// The policy is its own file, /etc/qemu/bridge-ovn.conf (bridge.conf keeps QEMU's grammar), one
// rule a line:
//
//     allow WHO PATTERN
//
// WHO is `*` (every user), `@group` (members of the group, primary or supplementary) or a user
// name. PATTERN is the iface-id, literally, where `%u` stands for the client's user name and `%U`
// for its uid, optionally ending in `*` (any non-empty rest). `%u` must be followed by `:` and
// `%U` by a non-digit, so no user's expansion is a prefix of another's: a colon never occurs in a
// user name (it separates the fields of /etc/passwd), and digits end where the uid ends. Hence
// `allow * %u:*` gives each user the names "<user>:..." and nobody can claim another's.
// Deny by default: no file, no matching rule, no iface-id.

import { readSmallFile } from "../sys/libc.ts";
import { E, OsError } from "../sys/libc.ts";

/** The policy file. */
export const OVN_POLICY_FILE = "/etc/qemu/bridge-ovn.conf";

/** One `allow` rule. */
export interface OvnRule {
  /** `*`, `@group` or a user name. */
  who: { kind: "everyone" } | { kind: "group"; name: string } | { kind: "user"; name: string };
  /** The pattern as written. */
  pattern: string;
  /** The 1-based line, for the audit line. */
  line: number;
}

/** Who asks, as the service knows it from SO_PEERCRED and the user and group databases. */
export interface OvnClient {
  /** The client's uid. */
  uid: number;
  /** Its user name, or undefined when the uid has no passwd entry. */
  user: string | undefined;
  /** Names of its primary and supplementary groups. */
  groups: readonly string[];
}

/** The verdict, with the reason for the audit line. */
export type OvnDecision = { allowed: true; line: number } | { allowed: false; reason: string };

/** The longest iface-id accepted (OVN port names are usually UUIDs: 36). */
export const MAX_IFACE_ID = 128;

const IFACE_ID_RE = /^[A-Za-z0-9._:@+-]+$/;
const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;

/**
 * Checks the form of an iface-id: 1 to 128 characters from `A-Z a-z 0-9 . _ : @ + -`. Throws
 * TypeError. Nothing else reaches the database or the audit line.
 */
export function checkIfaceId(id: string): void {
  if (id.length === 0 || id.length > MAX_IFACE_ID || !IFACE_ID_RE.test(id)) {
    throw new TypeError(`Invalid iface-id: '${JSON.stringify(id).slice(1, -1)}'`);
  }
}

function checkPattern(p: string): string | undefined {
  const body = p.endsWith("*") ? p.slice(0, -1) : p;
  if (body.includes("*")) return "'*' may only end a pattern";
  // Placeholders: %u then ':', %U then a non-digit or the end of the pattern.
  let literal = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i]!;
    if (c !== "%") {
      literal += c;
      continue;
    }
    const k = body[i + 1];
    if (k === "u") {
      if (body[i + 2] !== ":") return "'%u' must be followed by ':'";
    } else if (k === "U") {
      const next = body[i + 2];
      if (next !== undefined && /[0-9]/.test(next)) return "'%U' must not be followed by a digit";
      if (next === undefined && p.endsWith("*")) return "'%U' must not be followed by '*'";
    } else {
      return `unknown placeholder '%${k ?? ""}'`;
    }
    i++;
  }
  if (literal !== "" && !IFACE_ID_RE.test(literal)) return "invalid character in pattern";
  return undefined;
}

/**
 * Parses the text of the policy file. Throws SyntaxError `FILE:LINE: DETAIL` for any line that
 * is not blank, a `#` comment or a well-formed `allow WHO PATTERN`: a policy that does not say
 * exactly what the administrator meant is refused whole.
 */
export function parseOvnPolicy(text: string, file: string): OvnRule[] {
  const rules: OvnRule[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    const bad = (detail: string) => new SyntaxError(`${file}:${line}: ${detail}`);
    const noComment = raw.replace(/(^|\s)#.*$/, "").trim();
    if (noComment === "") return;
    const f = noComment.split(/\s+/);
    if (f[0] !== "allow") throw bad(`unknown command '${JSON.stringify(f[0]).slice(1, -1)}'`);
    if (f.length !== 3) throw bad("expected 'allow WHO PATTERN'");
    const [, w, pattern] = f as [string, string, string];
    let who: OvnRule["who"];
    if (w === "*") who = { kind: "everyone" };
    else if (w.startsWith("@") && NAME_RE.test(w.slice(1))) {
      who = { kind: "group", name: w.slice(1) };
    } else if (NAME_RE.test(w)) who = { kind: "user", name: w };
    else throw bad(`invalid user or group '${JSON.stringify(w).slice(1, -1)}'`);
    const problem = checkPattern(pattern);
    if (problem) throw bad(`${problem}: '${JSON.stringify(pattern).slice(1, -1)}'`);
    rules.push({ who, pattern, line });
  });
  return rules;
}

function applies(rule: OvnRule, client: OvnClient): boolean {
  switch (rule.who.kind) {
    case "everyone":
      return true;
    case "user":
      return client.user === rule.who.name;
    case "group":
      return client.groups.includes(rule.who.name);
  }
}

/** The pattern with the client's placeholders filled in, or undefined when one cannot be. */
function expand(pattern: string, client: OvnClient): string | undefined {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c !== "%") {
      out += c;
      continue;
    }
    const k = pattern[++i];
    if (k === "u") {
      // A user name that could hold the separator would break the prefix argument: refuse.
      if (client.user === undefined || !NAME_RE.test(client.user)) return undefined;
      out += client.user;
    } else {
      out += String(client.uid);
    }
  }
  return out;
}

/**
 * Decides whether `client` may bind a tap to the OVN logical port `ifaceId`: allowed when some
 * rule for the client matches (exactly, or as a prefix with a non-empty rest when the pattern
 * ends in `*`). Throws TypeError for a malformed iface-id.
 */
export function authorizeIfaceId(
  rules: readonly OvnRule[],
  client: OvnClient,
  ifaceId: string,
): OvnDecision {
  checkIfaceId(ifaceId);
  for (const rule of rules) {
    if (!applies(rule, client)) continue;
    const star = rule.pattern.endsWith("*");
    const want = expand(star ? rule.pattern.slice(0, -1) : rule.pattern, client);
    if (want === undefined) continue;
    if (star ? ifaceId.length > want.length && ifaceId.startsWith(want) : ifaceId === want) {
      return { allowed: true, line: rule.line };
    }
  }
  const name = client.user ?? `uid ${client.uid}`;
  return {
    allowed: false,
    reason: rules.length === 0
      ? `iface-id '${ifaceId}' refused: ${OVN_POLICY_FILE} allows no iface-id`
      : `iface-id '${ifaceId}' refused: no rule in ${OVN_POLICY_FILE} allows it for ${name}`,
  };
}

/**
 * Reads and parses the policy file; a missing file is an empty policy (no iface-id for
 * anyone). Requires `--allow-ffi` (read through libc, as the ACL loader).
 */
export function loadOvnPolicy(path: string = OVN_POLICY_FILE): OvnRule[] {
  let text: string;
  try {
    text = readSmallFile(path, 1 << 20);
  } catch (e) {
    if (e instanceof OsError && e.errno === E.ENOENT) return [];
    throw e;
  }
  return parseOvnPolicy(text, path);
}
