#!/usr/bin/env bash
# Kill and resume: a get interrupted by SIGKILL or SIGINT leaves OUT.part and OUT.part.state and
# the same command resumes it; a get whose server is SIGKILLed and restarted on the same port
# carries on. The transfers go through ferry_impair --rate so that they last long enough.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
require_impair

ROOT=$TMP/root
mkdir -p "$ROOT"
SIZE=$((60 * 1024 * 1024))
RATE=20M
gen_random "$ROOT/data.bin" "$SIZE" 11

start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
pass "ferryd started on $SRV_ADDR"
ADDR=$SRV_ADDR

# Blocks whose bit is set in STATE must hold the source's bytes in PART.
cat >"$TMP/verify_part.py" <<'EOF'
import struct, sys
state_path, part, src = sys.argv[1:4]
state = open(state_path, "rb").read()
if state[:8] != b"FERRYST1":
    print("no valid state header"); sys.exit(1)
block = struct.unpack_from("<I", state, 48)[0]
bits = state[64:-8]
bad = done = 0
with open(part, "rb") as p, open(src, "rb") as s:
    for i in range(len(bits) * 8):
        if not bits[i // 8] >> (i % 8) & 1: continue
        done += 1
        p.seek(i * block); s.seek(i * block)
        if p.read(block) != s.read(block): bad += 1
print(f"{done} blocks marked done (block {block} bytes), {bad} of them differ from the source")
sys.exit(1 if bad or not done else 0)
EOF

# interrupt_get LABEL SIGNAL FILE: in $TMP/LABEL, start `ferry get PROXY FILE` through a
# rate-limited proxy, send SIGNAL to the client once the state file records 10% of the blocks,
# and check what it leaves behind. Sets DONE_NOW (blocks in the state file left behind).
interrupt_get() {
  local label=$1 sig=$2 file=$3 dir=$TMP/$1
  DONE_NOW=0
  mkdir -p "$dir"
  cd "$dir"
  start_proxy "$ADDR" --rate "$RATE" --seed 7 || {
    fail "$label: ferry_impair started"
    return 1
  }
  start_bg 120 "$label-client" "$FERRY" get "$PROXY_ADDR" "$file"
  if [[ -z "$BG_CHILD" ]]; then
    fail "$label: found the client's PID"
    return 1
  fi
  # The state file is flushed every 0.5 s; wait for it to record at least 10% of the blocks.
  local want=$((SIZE / 65024 / 10))
  enough() { (($(part_done_blocks "$file.part.state") >= want)) || ! alive "$BG_CHILD"; }
  wait_until 60 enough || fail "$label: the state file did not record $want blocks within 60 s"
  local done_at_kill
  done_at_kill=$(part_done_blocks "$file.part.state")
  kill "-$sig" "$BG_CHILD" 2>/dev/null || true
  wait_bg "$BG_PID" 30
  local signum
  signum=$(kill -l "$sig")
  check_eq "$label: the client died of SIG$sig (it had not finished)" $((128 + signum)) "$RC"
  stop_pid "$PROXY_PID"
  check "$label: $file.part exists" test -f "$file.part"
  check "$label: $file.part.state exists" test -f "$file.part.state"
  check "$label: $file does not exist" test ! -e "$file"
  DONE_NOW=$(part_done_blocks "$file.part.state")
  say "$label: $done_at_kill blocks recorded when signalled, $DONE_NOW in the state file left behind"
  check_int "$label: the state file records some blocks" "$DONE_NOW" -gt 0
  run_bounded 60 python3 "$TMP/verify_part.py" "$file.part.state" "$file.part" "$ROOT/$file"
  cat "$RUN_OUT"
  check_rc "$label: every block the state marks done holds the right bytes" 0
}

# resume LABEL FILE [GET ARGS...]: rerun the get directly against the server with --json and
# check the result. Sets RESUMED, FETCHED, BLOCK (from the JSON).
resume() {
  local label=$1 file=$2 dir=$TMP/$1
  shift 2
  cd "$dir"
  run_ferry get "$ADDR" "$file" --json "$@"
  cp "$RUN_OUT" "$dir/resume.json"
  cp "$RUN_ERR" "$dir/resume.err"
  check_rc "$label: the rerun completes" 0
  if cmp -s "$file" "$ROOT/$file"; then pass "$label: identical to the source"; else fail "$label: differs from the source"; fi
  check "$label: no .part or .part.state left" no_part_files "$dir"
  RESUMED=-1 FETCHED=-1 BLOCK=-1
  if is_json "$dir/resume.json"; then
    RESUMED=$(json_get "$dir/resume.json" resumed_bytes)
    FETCHED=$(json_get "$dir/resume.json" bytes_fetched)
    BLOCK=$(json_get "$dir/resume.json" block_size)
    local size
    size=$(json_get "$dir/resume.json" size)
    say "$label: resumed_bytes=$RESUMED bytes_fetched=$FETCHED block_size=$BLOCK size=$size"
    check_eq "$label: size in --json" "$SIZE" "$size"
  else
    fail "$label: get --json printed valid JSON"
  fi
  cd "$TMP"
}

# check_resumed LABEL: the rerun used the part file and fetched only what was missing.
check_resumed() {
  local label=$1
  check_int "$label: resumed_bytes > 0" "$RESUMED" -gt 0
  check_int "$label: resumed_bytes matches the state file (<= done blocks x block)" \
    "$RESUMED" -le $((DONE_NOW * BLOCK))
  check_int "$label: bytes_fetched <= size - resumed_bytes + one block" \
    "$FETCHED" -le $((SIZE - RESUMED + BLOCK))
  check_int "$label: bytes_fetched >= size - resumed_bytes" "$FETCHED" -ge $((SIZE - RESUMED))
}

section "SIGKILL, then the same command again"
if interrupt_get sigkill KILL data.bin; then
  resume sigkill data.bin
  check_resumed sigkill
fi

section "SIGINT (Ctrl-C), then the same command with another --block-size"
if interrupt_get sigint INT data.bin; then
  resume sigint data.bin --block-size 4096
  check_eq "sigint: the resumed get keeps the block size of the first run" 65024 "$BLOCK"
  check_resumed sigint
fi

section "the source changed between the runs"
gen_random "$ROOT/changing.bin" "$SIZE" 12
if interrupt_get changed KILL changing.bin; then
  gen_random "$ROOT/changing.bin.new" "$SIZE" 13
  mv "$ROOT/changing.bin.new" "$ROOT/changing.bin"
  resume changed changing.bin
  check_eq "changed: nothing is resumed from the old version" 0 "$RESUMED"
fi

section "a damaged block in OUT.part is caught by the digest"
gen_random "$ROOT/damaged.bin" "$SIZE" 14
if interrupt_get damaged KILL damaged.bin; then
  # Flip one byte in the first block the state marks done.
  python3 - "$TMP/damaged/damaged.bin.part.state" "$TMP/damaged/damaged.bin.part" <<'EOF'
import struct, sys
state = open(sys.argv[1], "rb").read()
block = struct.unpack_from("<I", state, 48)[0]
bits = state[64:-8]
first = next(i for i in range(len(bits) * 8) if bits[i // 8] >> (i % 8) & 1)
with open(sys.argv[2], "r+b") as f:
    f.seek(first * block + 100)
    b = f.read(1)
    f.seek(first * block + 100)
    f.write(bytes([b[0] ^ 0xFF]))
print(f"flipped byte {first * block + 100} (block {first})")
EOF
  resume damaged damaged.bin
  check "damaged: the client reported the digest mismatch" grep -qi 'digest' "$TMP/damaged/resume.err"
  check_int "damaged: the whole file was fetched again after the mismatch" "$FETCHED" -ge "$SIZE"
fi

section "a garbage OUT.part.state is ignored"
mkdir -p "$TMP/garbage"
gen_random "$TMP/garbage/data.bin.part.state" 5000 15
gen_random "$TMP/garbage/data.bin.part" 12345 16
resume garbage data.bin
check_eq "garbage: nothing is resumed from a state file that does not check out" 0 "$RESUMED"

section "a huge file under the state file's name is not read whole"
# 64 GiB, sparse: the client must judge it by its header and size, not allocate it.
mkdir -p "$TMP/huge"
truncate -s 64G "$TMP/huge/data.bin.part.state"
resume huge data.bin
check_eq "huge: nothing is resumed from it" 0 "$RESUMED"

section "a symbolic link under OUT.part or OUT.part.state is never written through"
for name in data.bin.part data.bin.part.state; do
  mkdir -p "$TMP/link-$name"
  printf 'keep' >"$TMP/link-$name/victim"
  ln -s victim "$TMP/link-$name/$name"
  run_ferry get "$ADDR" data.bin -o "$TMP/link-$name/data.bin"
  check_rc "$name is a symlink: local I/O error" 6
  check "$name is a symlink: the error says why" grep -q "symbolic link" "$RUN_ERR"
  check_eq "$name is a symlink: its target is untouched" keep "$(cat "$TMP/link-$name/victim")"
  check "$name is a symlink: no output file" test ! -e "$TMP/link-$name/data.bin"
done

section "server SIGKILLed mid-transfer and restarted on the same port"
dir=$TMP/server-restart
mkdir -p "$dir"
cd "$dir"
start_proxy "$ADDR" --rate "$RATE" --seed 9 || {
  fail "ferry_impair started"
  summary
}
start_bg 180 restart-client "$FERRY" get "$PROXY_ADDR" data.bin --timeout 20 --json
want=$((SIZE / 65024 / 5))
enough() { (($(part_done_blocks data.bin.part.state) >= want)) || ! alive "$BG_PID"; }
wait_until 60 enough || fail "the state file did not record $want blocks within 60 s"
OLD_PID=$SRV_PID
OLD_ADDR=$SRV_ADDR
kill -KILL "$OLD_PID"
wait_gone "$OLD_PID" 10 || true
stop_pid "$OLD_PID" KILL
check_eq "ferryd died of SIGKILL" 137 "$STOP_RC"
say "server down with $(part_done_blocks data.bin.part.state) blocks recorded"
check "the client is still running while the server is down" alive "$BG_PID"
# An outage the client has to ride out, longer than several of its retransmission timeouts.
sleep 2
check "the client is still running after 2 s without a server" alive "$BG_PID"
start_server "$ROOT" --port "$SRV_PORT" || fail "ferryd restarted on port $SRV_PORT"
check_eq "the new ferryd listens on the same address" "$OLD_ADDR" "$SRV_ADDR"
wait_bg "$BG_PID" 150
check_eq "the client completes after the restart (exit status)" 0 "$RC"
if [[ "$RC" != 0 ]]; then tail -n 5 "$LOGS/restart-client.err"; fi
if cmp -s data.bin "$ROOT/data.bin"; then pass "identical to the source"; else fail "differs from the source"; fi
check "no .part or .part.state left" no_part_files "$dir"
if is_json "$LOGS/restart-client.out"; then
  say "client summary: retransmits=$(json_get "$LOGS/restart-client.out" retransmits)" \
    "restarts=$(json_get "$LOGS/restart-client.out" restarts)" \
    "seconds=$(json_get "$LOGS/restart-client.out" seconds)"
  check_eq "the file was not restarted from scratch (restarts)" 0 "$(json_get "$LOGS/restart-client.out" restarts)"
else
  fail "get --json printed valid JSON"
fi
stop_pid "$PROXY_PID"
cd "$TMP"

stop_server "$SRV_PID"
check_eq "ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
summary
