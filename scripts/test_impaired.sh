#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check and wait_until
# Impaired networks: a 50 MiB file fetched through ferry_impair (fixed --seed, every impairment
# in both directions) must arrive bit-identical under 5% loss, 25% loss, 25% reordering, 5%
# duplication, 1% corruption (data blocks damaged in their payload), 50 ms +/- 20 ms delay, and a
# 5 s blackout mid-transfer. Besides, it asserts that the block checksum catches the damage, that
# retransmission backs off during the blackout, and that duplicated replies draw no extra requests
# (no Sorcerer's Apprentice). Each case's goodput is a FIGURE line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
require_impair

ROOT=$TMP/root
mkdir -p "$ROOT"
SIZE=$((50 * 1024 * 1024))
gen_random "$ROOT/data.bin" "$SIZE" 21
SEED=20240601

start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
pass "ferryd started on $SRV_ADDR"

declare -a FIGURES=()
declare -A J=()  # the last get --json, flattened
declare -A P=()  # the last proxy's --stats-file
BLOCKS=0         # blocks of the last fetch

# load_kv ARRAY FILE: reads key=value lines into the associative array ARRAY.
# shellcheck disable=SC2034  # `into` names the caller's array
load_kv() {
  local -n into=$1
  local k v
  into=()
  while IFS='=' read -r k v; do [[ -n "$k" ]] && into["$k"]=$v; done <"$2"
}

# both COUNTER: the proxy's COUNTER summed over the two directions.
both() { echo $((${P[up_$1]:-0} + ${P[down_$1]:-0})); }

