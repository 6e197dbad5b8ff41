# shellcheck shell=bash disable=SC2034  # variables here are set for the sourcing script
# Shared helpers for the end-to-end scripts (scripts/test_*.sh). Source it, then call lib_init:
#
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   lib_init
#
# The binaries come from the environment: FERRYD, FERRY and (for the impaired tests) FERRY_IMPAIR.
# Every process a script starts is recorded with track_pid and stopped by PID in the EXIT trap;
# every wait has a deadline. Checks are counted and the script ends with summary, which prints
# "N passed, M failed" and exits non-zero if anything failed.

PASSED=0
FAILED=0
SUMMARY_DONE=0
TRACKED_PIDS=()
SEQ=0
TMP=""
LOGS=""

# ---------------------------------------------------------------------------------------------
# Reporting

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
pass() {
  PASSED=$((PASSED + 1))
  printf 'ok   - %s\n' "$*"
}
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL - %s\n' "$*"
}

# check DESC CMD...: passes if CMD exits 0.
check() {
  local desc=$1
  shift
  if "$@"; then pass "$desc"; else fail "$desc"; fi
}

# check_eq DESC EXPECTED ACTUAL
check_eq() {
  if [[ "$3" == "$2" ]]; then
    pass "$1"
  else
    fail "$1: expected '$2', got '$3'"
  fi
}

# check_int DESC A OP B, with OP one of -eq -ne -lt -le -gt -ge (integers, 64-bit).
check_int() {
  local desc=$1 a=$2 op=$3 b=$4
  if [[ "$a" =~ ^-?[0-9]+$ && "$b" =~ ^-?[0-9]+$ ]] && test "$a" "$op" "$b"; then
    pass "$desc ($a $op $b)"
  else
    fail "$desc: expected $a $op $b"
  fi
}

# check_rc DESC EXPECTED_RC: compares with RC of the last run_bounded; shows stderr on failure.
check_rc() {
  if [[ "$RC" == "$2" ]]; then
    pass "$1 (exit $RC)"
  else
    fail "$1: expected exit $2, got $RC; stderr: $(head -c 600 "$RUN_ERR" | tr '\n' '|')"
  fi
}

# summary: stops what the script started, shows the logs if anything failed, prints the final
# line "N passed, M failed" and exits (1 if M > 0).
summary() {
  SUMMARY_DONE=1
  set +e
  stop_tracked
  ((FAILED > 0)) && dump_logs
  printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"
  if ((FAILED > 0)); then exit 1; fi
  exit 0
}

# ---------------------------------------------------------------------------------------------
# Setup and teardown

abs_exe() {  # abs_exe PATH-OR-NAME: absolute path of an executable, or "" if there is none
  local p
  p=$(command -v -- "$1" 2>/dev/null) || return 0
  [[ -x "$p" ]] && realpath -- "$p"
}

lib_init() {
  set -o errtrace
  FERRYD=$(abs_exe "${FERRYD:-}")
  FERRY=$(abs_exe "${FERRY:-}")
  FERRY_IMPAIR=$(abs_exe "${FERRY_IMPAIR:-}")
  if [[ -z "$FERRYD" || -z "$FERRY" ]]; then
    echo "FERRYD and FERRY must name the ferryd and ferry binaries" >&2
    exit 2
  fi
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferry-e2e.XXXXXX")
  LOGS=$TMP/logs
  mkdir -p "$LOGS"
  trap lib_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'echo "error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR
  say "ferryd: $FERRYD"
  say "ferry:  $FERRY"
  say "temp:   $TMP"
}

require_impair() {
  if [[ -z "$FERRY_IMPAIR" ]]; then
    fail "FERRY_IMPAIR is not set to the ferry_impair binary"
    summary
  fi
  say "ferry_impair: $FERRY_IMPAIR"
}

track_pid() { TRACKED_PIDS+=("$1"); }

alive() {  # alive PID: running (a zombie counts as gone)
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]]
}

# wait_gone PID SECONDS: polls until PID has exited; 1 if it is still there at the deadline.
wait_gone() {
  local pid=$1 deadline=$(($(now_us) + $2 * 1000000))
  while alive "$pid"; do
    (($(now_us) < deadline)) || return 1
    sleep 0.02
  done
}

