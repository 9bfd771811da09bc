// The bridge service under load: 50 concurrent clients make 2000 requests in total. Every
// request is answered with a tap, no fd leaks in the service, no tap is left behind.

import assert from "node:assert/strict";
import { requestTap, requestTapSync } from "../../service/client.ts";
import { tapInfo } from "../../net/tap.ts";
import { NetNs, rootTest } from "../_support/ns.ts";
import { noTapsLeft, startService } from "./_service.ts";

const CLIENTS = 50;
const REQUESTS = 2000;

rootTest(
  "service: 50 concurrent clients, 2000 requests: all answered, no fd leaked, no tap left",
  async () => {
    await using ns = await NetNs.create();
    await ns.bridge("br0");
    await using svc = await startService(ns, {
      etcQemu: { "bridge.conf": "allow br0\n" },
      args: ["--max-taps-per-user", "1000"],
    });
    requestTapSync("br0", false, { socket: svc.socket, timeoutMs: 30_000 }).close();
    const baseline = await svc.idleFdCount();
    let answered = 0;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CLIENTS }, async () => {
      while (next < REQUESTS) {
        next++;
        using fd = await requestTap("br0", false, { socket: svc.socket, timeoutMs: 60_000 });
        assert.equal(tapInfo(fd.value).tap, true);
        answered++;
      }
    }));
    const s = (performance.now() - t0) / 1000;
    console.log(`${answered} requests from ${CLIENTS} clients in ${s.toFixed(1)} s`);
    assert.equal(answered, REQUESTS);
    assert.deepEqual(await noTapsLeft(ns, 10_000), []);
    assert.equal(
      await svc.fdCountSettles(baseline),
      baseline,
      `fds leaked in the service: ${svc.fdTable()}`,
    );
    const allowed = svc.lines.filter((l) => / event=request .*decision=allow /.test(l)).length;
    assert.equal(allowed, REQUESTS + 1, "one audit line per request");
  },
);
