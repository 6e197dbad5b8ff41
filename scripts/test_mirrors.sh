#!/usr/bin/env bash
# Multi-source get (issue 5): three ferryd instances at --max-rate 16M serve copies of one
# 96 MiB file. Fetching from all three must be at least 2.5 times as fast as from one, and
# bit-identical; killing two of them mid-transfer must not stop it; a mirror that serves another
# version, or lacks the file, is set aside by name and the others deliver it (the primary
# included); a mirror that is down at the start is used once it comes up.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

SIZE=$((96 * 1024 * 1024))
RATE=16M
for i in 1 2 3; do mkdir -p "$TMP/r$i"; done
gen_random "$TMP/r1/big.bin" "$SIZE" 51
cp "$TMP/r1/big.bin" "$TMP/r2/big.bin"
cp "$TMP/r1/big.bin" "$TMP/r3/big.bin"
DL=$TMP/dl
mkdir -p "$DL"

declare -a PIDS ADDRS
for i in 1 2 3; do
  start_server "$TMP/r$i" --max-rate "$RATE" || {
    fail "ferryd $i started"
    summary
  }
  PIDS[i]=$SRV_PID
  ADDRS[i]=$SRV_ADDR
done
pass "three ferryd at --max-rate $RATE: ${ADDRS[1]} ${ADDRS[2]} ${ADDRS[3]}"
# Each server hashes its copy once; a fetch from several sources needs every digest up front.
for i in 1 2 3; do
  run_ferry stat "${ADDRS[i]}" big.bin
  check_rc "ferry stat from server $i" 0
done
MIRRORS=(--mirror "${ADDRS[2]}" --mirror "${ADDRS[3]}")

# source_field JSON INDEX FIELD: a field of the INDEXth source in `ferry get --json` output.
source_field() {
  python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["sources"][int(sys.argv[2])]
print(s[sys.argv[3]])' "$1" "$2" "$3"
}

section "one source against three"
run_ferry get "${ADDRS[1]}" big.bin -o "$DL/one.bin" --json
check_rc "get from one server" 0
ONE_US=$RUN_US
check "the copy from one server is identical" cmp -s "$TMP/r1/big.bin" "$DL/one.bin"
run_ferry get "${ADDRS[1]}" big.bin -o "$DL/three.bin" "${MIRRORS[@]}" --json
check_rc "get from three servers" 0
THREE_US=$RUN_US
cp "$RUN_OUT" "$TMP/three.json"
check "the copy from three servers is identical" cmp -s "$TMP/r1/big.bin" "$DL/three.bin"
say "FIGURE: one source $(fmt_secs "$ONE_US") s, three sources $(fmt_secs "$THREE_US") s"
SPEEDUP_X100=$((ONE_US * 100 / THREE_US))
say "FIGURE: speedup x$((SPEEDUP_X100 / 100)).$(printf '%02d' $((SPEEDUP_X100 % 100)))"
check_int "three sources are at least 2.5 times as fast as one (x100)" "$SPEEDUP_X100" -ge 250
total=0
for s in 0 1 2; do
  b=$(source_field "$TMP/three.json" "$s" bytes)
  say "FIGURE: source $s ($(source_field "$TMP/three.json" "$s" address)) delivered $b bytes"
  check_int "source $s delivered at least a sixth of the file" "$b" -ge $((SIZE / 6))
  total=$((total + b))
done
check_int "the sources' bytes add up to the file" "$total" -eq "$SIZE"

section "two of three killed mid-transfer"
start_bg 120 kill-client "$FERRY" get "${ADDRS[1]}" big.bin -o "$DL/kill.bin" "${MIRRORS[@]}" \
  --json
