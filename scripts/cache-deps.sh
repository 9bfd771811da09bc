#!/usr/bin/env bash
# Fetches, while the network is reachable, what tests later need inside network namespaces
# (where there is no route to any registry or mirror): Debian's SeaBIOS, npm:v86 in Deno's
# cache, and the i386 guest for v86 (build/v86-guest/). Idempotent; a second run takes well
# under a second. .ci/run calls it before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# The v86 npm package ships no BIOS; v86 boots with Debian's SeaBIOS.
if ! dpkg-query -W -f='${Status}' seabios 2>/dev/null | grep -q "install ok installed"; then
  echo "cache-deps: installing seabios"
  apt-get install -y -qq --no-install-recommends seabios >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends seabios >/dev/null; }
fi

# npm:v86 (pinned in examples/v86/vm.ts and deno.lock) into Deno's cache.
deno cache --quiet examples/v86/vm.ts

# Debian's 686 kernel and busybox-static for i386, fetched into private apt directories, and the
# guest's initramfs built from them. Prints where they are.
deno run --quiet --no-prompt --allow-read --allow-write --allow-run \
  examples/v86/build-guest.ts
