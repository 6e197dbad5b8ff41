#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check and traps
# A real path (scripts/netpath.sh): ferryd and ferry in two network namespaces, MTU-sized
# datagrams over veth links with a 100 Mbit/s tbf bottleneck, a fixed delay each way and random
# loss each way from nftables. It checks correctness only; the figures are the benchmark's
# (scripts/bench_path.sh). Cases:
#   - 40 ms RTT and 1% loss: the copy is identical, and the block size is the largest that the
#     1500-byte path carries unfragmented (1390 bytes);
#   - at 20 Mbit/s, the transfer interrupted part-way and run again: it resumes;
#   - a router-to-client link of MTU 1280: the client sees it, and picks 1170-byte blocks;
#   - a router that drops every packet over 1280 bytes without a word (an MTU black hole): the
#     transfer still completes, with smaller blocks, and says why.
# Needs root (namespaces); installs nftables, ethtool and ping if they are missing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/netpath.sh
source "$(dirname "${BASH_SOURCE[0]}")/netpath.sh"
lib_init
export FERRY_DELAY=${FERRY_DELAY:-$(dirname "$FERRYD")/../tests/tools/ferry_delay}
say "ferry_delay: $FERRY_DELAY"

if [[ $EUID != 0 ]]; then
  fail "this test needs root, for network namespaces"
  summary
fi
netpath_install >/dev/null 2>&1 || true

SRV_PID=""
# Stops the last ferryd before its namespace goes, so nothing of ours is left in it.
path_down() {
  [[ -z $SRV_PID ]] || stop_server "$SRV_PID"
  SRV_PID=""
  netpath_down
}
cleanup() {
  path_down
  lib_cleanup
}
trap cleanup EXIT

ROOT=$TMP/root
mkdir -p "$ROOT"
gen_random "$ROOT/data.bin" $((12 * 1024 * 1024)) 7
gen_random "$ROOT/small.bin" $((3 * 1024 * 1024)) 8


# path_up RTT LOSS RATE [key=value...]: a fresh path with ferryd serving ROOT on it.
path_up() {
  path_down
  if ! netpath_up "$@" >"$LOGS/netpath.out" 2>&1; then
    cat "$LOGS/netpath.out" >&2
    fail "netpath_up $*"
    summary
  fi
  netpath_wrap "$TMP/ferryd-ns" "$NP_SERVER_NS" "$FERRYD"
  netpath_wrap "$TMP/ferry-ns" "$NP_CLIENT_NS" "$FERRY"
  REAL_FERRYD=$FERRYD
  FERRYD=$TMP/ferryd-ns
  start_server "$ROOT" --bind "$NP_SERVER_IP" || {
    FERRYD=$REAL_FERRYD
    fail "ferryd started on the path"
    summary
  }
  FERRYD=$REAL_FERRYD
  pass "path up: RTT $1 ms, loss $2% each way, $3 Mbit/s ${*:4}; ferryd on $SRV_ADDR"
}

# get NAME OUT [ARGS...]: fetches NAME through the path; RC is ferry's status, OUT.json its
# JSON and OUT.err its stderr.
get() {
  local name=$1 out=$2
  shift 2
  run_bounded 120 "$TMP/ferry-ns" get "$SRV_ADDR" "$name" -o "$out" --json --timeout 20 "$@"
  cp "$RUN_OUT" "$out.json"
  cp "$RUN_ERR" "$out.err"
}

same() { cmp -s "$ROOT/$1" "$2"; }

section "40 ms RTT, 1% loss each way, 100 Mbit/s"
path_up 40 1 100
get data.bin "$TMP/a.bin"
check_rc "get completes" 0
check "the copy is identical" same data.bin "$TMP/a.bin"
check_eq "block size: the largest a 1500-byte path carries unfragmented" 1390 \
  "$(json_get "$TMP/a.bin.json" block_size 2>/dev/null || echo none)"
say "FIGURE: 12 MiB at 40 ms and 1% loss: $(json_get "$TMP/a.bin.json" seconds) s," \
  "$(json_get "$TMP/a.bin.json" retransmits) retransmitted of $(json_get "$TMP/a.bin.json" requests) requests"

section "interrupted half-way, then run again (40 ms, 1%, 20 Mbit/s)"
path_up 40 1 20
OUT=$TMP/b.bin
start_bg 120 interrupted "$TMP/ferry-ns" get "$SRV_ADDR" data.bin -o "$OUT" -q --timeout 20
half_done() { (($(part_done_blocks "$OUT.part.state") > 3000)) || ! alive "$BG_CHILD"; }
wait_until 60 half_done || fail "the state file recorded 3000 blocks within 60 s"
kill -INT "$BG_CHILD" 2>/dev/null || true
wait_bg "$BG_PID" 30
check_int "the first run was interrupted" "$RC" -ne 0
check "a part file is left" test -e "$OUT.part"
get data.bin "$OUT"
check_rc "the rerun completes" 0
check "the copy is identical" same data.bin "$OUT"
resumed=$(json_get "$OUT.json" resumed_bytes 2>/dev/null || echo 0)
check_int "the rerun resumed what the first run had" "$resumed" -gt 0

section "a 1280-byte link between the router and the client"
path_up 20 0 100 client_mtu=1280
get small.bin "$TMP/c.bin"
check_rc "get completes" 0
check "the copy is identical" same small.bin "$TMP/c.bin"
check_eq "block size: 1280 less IPv4, UDP and the data header" 1170 \
  "$(json_get "$TMP/c.bin.json" block_size 2>/dev/null || echo none)"

section "an MTU black hole: packets over 1280 bytes vanish"
path_up 20 0 100 blackhole=1
get small.bin "$TMP/d.bin"
check_rc "get completes" 0
check "the copy is identical" same small.bin "$TMP/d.bin"
block=$(json_get "$TMP/d.bin.json" block_size 2>/dev/null || echo 99999)
check_int "it went on with blocks that fit" "$block" -le 1170
check "it says why" grep -q "drops datagrams that large" "$TMP/d.bin.err"

path_down
summary