wait_until 30 test -s "$DL/kill.bin.part.state" || true
sleep 0.5
kill -KILL "${PIDS[1]}" "${PIDS[2]}"
wait "${PIDS[1]}" "${PIDS[2]}" 2>/dev/null || true
wait_bg "$BG_PID" 120
check_rc "the get finished with only the third server alive" 0
check "the copy is identical" cmp -s "$TMP/r1/big.bin" "$DL/kill.bin"
cp "$LOGS/kill-client.out" "$TMP/kill.json"
check_eq "the primary is silent at the end" silent "$(source_field "$TMP/kill.json" 0 state)"
check_eq "the second is silent at the end" silent "$(source_field "$TMP/kill.json" 1 state)"
check_eq "the third is live at the end" live "$(source_field "$TMP/kill.json" 2 state)"
check "the client said the killed servers stopped answering" \
  grep -q "stopped answering; its blocks go to the others" "$LOGS/kill-client.err"
say "FIGURE: with two of three killed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$TMP/kill.json") s"

section "a mirror that comes up during the transfer is used"
start_server "$TMP/r1" --max-rate "$RATE" || fail "ferryd 1 restarted"
ADDRS[1]=$SRV_ADDR
PORT2=${ADDRS[2]##*:}
start_bg 120 late-client "$FERRY" get "${ADDRS[1]}" big.bin -o "$DL/late.bin" \
  --mirror "${ADDRS[2]}" --json -v
wait_until 30 test -s "$DL/late.bin.part.state" || true
start_server "$TMP/r2" --max-rate "$RATE" --port "$PORT2" || fail "ferryd 2 restarted on its port"
wait_bg "$BG_PID" 120
check_rc "the get finished" 0
check "the copy is identical" cmp -s "$TMP/r1/big.bin" "$DL/late.bin"
check "the client said the mirror was down at the start" \
  grep -q "does not answer; going on without it" "$LOGS/late-client.err"
check "the client said it answers again" grep -q "answers again; using it" "$LOGS/late-client.err"
b=$(source_field "$LOGS/late-client.out" 1 bytes)
say "FIGURE: the late mirror delivered $b bytes"
check_int "the late mirror delivered blocks" "$b" -gt 0

section "a mirror with another version is set aside by name; the others deliver the file"
printf 'changed' | dd of="$TMP/r3/big.bin" bs=1 seek=1000 conv=notrunc status=none
run_ferry get "${ADDRS[1]}" big.bin -o "$DL/mixed.bin" --mirror "${ADDRS[2]}" \
  --mirror "${ADDRS[3]}" --json
check_rc "the get succeeds from the two that agree" 0
check "the warning names the mirror that differs" \
  grep -q "${ADDRS[3]} serves another version of 'big.bin'.*fetching it from the others" "$RUN_ERR"
check "the copy is the primary's file" cmp -s "$TMP/r1/big.bin" "$DL/mixed.bin"
check_eq "the mirror that differs delivered nothing" 0 "$(source_field "$RUN_OUT" 2 bytes)"

section "a mirror that lacks the file is set aside, even when it is the primary"
printf 'only on two' >"$TMP/r2/two.txt"
printf 'only on two' >"$TMP/r3/two.txt"
run_ferry get "${ADDRS[1]}" two.txt -o "$DL/two.txt" --mirror "${ADDRS[2]}" \
  --mirror "${ADDRS[3]}"
check_rc "the get succeeds from the mirrors that have it" 0
check "the warning names the server that lacks it" \
  grep -q "${ADDRS[1]}: two.txt: no such file or directory.*fetching it from the others" "$RUN_ERR"
check_eq "the copy is whole" "only on two" "$(cat "$DL/two.txt")"
run_ferry get "${ADDRS[1]}" nowhere.txt -o "$DL/nowhere.txt" --mirror "${ADDRS[2]}"
check_rc "a file no server has is refused" 3
check "no file appears under the final name" test ! -e "$DL/nowhere.txt"

section "bad --mirror"
run_ferry get "${ADDRS[1]}" big.bin -o "$DL/bad.bin" --mirror "not an address:x"
check_rc "a malformed --mirror is a usage error" 2

summary
