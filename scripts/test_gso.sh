#!/usr/bin/env bash
# UDP GSO on ferryd's send path, in a private network namespace whose loopback has an Ethernet
# MTU (1500): with blocks whose replies fit one packet, ferryd sends them in GSO batches; with
# blocks whose replies do not, the kernel refuses the batch, ferryd tries them one datagram
# each for that client, and since it never fragments a reply, the client sees no block arrive
# and goes on with smaller ones; and the client's GETs, which go out in GSO runs too, fall back
# to one datagram each when each is larger than the MTU. Every copy is compared byte for byte.
# Needs root (unshare -n); otherwise it is skipped.
set -euo pipefail
if [[ -z "${FERRY_IN_NETNS:-}" ]]; then
  if [[ $(id -u) == 0 ]] && unshare -n true 2>/dev/null; then
    FERRY_IN_NETNS=1 exec unshare -n "$BASH" "${BASH_SOURCE[0]}" "$@"
  fi
  echo "SKIP - not root, or no network namespaces here: cannot set a loopback MTU of 1500"
  printf '\n0 passed, 0 failed\n'
  exit 0
fi
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
ip link set lo up
ip link set lo mtu 1500
FERRY_LIMIT=60
DATA_REPLY_OVERHEAD=82  # protocol::data_reply_overhead
# The largest reply that fits one IPv4 packet on this loopback: 1500 - 20 (IP) - 8 (UDP).
FITS=$((1500 - 28 - DATA_REPLY_OVERHEAD))

ROOT=$TMP/root
mkdir -p "$ROOT" "$TMP/dl"
gen_random "$ROOT/f.bin" $((8 * 1024 * 1024 + 12345)) 7

# fetch BLOCK [ARGS...]: one fresh ferryd, one get at BLOCK bytes (with ARGS, or -q), then its
# counters in $TMP/c.BLOCK.
fetch() {
  local block=$1
  shift
  (($# > 0)) || set -- -q
  start_server "$ROOT"
  rm -f "$TMP/dl/f.bin"
  run_ferry get "$@" "$SRV_ADDR" f.bin -o "$TMP/dl/f.bin" --block-size "$block"
  check_rc "get with $block-byte blocks" 0
  check "the copy with $block-byte blocks is identical" cmp -s "$ROOT/f.bin" "$TMP/dl/f.bin"
  counters_now "$TMP/event.$block"
  tr ' ' '\n' <"$TMP/event.$block" >"$TMP/c.$block"
  stop_server "$SRV_PID"
}

section "replies that fit the MTU go out in GSO batches"
fetch "$FITS"
check_int "GSO sends" "$(stat_value "$TMP/c.$FITS" gso_sends)" -gt 0
check_int "GSO refusals" "$(stat_value "$TMP/c.$FITS" gso_refused)" -eq 0
check_int "send errors" "$(stat_value "$TMP/c.$FITS" send_errors)" -eq 0

section "replies that do not fit are not fragmented: the client asks for smaller blocks"
fetch 1472 --json
check_int "GSO refusals (once for the client)" "$(stat_value "$TMP/c.1472" gso_refused)" -eq 1
check_int "replies the kernel would not send unfragmented" \
  "$(stat_value "$TMP/c.1472" send_errors)" -gt 0
check "the client said why it changed the block size" \
  grep -q "drops datagrams that large" "$RUN_ERR"
check_int "the block size it went on with fits" "$(json_get "$RUN_OUT" block_size)" -le "$FITS"

section "the client's GETs: too long for one packet each, they fall back to one datagram each"
# ferry sends runs of equal GETs as one GSO send. A path of about 1,600 bytes makes each GET
# larger than the MTU, which the kernel will not segment (EINVAL), so they must go one by one.
LONG=$(printf 'd%.0s' {1..230})
LONG_PATH=$LONG/$LONG/$LONG/$LONG/$LONG/$LONG/$LONG
mkdir -p "$ROOT/$LONG_PATH"
gen_random "$ROOT/$LONG_PATH/g.bin" $((256 * 1024)) 8
start_server "$ROOT"
run_ferry get -v "$SRV_ADDR" "$LONG_PATH/g.bin" -o "$TMP/dl/g.bin" --block-size 1024
check_rc "get of a file with a 1,600-byte path in 1024-byte blocks" 0
check "its copy is identical" cmp -s "$ROOT/$LONG_PATH/g.bin" "$TMP/dl/g.bin"
check "the client said the kernel refused GSO for its GETs" \
  grep -q "UDP GSO refused for requests" "$RUN_ERR"
counters_now "$TMP/event.long"
tr ' ' '\n' <"$TMP/event.long" >"$TMP/c.long"
check_int "blocks the server was asked for (256, and any asked again)" \
  "$(stat_value "$TMP/c.long" blocks_asked)" -ge 256
stop_server "$SRV_PID"

summary
