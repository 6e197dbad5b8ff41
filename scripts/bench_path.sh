#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through traps
# Benchmark (issue 13): ferry beside TCP BBR and TCP CUBIC (iperf3 -R) on real paths built by
# scripts/netpath.sh: two network namespaces, veth links of MTU 1500 with offloads off, a tbf
# bottleneck, a fixed delay each way (ferry_delay) and random loss each way (nftables). Every tool
# runs on the same path in the same run, rounds interleaved (ferry, BBR, CUBIC, ferry, ...), and
# the table gives the median of the rounds. It prints figures and passes or fails nothing.
#
#   sudo bash scripts/bench_path.sh                        # the matrix and the fairness cases
#   sudo CASES=matrix MATRIX="60:2:100" ROUNDS=1 bash scripts/bench_path.sh
#   sudo BENCH_MD=/tmp/path.md bash scripts/bench_path.sh
#
# Environment:
#   FERRYD, FERRY, FERRY_DELAY  the binaries (default: build/ under the repository)
#   CASES        a subset of: matrix fair (default both)
#   MATRIX       RTT_MS:LOSS_PCT:RATE_MBIT cases (default: RTT 20 60 170 300 x loss 0 0.5 2 5
#                at 100 Mbit/s, and 20 ms without loss at 500 Mbit/s)
#   ROUNDS       rounds per case (default 3)
#   SECONDS_AT_RATE  ferry's file is what the link carries in this many seconds, and iperf3 runs
#                as long (default 10)
#   BENCH_MD     also write the tables as markdown to this file
#
# "% of link" is payload bytes over the bottleneck's rate. tbf counts whole Ethernet frames (1514
# bytes for a full one), so the most a tool can reach is its payload share of a frame: 91.8% for
# ferry's 1390-byte blocks, 95.6% for TCP's 1448-byte segments. "retx" is bytes sent again over
# bytes delivered. "CPU" is the CPU time of both ends (ferry and ferryd; iperf3's two ends as
# it reports them) over the wall time, in percent of one core.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/netpath.sh
source "$(dirname "${BASH_SOURCE[0]}")/netpath.sh"

REPO=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
export FERRYD=${FERRYD:-$REPO/build/server/ferryd}
export FERRY=${FERRY:-$REPO/build/client/ferry}
export FERRY_DELAY=${FERRY_DELAY:-$REPO/build/tests/tools/ferry_delay}
CASES=${CASES:-matrix fair}
ROUNDS=${ROUNDS:-3}
SECONDS_AT_RATE=${SECONDS_AT_RATE:-10}
BENCH_MD=${BENCH_MD:-}
if [[ -z ${MATRIX:-} ]]; then
  MATRIX=""
  for rtt in 20 60 170 300; do
    for loss in 0 0.5 2 5; do MATRIX+=" $rtt:$loss:100"; done
  done
  MATRIX+=" 20:0:500"
fi

lib_init
trap bench_cleanup EXIT
trap - ERR
if [[ $EUID != 0 ]]; then
  echo "bench_path: needs root (network namespaces)" >&2
  exit 2
fi
netpath_install >/dev/null || {
  echo "bench_path: could not install $(netpath_missing | tr '\n' ' ')" >&2
  exit 2
}

SRV_PID=""
IPERF_PID=""
# A benchmark passes or fails nothing: lib.sh's cleanup is told the run is over, so it does
# not count the end as a failed test.
bench_cleanup() {
  local rc=$?
  stop_case
  # shellcheck disable=SC2034  # read by lib_cleanup
  SUMMARY_DONE=1
  lib_cleanup
  exit "$rc"
}
ROWS=$TMP/rows.tsv
: >"$ROWS"
ROOT=$TMP/root
mkdir -p "$ROOT"

# A tool's round: one line in $ROUNDS_TSV with case, tool, % of link, retx, CPU %.
ROUNDS_TSV=$TMP/rounds.tsv
: >"$ROUNDS_TSV"
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$ROUNDS_TSV"; }


# cpu_s PID: the CPU seconds (user + system) a live process has used.
cpu_s() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# start_case RTT LOSS RATE: the path, with ferryd and an iperf3 server on it.
start_case() {
  stop_case
  netpath_up "$1" "$2" "$3" >"$LOGS/netpath.out" 2>&1 || {
    cat "$LOGS/netpath.out" >&2
    return 1
  }
  netpath_wrap "$TMP/ferryd-ns" "$NP_SERVER_NS" "$FERRYD"
  netpath_wrap "$TMP/ferry-ns" "$NP_CLIENT_NS" "$FERRY"
  local real=$FERRYD
  FERRYD=$TMP/ferryd-ns
  start_server "$ROOT" --bind "$NP_SERVER_IP" || {
    FERRYD=$real
    return 1
  }
  FERRYD=$real
  ip netns exec "$NP_SERVER_NS" iperf3 -s -B "$NP_SERVER_IP" -p 5201 </dev/null \
    >"$LOGS/iperf3-s.out" 2>&1 &
  IPERF_PID=$!
  track_pid "$IPERF_PID"
  sleep 0.5
}

