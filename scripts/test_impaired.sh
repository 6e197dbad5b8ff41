#!/usr/bin/env bash
# Impaired network: a 20 MiB file fetched through ferry_impair (fixed --seed) under loss,
# duplication, reordering, delay with jitter, and a mix of them must arrive byte-identical.
# Prints the goodput of each case from get --json and the proxy's counters.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
require_impair

ROOT=$TMP/root
mkdir -p "$ROOT"
SIZE=$((20 * 1024 * 1024))
gen_random "$ROOT/data.bin" "$SIZE" 21
SEED=20240601

start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
pass "ferryd started on $SRV_ADDR"

declare -a FIGURES=()
cat >"$TMP/goodput.py" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
print("%.1f MB/s in %.2f s, block %d, requests %d, retransmits %d, duplicates %d" % (
    j["size"] / j["seconds"] / 1e6, j["seconds"], j["block_size"], j["requests"],
    j["retransmits"], j["duplicates"]))
EOF

# impaired LABEL COUNTER MIN -- PROXY ARGS...: fetch through the proxy; COUNTER (a key of the
# proxy's stats file, summed over both directions) must reach MIN, to show the impairment was
# really applied. BLOCK, if set, is passed as --block-size.
impaired() {
  local label=$1 counter=$2 min=$3
  shift 4
  section "$label: ferry_impair $*${BLOCK:+ (get --block-size $BLOCK)}"
  local dir=$TMP/$label
  mkdir -p "$dir"
  cd "$dir"
  if ! start_proxy "$SRV_ADDR" --seed "$SEED" "$@"; then
    fail "$label: ferry_impair started"
    cd "$TMP"
    return
  fi
  run_bounded 150 "$FERRY" get "$PROXY_ADDR" data.bin --json --timeout 30 ${BLOCK:+--block-size "$BLOCK"}
  cp "$RUN_OUT" "$dir/get.json"
  cp "$RUN_ERR" "$dir/get.err"
  local rc=$RC
  stop_pid "$PROXY_PID"
  RC=$rc
  RUN_ERR=$dir/get.err
  check_rc "$label: get exits 0" 0
  if cmp -s data.bin "$ROOT/data.bin"; then pass "$label: identical to the source"; else fail "$label: differs from the source"; fi
  check "$label: no .part or .part.state left" no_part_files "$dir"
  local up down
  up=$(stat_value "$PROXY_STATS" "up_$counter")
  down=$(stat_value "$PROXY_STATS" "down_$counter")
  check_int "$label: the proxy applied it ($counter up+down)" $((${up:-0} + ${down:-0})) -ge "$min"
  if is_json "$dir/get.json"; then
    local line
    line=$(python3 "$TMP/goodput.py" "$dir/get.json")
    say "FIGURE: $label: goodput $line"
    FIGURES+=("$label: $line")
  else
    fail "$label: get --json printed valid JSON"
  fi
  say "proxy: $(tr '\n' ' ' <"$PROXY_STATS" | sed 's/ *$//' | grep -Eo '(up|down)_(received|forwarded|dropped_loss|dropped_queue|duplicated|reordered|corrupted)=[0-9]+' | tr '\n' ' ' || true)"
  rm -f data.bin
  cd "$TMP"
}

impaired loss-10 dropped_loss 20 -- --loss 0.1
impaired dup-5 duplicated 10 -- --dup 0.05
impaired reorder-25 reordered 50 -- --reorder 0.25
impaired delay-20-jitter-10 forwarded 600 -- --delay 20 --jitter 10
impaired combined dropped_loss 10 -- --loss 0.05 --dup 0.05 --reorder 0.1 --delay 5
# Replies corrupted on the way must be caught by the block checksum and asked for again.
impaired corrupt-replies-5 corrupted 5 -- --corrupt-down 0.05
# The same with 8 KiB blocks: ten times the datagrams, so many more impaired ones.
BLOCK=8192 impaired loss-10-8k dropped_loss 200 -- --loss 0.1
BLOCK=8192 impaired combined-8k dropped_loss 100 -- --loss 0.05 --dup 0.05 --reorder 0.1 --delay 5

section "goodput per case"
for f in "${FIGURES[@]}"; do say "  $f"; done

stop_server "$SRV_PID"
check_eq "ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
summary
