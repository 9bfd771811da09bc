// Tests for the pure part of caps/privileges.ts: judging one thread's /proc status after a
// set-user-ID drop. The drop itself is tested for real in tests/privileged/setuid_test.ts.

import assert from "node:assert/strict";
import { threadStatusProblem } from "../../caps/privileges.ts";

/** A /proc/PID/task/TID/status excerpt, as the kernel writes it (tabs between the ids). */
function status(fields: Record<string, string>): string {
  const base: Record<string, string> = {
    Name: "deno",
    Uid: "65534\t65534\t65534\t65534",
    Gid: "65534\t65534\t65534\t65534",
    Groups: "4 24 ",
    CapInh: "0000000000000000",
    CapPrm: "0000000000001000",
    CapEff: "0000000000001000",
    CapBnd: "000001fffeffffff",
    CapAmb: "0000000000000000",
    NoNewPrivs: "0",
  };
  return Object.entries({ ...base, ...fields }).map(([k, v]) => `${k}:\t${v}`).join("\n") + "\n";
}

const test = (name: string, fn: () => void) => Deno.test({ name, permissions: "none", fn });

test("threadStatusProblem() accepts the caller's ids with CAP_NET_ADMIN or no capability", () => {
  assert.equal(threadStatusProblem(status({}), 65534, 65534), undefined);
  // A runtime thread after glibc's setxid broadcast: no capabilities at all, full bounding set.
  assert.equal(
    threadStatusProblem(
      status({ CapPrm: "0000000000000000", CapEff: "0000000000000000" }),
      65534,
      65534,
    ),
    undefined,
  );
});

test("threadStatusProblem() rejects any root id: real, effective, saved or filesystem", () => {
  for (
    const uid of [
      "0\t65534\t65534\t65534",
      "65534\t0\t65534\t65534",
      "65534\t65534\t0\t65534",
      "65534\t65534\t65534\t0",
    ]
  ) {
    assert.match(threadStatusProblem(status({ Uid: uid }), 65534, 65534)!, /^has Uid /);
  }
  assert.match(
    threadStatusProblem(status({ Gid: "65534\t0\t65534\t65534" }), 65534, 65534)!,
    /Gid/,
  );
});

test("threadStatusProblem() rejects a capability other than CAP_NET_ADMIN in any set", () => {
  assert.equal(
    threadStatusProblem(status({ CapPrm: "000001fffeffffff" }), 65534, 65534),
    "still holds capabilities CapPrm=000001fffeffffff",
  );
  assert.match(
    threadStatusProblem(status({ CapEff: "0000000000003000" }), 65534, 65534)!,
    /CapEff/,
  );
  assert.match(
    threadStatusProblem(status({ CapInh: "0000000000000001" }), 65534, 65534)!,
    /CapInh/,
  );
  assert.match(
    threadStatusProblem(status({ CapAmb: "0000000000000080" }), 65534, 65534)!,
    /CapAmb/,
  );
});

test("threadStatusProblem() fails closed on a status it cannot read", () => {
  assert.match(threadStatusProblem("Name:\tdeno\n", 65534, 65534)!, /^has Uid undefined/);
  const noCaps = status({}).replace(/^CapEff:.*\n/m, "");
  assert.match(threadStatusProblem(noCaps, 65534, 65534)!, /^has no readable CapEff/);
  assert.match(
    threadStatusProblem(status({ CapPrm: "zz" }), 65534, 65534)!,
    /^has no readable CapPrm/,
  );
});
