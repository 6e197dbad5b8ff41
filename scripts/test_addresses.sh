#!/usr/bin/env bash
# Addresses and retries, as curl users expect them: a name with an IPv6 and an IPv4 address finds
# a ferryd that listens on either family; --retry runs a command again after a network failure,
# with growing waits, and a get that starts before its server comes up then succeeds; other
# failures are not retried.
# The name comes from an /etc/hosts that only this test sees: it runs ferry in a mount namespace
# of its own (unshare -m) with a file bind-mounted there, so it needs root; without root that
# part is skipped and says so.
# shellcheck disable=SC2317  # functions called through check and wait_until
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

ROOT=$TMP/root
mkdir -p "$ROOT"
printf 'hello over both families\n' >"$ROOT/ok.txt"
gen_random "$ROOT/data.bin" $((2 * 1024 * 1024)) 61

section "a name with an IPv6 and an IPv4 address finds ferryd on either"
if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null; then
  HOSTS=$TMP/hosts
  printf '::1 both.test\n127.0.0.1 both.test\n' >"$HOSTS"
  # ferry_in_ns ARGS...: ferry with both.test in its /etc/hosts; exit status and output as run_ferry.
  ferry_in_ns() {
    run_bounded 60 unshare -m bash -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' _ \
      "$HOSTS" "$FERRY" "$@"
  }
  for bind in 127.0.0.1 ::1; do
    start_server "$ROOT" --bind "$bind" || {
      fail "ferryd started on $bind"
      continue
    }
    pass "ferryd listens on $bind only ($SRV_ADDR)"
    ferry_in_ns stat "both.test:$SRV_PORT" ok.txt -v --timeout 5
    check_rc "ferry stat both.test:$SRV_PORT" 0
    if [[ $bind == ::1 ]]; then want="\[::1\]:$SRV_PORT"; else want="127.0.0.1:$SRV_PORT"; fi
    check "it says it resolved both addresses" grep -q "both.test:$SRV_PORT resolves to .*:$SRV_PORT" "$RUN_ERR"
    check "it uses the address that answered, $bind" grep -q "using $want, the first address" "$RUN_ERR"
    say "FIGURE: stat through a two-address name to ferryd on $bind: $((RUN_US / 1000)) ms"
    ferry_in_ns get "both.test:$SRV_PORT" data.bin -o "$TMP/both-$SEQ.bin" --timeout 5
    check_rc "ferry get both.test:$SRV_PORT" 0
    check "the copy is identical" cmp -s "$ROOT/data.bin" "$TMP/both-$SEQ.bin"
    stop_server "$SRV_PID"
  done
else
  say "skip: needs root and unshare for a private /etc/hosts"
fi

section "--retry: a closed port is tried again, with growing waits, then exit 4"
PORT=$(free_udp_port)
run_ferry stat "127.0.0.1:$PORT" ok.txt --retry 2 --timeout 2
check_rc "stat of a closed port with --retry 2" 4
check_eq "two retries were announced" 2 "$(grep -c 'trying again in' "$RUN_ERR")"
check "the first wait is 1 s, the second 2 s" \
  grep -q "trying again in 1 s (retry 1 of 2)" "$RUN_ERR"
check "the second wait is 2 s" grep -q "trying again in 2 s (retry 2 of 2)" "$RUN_ERR"
check_int "it took the 3 s of waits (ms)" $((RUN_US / 1000)) -ge 2900
check_int "and not the timeouts: the port refuses at once (ms)" $((RUN_US / 1000)) -lt 6000

section "--retry: a get that starts before its server comes up succeeds"
PORT=$(free_udp_port)
start_bg 60 late "$FERRY" get "127.0.0.1:$PORT" data.bin -o "$TMP/late.bin" --retry 5 --timeout 2
LATE_PID=$BG_PID
sleep 1.5
start_server "$ROOT" --port "$PORT" || fail "ferryd started late on port $PORT"
wait_bg "$LATE_PID" 60
check_eq "the get exits 0" 0 "$RC"
check "the copy is identical" cmp -s "$ROOT/data.bin" "$TMP/late.bin"
check "it said it would try again" grep -q "trying again in" "$LOGS/late.err"

section "--retry does not retry what is not transient"
run_ferry stat "$SRV_ADDR" no-such-file --retry 3 --timeout 2
check_rc "a refusal with --retry 3" 3
check_eq "no retry was announced" 0 "$(grep -c 'trying again in' "$RUN_ERR" || true)"
stop_server "$SRV_PID"

summary