stop_case() {
  [[ -z $SRV_PID ]] || stop_server "$SRV_PID"
  [[ -z $IPERF_PID ]] || stop_pid "$IPERF_PID" TERM
  SRV_PID="" IPERF_PID=""
  netpath_down
}

# file_for RATE_MBIT [SECONDS]: a file of what the link carries in that time, made once.
file_for() {
  local mb=$(($1 * ${2:-$SECONDS_AT_RATE} / 8)) name
  name=f$mb.bin
  [[ -e $ROOT/$name ]] || head -c $((mb * 1024 * 1024)) /dev/urandom >"$ROOT/$name"
  echo "$name"
}

# ferry_round CASE RATE: fetches the case's file once; records the figures.
ferry_round() {
  local label=$1 rate=$2 name out=$TMP/out.bin s0 c0 t0 t1 cpu
  name=$(file_for "$rate")
  rm -f "$out" "$out".part*
  s0=$(cpu_s "$SRV_PID")
  t0=$(now_us)
  # The subshell's `times` gives the CPU of the client it waited for.
  if ! (timeout 300 "$TMP/ferry-ns" get "$SRV_ADDR" "$name" -o "$out" --json --timeout 30 \
    </dev/null >"$TMP/get.json" 2>"$LOGS/get.err" && times >"$TMP/times.txt"); then
    record "$label" ferry fail fail fail
    return 0
  fi
  t1=$(now_us)
  c0=$(tail -1 "$TMP/times.txt" | tr 'ms' '  ' | awk '{ print $1 * 60 + $2 + $3 * 60 + $4 }')
  cpu=$(awk -v a="$c0" -v b="$(cpu_s "$SRV_PID")" -v s="$s0" -v us=$((t1 - t0)) \
    'BEGIN { printf "%.0f", 100 * (a + b - s) / (us / 1e6) }')
  python3 - "$TMP/get.json" "$rate" $((t1 - t0)) "$label" "$cpu" >>"$ROUNDS_TSV" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
rate, us, label, cpu = float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
link = 100 * j["size"] * 8 / (us / 1e6) / (rate * 1e6)
retx = j["retransmits"] * j["block_size"] / max(j["size"], 1)
print(f"{label}\tferry\t{link:.1f}\t{100 * retx:.2f}\t{cpu}")
EOF
}

# tcp_round CASE RATE CC: iperf3 -R with congestion control CC; records the figures.
tcp_round() {
  local label=$1 rate=$2 cc=$3
  if ! timeout $((SECONDS_AT_RATE + 30)) ip netns exec "$NP_CLIENT_NS" iperf3 -c "$NP_SERVER_IP" \
    -p 5201 -R -C "$cc" -t "$SECONDS_AT_RATE" --json </dev/null >"$TMP/iperf.json" 2>&1; then
    record "$label" "tcp-$cc" fail fail fail
    return 0
  fi
  python3 - "$TMP/iperf.json" "$rate" "$label" "$cc" >>"$ROUNDS_TSV" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
rate, label, cc = float(sys.argv[2]), sys.argv[3], sys.argv[4]
end = j["end"]
got = end["sum_received"]["bits_per_second"]
sent = end["sum_sent"]
retx = sent.get("retransmits", 0) * 1448 / max(sent["bytes"], 1)
cpu = end["cpu_utilization_percent"]
print(f"{label}\ttcp-{cc}\t{100 * got / (rate * 1e6):.1f}\t{100 * retx:.2f}\t"
      f"{cpu['host_total'] + cpu['remote_total']:.0f}")
EOF
}

run_matrix() {
  local c rtt loss rate r
  for c in $MATRIX; do
    IFS=: read -r rtt loss rate <<<"$c"
    section "RTT $rtt ms, loss $loss% each way, $rate Mbit/s"
    start_case "$rtt" "$loss" "$rate" || {
      record "$c" ferry fail fail fail
      continue
    }
    for ((r = 1; r <= ROUNDS; r++)); do
      ferry_round "$c" "$rate"
      tcp_round "$c" "$rate" bbr
      tcp_round "$c" "$rate" cubic
      grep -P "^\Q$c\E\t" "$ROUNDS_TSV" | tail -3 | awk -F'\t' -v r="$r" \
        '{ printf "  round %d  %-10s %6s%% of link  retx %5s%%  CPU %s%%\n", r, $2, $3, $4, $5 }'
    done
  done
  stop_case
}