# stop_pid PID [SIGNAL]: signal, wait up to 15 s, then SIGKILL. Sets STOP_RC to the exit status
# if PID is a child of this shell.
stop_pid() {
  local pid=$1 sig=${2:-TERM}
  STOP_RC=""
  if alive "$pid"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 15; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || true
    fi
  fi
  STOP_RC=0
  wait "$pid" 2>/dev/null || STOP_RC=$?
}

stop_tracked() {
  local pid
  for pid in "${TRACKED_PIDS[@]}"; do
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${TRACKED_PIDS[@]}"; do
    if ! wait_gone "$pid" 10; then kill -KILL "$pid" 2>/dev/null; fi
  done
  TRACKED_PIDS=()
}

dump_logs() {
  local f
  [[ -d "$LOGS" ]] || return 0
  for f in "$LOGS"/*; do
    [[ -s "$f" ]] || continue
    printf -- '--- last lines of %s\n' "${f##*/}"
    tail -n 15 "$f"
  done
}

# The EXIT trap: stops every process the script started, removes the temp dir, and if the script
# ended before summary, counts that as a failure and prints the summary line itself.
lib_cleanup() {
  local rc=$?
  trap - ERR
  set +e
  stop_tracked
  if [[ "$SUMMARY_DONE" != 1 ]]; then
    FAILED=$((FAILED + 1))
    printf 'FAIL - the script stopped early (exit status %s)\n' "$rc"
    dump_logs
  fi
  [[ -n "$TMP" ]] && rm -rf -- "$TMP"
  if [[ "$SUMMARY_DONE" != 1 ]]; then
    printf '\n%d passed, %d failed\n' "$PASSED" "$FAILED"
    exit 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Time

now_us() {
  local t=$EPOCHREALTIME
  t=${t//[.,]/}
  echo $((10#$t))
}
# fmt_secs MICROSECONDS -> "1.234"
fmt_secs() { printf '%d.%03d' $(($1 / 1000000)) $((($1 % 1000000) / 1000)); }

# wait_until SECONDS CMD...: polls CMD every 20 ms until it succeeds; 1 at the deadline.
wait_until() {
  local deadline=$(($(now_us) + $1 * 1000000))
  shift
  until "$@"; do
    (($(now_us) < deadline)) || return 1
    sleep 0.02
  done
}

# ---------------------------------------------------------------------------------------------
# Running commands

# run_bounded SECONDS CMD...: runs CMD with stdin from /dev/null under timeout(1). Sets RC,
# RUN_US (wall time in microseconds), and leaves stdout in $RUN_OUT and stderr in $RUN_ERR.
run_bounded() {
  local limit=$1
  shift
  RUN_OUT=$TMP/last.stdout
  RUN_ERR=$TMP/last.stderr
  local t0
  t0=$(now_us)
  RC=0
  timeout -k 5 "$limit" "$@" </dev/null >"$RUN_OUT" 2>"$RUN_ERR" || RC=$?
  RUN_US=$(($(now_us) - t0))
}

# run_ferry ARGS...: the client, bounded by FERRY_LIMIT seconds (default 120).
run_ferry() { run_bounded "${FERRY_LIMIT:-120}" "$FERRY" "$@"; }

# start_bg LIMIT NAME CMD...: starts CMD in the background under timeout(1), so that it is
# bounded even if this script dies and SIGINT is not ignored in it (bash ignores SIGINT in
# plain background jobs). Sets BG_PID (the timeout process, whose exit status is CMD's) and
# BG_CHILD (CMD itself, to signal it directly). Output goes to $LOGS/NAME.out and .err.
start_bg() {
  local limit=$1 name=$2
  shift 2
  timeout -k 5 "$limit" "$@" </dev/null >"$LOGS/$name.out" 2>"$LOGS/$name.err" &
  BG_PID=$!
  track_pid "$BG_PID"
  BG_CHILD=""
  wait_until 10 find_child "$BG_PID" || true
  if [[ -n "$BG_CHILD" ]]; then track_pid "$BG_CHILD"; fi
}
find_child() {
  local c
  c=$(pgrep -P "$1" 2>/dev/null | head -n1) || true
  if [[ -z "$c" && -r "/proc/$1/task/$1/children" ]]; then
    c=$(awk '{print $1}' "/proc/$1/task/$1/children")
  fi
  [[ -n "$c" ]] && BG_CHILD=$c
}

# wait_bg PID SECONDS: waits for a start_bg job; sets RC (124 if it had to be killed).
wait_bg() {
  if ! wait_gone "$1" "$2"; then
    kill -TERM "$1" 2>/dev/null || true
    wait_gone "$1" 10 || kill -KILL "$1" 2>/dev/null || true
  fi
  RC=0
  wait "$1" 2>/dev/null || RC=$?
}

# wait_for_port_line FILE PID SECONDS: waits until FILE holds a complete first line
# "listening on ADDR:PORT" and prints ADDR:PORT. Fails early if PID exits.
wait_for_port_line() {
  local file=$1 pid=$2 deadline=$(($(now_us) + $3 * 1000000)) line
  while :; do
    if [[ -s "$file" ]] && [[ $(head -c 4096 "$file" | wc -l) -ge 1 ]]; then
      line=$(head -n1 "$file")
      if [[ "$line" =~ ^listening\ on\ (.+:[0-9]+)$ ]]; then
        printf '%s\n' "${BASH_REMATCH[1]}"
        return 0
      fi
      echo "unexpected first line from PID $pid: '$line'" >&2
      return 1
    fi
    if ! alive "$pid"; then
      echo "PID $pid exited before printing its address" >&2
      return 1
    fi
    (($(now_us) < deadline)) || {
      echo "no 'listening on' line from PID $pid within $3 s" >&2
      return 1
    }
    sleep 0.02
  done
}

# start_server ROOT [FERRYD ARGS...]: starts ferryd (with --port 0 unless --port is given) and
# sets SRV_PID, SRV_ADDR (as printed) and SRV_PORT. Returns 1 if it did not come up.
start_server() {
  local root=$1
  shift
  local args=("$@")
  [[ " ${args[*]} " == *" --port "* ]] || args+=(--port 0)
  SEQ=$((SEQ + 1))
  SRV_LOG=$LOGS/ferryd.$SEQ
  "$FERRYD" --root "$root" "${args[@]}" </dev/null >"$SRV_LOG.out" 2>"$SRV_LOG.err" &
  SRV_PID=$!
  track_pid "$SRV_PID"
  SRV_ADDR=$(wait_for_port_line "$SRV_LOG.out" "$SRV_PID" 30) || {
    SRV_ADDR=""
    return 1
  }
  SRV_PORT=${SRV_ADDR##*:}
}

# stop_server PID: SIGTERM, bounded wait; STOP_RC holds the exit status.
stop_server() { stop_pid "$1" TERM; }

# server_counters_line PID LOG: sends ferryd PID SIGUSR1 and prints the counters line it then
# adds to LOG (its stderr). Returns 1 if none came within 10 s.
server_counters_line() {
  local pid=$1 log=$2 before
  before=$(grep -c 'msg=counters' "$log" || true)
  kill -USR1 "$pid" || return 1
  # shellcheck disable=SC2317  # called through wait_until
  more_counters() { (($(grep -c 'msg=counters' "$log" || true) > before)); }
  wait_until 10 more_counters || return 1
  grep 'msg=counters' "$log" | tail -n1
}

# server_counter PID LOG KEY: one counter of ferryd PID from a fresh counters line (see above).
server_counter() {
  local line
  line=$(server_counters_line "$1" "$2") || return 1
  tr ' ' '\n' <<<"$line" | awk -F= -v k="$3" '$1 == k { print $2 }'
}

# start_proxy UPSTREAM [FERRY_IMPAIR ARGS...]: sets PROXY_PID, PROXY_ADDR, PROXY_STATS (the
# --stats-file it writes on exit) and PROXY_LOG.
start_proxy() {
  local upstream=$1
  shift
  SEQ=$((SEQ + 1))
  PROXY_LOG=$LOGS/impair.$SEQ
  PROXY_STATS=$TMP/impair.$SEQ.stats
  "$FERRY_IMPAIR" --listen 127.0.0.1:0 --upstream "$upstream" --max-seconds 600 \
    --stats-file "$PROXY_STATS" "$@" </dev/null >"$PROXY_LOG.out" 2>"$PROXY_LOG.err" &
  PROXY_PID=$!
  track_pid "$PROXY_PID"
  PROXY_ADDR=$(wait_for_port_line "$PROXY_LOG.out" "$PROXY_PID" 30) || {
    PROXY_ADDR=""
    return 1
  }
}

# counters_now FILE: asks the last started ferryd for its counters (SIGUSR1) and saves the
# msg=counters event, one line of key=value pairs.
counters_now() {
  local log=$SRV_LOG.err before
  before=$(grep -c 'msg=counters' "$log" || true)
  kill -USR1 "$SRV_PID"
  # shellcheck disable=SC2317  # called through wait_until
  got_counters() { (($(grep -c 'msg=counters' "$log" || true) > before)); }
  wait_until 20 got_counters || return 1
  grep 'msg=counters' "$log" | tail -n1 >"$1"
}

# stat_value FILE KEY: a counter from a proxy --stats-file (key=value lines).
stat_value() { awk -F= -v k="$2" '$1 == k { print $2 }' "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Data and files

# gen_random FILE SIZE SEED: SIZE bytes of pseudo-random data, the same for the same SEED.
gen_random() {
  local file=$1 size=$2 seed=$3
  if command -v openssl >/dev/null; then
    { openssl enc -aes-128-ctr -pass "pass:ferry-$seed" -nosalt </dev/zero 2>/dev/null || true; } |
      head -c "$size" >"$file"
  else
    python3 - "$file" "$size" "$seed" <<'EOF'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random("ferry-" + seed)
with open(path, "wb") as f:
    while size > 0:
        n = min(size, 1 << 20)
        f.write(rng.randbytes(n))
        size -= n
EOF
  fi
  [[ $(stat -c %s "$file") == "$size" ]]
}

file_size() { stat -c %s -- "$1"; }
allocated_bytes() { echo $(($(stat -c '%b * %B' -- "$1"))); }

# part_done_blocks STATE_FILE: blocks marked done in a .part.state file (0 if unreadable).
part_done_blocks() {
  python3 - "$1" <<'EOF' 2>/dev/null || echo 0
import sys
try:
    data = open(sys.argv[1], "rb").read()
except OSError:
    print(0); sys.exit()
if len(data) < 72 or data[:8] != b"FERRYST1":
    print(0); sys.exit()
print(sum(bin(b).count("1") for b in data[64:-8]))
EOF
}

# no_part_files DIR: true if DIR holds no *.part or *.part.state.
no_part_files() {
  [[ -z $(find "$1" \( -name '*.part' -o -name '*.part.state' \) -print -quit) ]]
}

# ---------------------------------------------------------------------------------------------
# JSON

# json_get FILE KEY: a top-level field of the JSON object in FILE.
json_get() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(json.dumps(v) if isinstance(v, (dict, list, bool)) or v is None else v)' "$1" "$2"
}

# is_json FILE: FILE holds exactly one valid JSON document.
is_json() { python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Processes

# proc_kb PID FIELD: a "kB" field of /proc/PID/status (VmHWM, VmRSS, ...).
proc_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null; }

# reset_peak_rss PID: restarts VmHWM from the current RSS; 1 if the kernel refuses.
reset_peak_rss() { { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null; }

# free_udp_port: a UDP port on 127.0.0.1 that nothing is bound to right now.
free_udp_port() {
  python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
# Installing from a build tree

# no_match ERE FILE: FILE has no line that matches.
no_match() { ! grep -Eq -- "$1" "$2"; }

# locked_keep_manifest CMD...: runs CMD holding a lock on the build directory $BUILD (the
# package and service tests both install from it, and ctest may run them at once), then puts
# $BUILD/install_manifest.txt back as it was before. The manifest CMD wrote is left in
# $TMP/install_manifest.last.
locked_keep_manifest() {
  local manifest=$BUILD/install_manifest.txt saved=$TMP/install_manifest.saved had=0 rc=0 fd
  rm -f -- "$TMP/install_manifest.last"
  exec {fd}<"$BUILD"
  if ! flock -w 300 "$fd"; then
    exec {fd}<&-
    echo "could not lock $BUILD within 300 s" >&2
    return 1
  fi
  if [[ -e $manifest ]]; then
    cp -p -- "$manifest" "$saved"
    had=1
  fi
  "$@" || rc=$?
  if [[ -e $manifest ]]; then cp -- "$manifest" "$TMP/install_manifest.last"; fi
  if ((had)); then cp -p -- "$saved" "$manifest"; else rm -f -- "$manifest"; fi
  exec {fd}<&-
  return "$rc"
}