# fetch LABEL -- PROXY ARGS...: fetches data.bin through a proxy started with ARGS and checks that
# the copy is identical. Fills J, P and BLOCKS and prints the goodput; returns 1 if there is
# nothing to judge the case by. BLOCK, if set, is passed as --block-size.
fetch() {
  local label=$1
  shift 2
  section "$label: ferry_impair $*${BLOCK:+ (get --block-size $BLOCK)}"
  local dir=$TMP/$label
  mkdir -p "$dir"
  cd "$dir"
  J=() P=()
  if ! start_proxy "$SRV_ADDR" --seed "$SEED" "$@"; then
    fail "$label: ferry_impair started"
    cd "$TMP"
    return 1
  fi
  run_bounded 150 "$FERRY" get "$PROXY_ADDR" data.bin --json --timeout 30 ${BLOCK:+--block-size "$BLOCK"}
  cp "$RUN_OUT" get.json
  cp "$RUN_ERR" get.err
  local rc=$RC
  stop_pid "$PROXY_PID"
  RC=$rc
  RUN_ERR=$dir/get.err
  check_rc "$label: get exits 0" 0
  check "$label: identical to the source (cmp)" cmp -s data.bin "$ROOT/data.bin"
  check "$label: no .part or .part.state left" no_part_files "$dir"
  rm -f data.bin
  cd "$TMP"
  load_kv P "$PROXY_STATS"
  if ! python3 -c 'import json, sys
for k, v in json.load(open(sys.argv[1])).items(): print(f"{k}={v}")' "$dir/get.json" >"$dir/get.kv"; then
    fail "$label: get --json printed valid JSON"
    return 1
  fi
  load_kv J "$dir/get.kv"
  BLOCKS=$(((J[size] + J[block_size] - 1) / J[block_size]))
  local line
  line=$(python3 -c 'import sys
size, secs = int(sys.argv[1]), float(sys.argv[2])
print("%.1f MB/s (%.1f MiB in %.2f s)" % (size / secs / 1e6, size / 2**20, secs))' "${J[size]}" "${J[seconds]}")
  line+=", block ${J[block_size]}, $BLOCKS blocks, requests ${J[requests]}, retransmits"
  line+=" ${J[retransmits]}, duplicates ${J[duplicates]}, damaged ${J[corrupt]}"
  say "FIGURE: $label: goodput $line"
  FIGURES+=("$label: $line")
  say "proxy: $(grep -Ev '_series=|=0$' "$PROXY_STATS" | tr '\n' ' ')"
}

# applied LABEL COUNTER MIN: the proxy's COUNTER (both directions) reached MIN, so the case did
# impair the transfer.
applied() { check_int "$1: the proxy applied it ($2 up+down)" "$(both "$2")" -ge "$3"; }

if fetch loss-5 -- --loss 0.05; then applied loss-5 dropped_loss 20; fi
if fetch loss-25 -- --loss 0.25; then applied loss-25 dropped_loss 200; fi
if fetch reorder-25 -- --reorder 0.25; then applied reorder-25 reordered 150; fi

# Duplicated replies must not draw new requests, or each duplicate would start a chain of them
# (the Sorcerer's Apprentice of TFTP, RFC 1123 4.2.3.1). What the client sends is counted on the
# wire by the proxy; beyond one request per block it may only retransmit what timed out or came
# back out of order, which on a loaded machine is a few percent.
if fetch dup-5 -- --dup 0.05; then
  applied dup-5 duplicated 30
  sent=${P[up_received]}
  say "FIGURE: dup-5: client datagrams per block $(python3 -c "print('%.3f' % ($sent / $BLOCKS))") ($sent for $BLOCKS blocks; duplicated by the proxy: $(both duplicated))"
  check_int "dup-5: client datagrams on the wire <= blocks + 10% (no Sorcerer's Apprentice)" \
    "$sent" -le $((BLOCKS + BLOCKS / 10))
fi

# One datagram in a hundred has one byte flipped: in a data block, a byte of the payload, which
# only the block checksum covers; in other datagrams any byte past the header. The client must
# drop every damaged reply and ask again; ferryd must drop every damaged request unanswered.
corrupt_before=$(server_counter "$SRV_PID" "$SRV_LOG.err" drop_corrupt) || corrupt_before=""
if fetch corrupt-1 -- --corrupt 0.01 --corrupt-payload; then
  corrupt_after=$(server_counter "$SRV_PID" "$SRV_LOG.err" drop_corrupt) || corrupt_after=""
  check_int "corrupt-1: the proxy damaged data block payloads" "${P[down_corrupted_payload]}" -ge 3
  check_int "corrupt-1: the proxy damaged requests" "${P[up_corrupted]}" -ge 2
  check_int "corrupt-1: the client dropped damaged replies (json corrupt)" "${J[corrupt]}" -ge 1
  check_int "corrupt-1: ... no more than the proxy damaged" "${J[corrupt]}" -le "${P[down_corrupted]}"
  check_int "corrupt-1: damaged blocks were asked for again (retransmits >= payloads damaged - 1)" \
    "${J[retransmits]}" -ge $((P[down_corrupted_payload] - 1))
  check_int "corrupt-1: ferryd dropped every damaged request (drop_corrupt grew by up_corrupted)" \
    $((${corrupt_after:-0} - ${corrupt_before:-0})) -eq "${P[up_corrupted]}"
fi

# 50 +/- 20 ms each way: at least 60 ms a round trip, and more than ten round trips (two STATs,
# slow start, then windows of at most 8 MiB), where an undelayed fetch takes about 0.2 s.
if fetch delay-50-jitter-20 -- --delay 50 --jitter 20; then
  # Every block came down through it; requests went up fewer, several blocks to a GET-RUN.
  applied delay-50-jitter-20 forwarded "$BLOCKS"
  check "delay-50-jitter-20: the fetch took at least 0.5 s" \
    python3 -c "import sys; sys.exit(${J[seconds]} < 0.5)"
fi

# Nothing gets through for 5 s from the 200th datagram on, about an eighth into the fetch however
# fast the machine is. In the blackout's first moments the client still works off replies that
# reached its socket before it and sends what they make room for; after that it only probes.
# With an RTO that doubles from 20-500 ms up to 4 s it sends a couple of probes per round, some 8
# rounds in 5 s; at a fixed RTO it would send hundreds. The proxy counts what each side sent in
# every millisecond and says where the blackout fell.
if fetch blackout-5s -- --blackout "@200:5" --stats-interval 1; then
  # window NAME FROM_MS TO_MS: datagrams received in direction NAME in [FROM, TO).
  window() {
    awk -F, -v a="$2" -v b="$3" '{ for (i = a + 1; i <= b && i <= NF; i++) n += $i } END { print n + 0 }' \
      <<<"${P[${1}_received_series]:-}"
  }
  bo=${P[up_blackouts_ms]:-}
  if [[ "$bo" =~ ^([0-9]+)-([0-9]+)$ ]]; then
    bo_start=${BASH_REMATCH[1]} bo_end=${BASH_REMATCH[2]}
    pass "blackout-5s: the blackout fell at $bo_start-$bo_end ms"
    probes=${P[up_dropped_blackout]}
    per_s=""
    for ((t = bo_start; t < bo_end; t += 1000)); do
      per_s+="${per_s:+,}$(window up "$t" $((t + 1000)))"
    done
    say "FIGURE: blackout-5s: client datagrams during the blackout $probes, per second $per_s"
    check_int "blackout-5s: the client kept probing during the blackout" "$probes" -ge 2
    check_int "blackout-5s: ... with backoff: at most 20 datagrams after its first 0.5 s" \
      "$(window up $((bo_start + 500)) "$bo_end")" -le 20
    check_int "blackout-5s: ... and at most 6 in its last 2.5 s" \
      "$(window up $((bo_end - 2500)) "$bo_end")" -le 6
    check_int "blackout-5s: it fell mid-transfer (>= 5% of the replies before it)" \
      "$(window down 0 "$bo_start")" -ge $((BLOCKS / 20))
    check_int "blackout-5s: ... and >= 5% after it" "$(window down "$bo_end" 3600000)" -ge \
      $((BLOCKS / 20))
    # The first reply after the blackout shows when the client's next probe got through.
    recovered=$(awk -F, -v e="$bo_end" '{ for (i = e + 1; i <= NF; i++) if ($i > 0) { print i - 1 - e; exit } }' \
      <<<"${P[down_received_series]:-}")
    say "FIGURE: blackout-5s: first reply ${recovered:-?} ms after the blackout"
    check_int "blackout-5s: recovered within the largest RTO (4 s) plus 0.5 s" \
      "${recovered:-999999}" -le 4500
  else
    fail "blackout-5s: the proxy reports where the blackout fell (up_blackouts_ms='$bo')"
  fi
fi

# 8 KiB blocks: eight times the datagrams, so many more of them lost: a tenth of the 6,400
# replies alone is 640, and requests, a few blocks to a GET-RUN, add some.
if BLOCK=8192 fetch loss-10-8k -- --loss 0.1; then applied loss-10-8k dropped_loss 500; fi

section "goodput per case"
for f in "${FIGURES[@]}"; do say "  $f"; done

stop_server "$SRV_PID"
check_eq "ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
summary