# The fairness cases, at 60 ms without loss through 100 Mbit/s.
run_fair() {
  section "fairness: two ferry transfers through one bottleneck (60 ms, 100 Mbit/s)"
  start_case 60 0 100 || return 0
  local name a=$TMP/fa.bin b=$TMP/fb.bin pa pb done_b
  name=$(file_for 100 20)
  rm -f "$a"* "$b"*
  "$TMP/ferry-ns" get "$SRV_ADDR" "$name" -o "$a" -q --timeout 30 </dev/null 2>"$LOGS/fa.err" &
  pa=$!
  "$TMP/ferry-ns" get "$SRV_ADDR" "$name" -o "$b" -q --timeout 30 </dev/null 2>"$LOGS/fb.err" &
  pb=$!
  track_pid "$pa"
  track_pid "$pb"
  # When the first ends, how far the second had come says how they shared the link.
  local t0 first other other_out
  t0=$(now_us)
  while alive "$pa" && alive "$pb" && (($(now_us) - t0 < 120000000)); do sleep 0.05; done
  if alive "$pa"; then first=b other=$pa other_out=$a; else first=a other=$pb other_out=$b; fi
  done_b=$(($(part_done_blocks "$other_out.part.state") * 1390))
  local size secs
  size=$(stat -c %s "$ROOT/$name")
  secs=$((($(now_us) - t0) / 1000))
  stop_pid "$other" TERM
  python3 - "$size" "$done_b" "$secs" "$first" >>"$ROWS" <<'EOF'
import sys
size, other, ms, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
share = other / (size + other)
link = 100 * (size + other) * 8 / (ms / 1000) / 100e6
print(f"fair\ttwo ferry flows, 60 ms, 100 Mbit/s\tshare of the slower {100 * share:.0f}% "
      f"(40% or more wanted); both together {link:.0f}% of link")
EOF
  tail -1 "$ROWS" | cut -f3

  section "fairness: ferry beside a TCP BBR flow (60 ms, 100 Mbit/s)"
  start_case 60 0 100 || return 0
  local out=$TMP/fc.bin pf
  name=$(file_for 100 40)
  rm -f "$out"*
  "$TMP/ferry-ns" get "$SRV_ADDR" "$name" -o "$out" -q --timeout 30 </dev/null 2>"$LOGS/fc.err" &
  pf=$!
  track_pid "$pf"
  sleep 1
  timeout 60 ip netns exec "$NP_CLIENT_NS" iperf3 -c "$NP_SERVER_IP" -p 5201 -R -C bbr -t 20 \
    --json </dev/null >"$TMP/fair-iperf.json" 2>&1 || true
  local ferry_running=0
  if alive "$pf"; then ferry_running=1; fi
  stop_pid "$pf" TERM
  python3 - "$TMP/fair-iperf.json" "$ferry_running" >>"$ROWS" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ivs = j["intervals"][2:]  # past TCP's own start-up
bps = sum(i["sum"]["bits_per_second"] for i in ivs) / max(len(ivs), 1)
note = "" if sys.argv[2] == "1" else " (ferry ended before iperf3 did)"
print(f"fair\tTCP BBR beside ferry, 60 ms, 100 Mbit/s\tTCP BBR kept {100 * bps / 100e6:.0f}% of "
      f"the link over seconds 2-20 (a third or more wanted){note}")
EOF
  tail -1 "$ROWS" | cut -f3
  stop_case
}

[[ " $CASES " == *" matrix "* ]] && run_matrix
[[ " $CASES " == *" fair "* ]] && run_fair

# The table: the median of the rounds, per case and tool.
python3 - "$ROUNDS_TSV" "$ROWS" "${BENCH_MD:-/dev/null}" <<'EOF'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
fair = [l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()]
cases, by = [], {}
for case, tool, link, retx, cpu in rows:
    if case not in cases: cases.append(case)
    by.setdefault((case, tool), []).append((link, retx, cpu))
def med(v, i):
    nums = [float(x[i]) for x in v if x[i] != "fail"]
    fails = len(v) - len(nums)
    if not nums: return "fail"
    m = statistics.median(nums)
    return (f"{m:.1f}" if i < 2 else f"{m:.0f}") + (f" ({fails} failed)" if fails else "")
tools = ["ferry", "tcp-bbr", "tcp-cubic"]
head = ("| RTT | loss | link | ferry % of link | BBR | CUBIC | ferry retx % | BBR retx % | "
        "CUBIC retx % | ferry CPU % | BBR CPU % | CUBIC CPU % |")
lines = [head, "|" + "---|" * 12]
for c in cases:
    rtt, loss, rate = c.split(":")
    cells = [f"{rtt} ms", f"{loss}%", f"{rate} Mbit/s"]
    for i in range(3):
        cells += [med(by.get((c, t), []), i) for t in tools]
    lines.append("| " + " | ".join(cells) + " |")
out = "\n".join(lines) if cases else ""
if fair:
    out += "\n\n" + "\n".join(f"- {f[1]}: {f[2]}" for f in fair)
print("\n== real-path table (median of rounds)\n" + out)
with open(sys.argv[3], "w") as f:
    f.write(out + "\n")
EOF
