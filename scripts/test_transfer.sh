#!/usr/bin/env bash
# End to end: fetch a tree of awkward files (empty, 1 byte, exact and exact+1 blocks, 200 MiB
# random, 5 GiB sparse, spaces, leading dash, UTF-8, nested), compare every byte, and compare a
# recursive `ferry ls --json` walk with the real tree. Prints transfer and listing times and
# ferryd's peak RSS.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

ROOT=$TMP/root
DL=$TMP/dl
mkdir -p "$ROOT" "$DL"

section "generating the tree"
: >"$ROOT/empty.txt"
printf 'x' >"$ROOT/one.bin"
gen_random "$ROOT/exact-4k.bin" $((16 * 4096)) 1
gen_random "$ROOT/exact-4k-plus1.bin" $((16 * 4096 + 1)) 2
gen_random "$ROOT/big-200M.bin" $((200 * 1024 * 1024)) 3
truncate -s 5G "$ROOT/sparse-5G.bin"
# Markers: the first byte, the middle of the first GiB, both sides of 4 GiB, the last byte.
for off in 0 $((512 * 1024 * 1024 + 12345)) $((4 * 1024 * 1024 * 1024 - 1)) \
  $((4 * 1024 * 1024 * 1024 + 4097)) $((5 * 1024 * 1024 * 1024 - 1)); do
  printf 'M' | dd of="$ROOT/sparse-5G.bin" bs=1 seek="$off" conv=notrunc status=none
done
printf 'spaces\n' >"$ROOT/name with spaces.txt"
printf 'dash\n' >"$ROOT/-dash.txt"
printf 'utf8\n' >"$ROOT/naïve-日本.txt"
BAD_NAME=$(printf 'not-utf8-\377.txt')
printf 'latin1\n' >"$ROOT/$BAD_NAME"
mkdir -p "$ROOT/sub/nested"
gen_random "$ROOT/sub/in-sub.bin" 100000 4
gen_random "$ROOT/sub/nested/deep file.bin" 70001 5
ln -s one.bin "$ROOT/link-to-one"
python3 - "$ROOT/bigdir" <<'EOF'
import os, sys
d = sys.argv[1]
os.mkdir(d)
for i in range(100000):
    os.close(os.open(os.path.join(d, format(i, "x")), os.O_CREAT | os.O_WRONLY, 0o644))
EOF
say "tree ready: $(find "$ROOT" | wc -l) paths"

start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
ADDR=$SRV_ADDR
pass "ferryd started on $ADDR"

cd "$DL"

# fetch LABEL REMOTE [ARGS...]: ferry get ADDR ARGS... REMOTE (REMOTE after "--").
fetch() {
  local label=$1 remote=$2
  shift 2
  run_ferry get "$ADDR" "$@" --json -- "$remote"
  cp "$RUN_OUT" "$TMP/$label.json" 2>/dev/null || true
  check_rc "get $label" 0
}
# same LABEL SOURCE COPY
same() {
  if cmp -s -- "$2" "$3"; then pass "$1: identical to the source"; else fail "$1: differs from the source"; fi
}

section "small and edge-size files"
fetch empty empty.txt
same empty "$ROOT/empty.txt" ./empty.txt
fetch one one.bin
same one "$ROOT/one.bin" ./one.bin
DEFAULT_BLOCK=$(json_get "$TMP/one.json" block_size)
say "default block size on this path: $DEFAULT_BLOCK"
check_int "default block size is at least 512" "$DEFAULT_BLOCK" -ge 512
gen_random "$ROOT/exact-def.bin" $((8 * DEFAULT_BLOCK)) 6
gen_random "$ROOT/exact-def-plus1.bin" $((8 * DEFAULT_BLOCK + 1)) 7
for f in exact-4k exact-4k-plus1 exact-def exact-def-plus1; do
  fetch "$f.bs4096" "$f.bin" --block-size 4096 -o "$f.bs4096"
  same "$f.bin with --block-size 4096" "$ROOT/$f.bin" "./$f.bs4096"
  check_eq "$f.bin: block_size in --json" 4096 "$(json_get "$TMP/$f.bs4096.json" block_size)"
  fetch "$f.default" "$f.bin" -o "$f.default"
  same "$f.bin with the default block size" "$ROOT/$f.bin" "./$f.default"
  check_eq "$f.bin: bytes_fetched" "$(file_size "$ROOT/$f.bin")" \
    "$(json_get "$TMP/$f.default.json" bytes_fetched)"
done

section "names"
fetch spaces "name with spaces.txt"
same "name with spaces.txt" "$ROOT/name with spaces.txt" "./name with spaces.txt"
fetch dash -dash.txt
same "-dash.txt (after --)" "$ROOT/-dash.txt" "./-dash.txt"
fetch utf8 "naïve-日本.txt"
same "naïve-日本.txt" "$ROOT/naïve-日本.txt" "./naïve-日本.txt"
fetch badname "$BAD_NAME"
same "a name that is not UTF-8 (byte 0xff)" "$ROOT/$BAD_NAME" "./$BAD_NAME"
fetch in-sub sub/in-sub.bin
same "sub/in-sub.bin (written as ./in-sub.bin)" "$ROOT/sub/in-sub.bin" ./in-sub.bin
fetch deep "sub/nested/deep file.bin"
same "sub/nested/deep file.bin" "$ROOT/sub/nested/deep file.bin" "./deep file.bin"
fetch link link-to-one
same "link-to-one (symlink inside the root)" "$ROOT/one.bin" ./link-to-one

section "200 MiB random file"
reset_peak_rss "$SRV_PID" || say "note: cannot reset VmHWM; the peak below covers the server's whole life"
FERRY_LIMIT=360 fetch big big-200M.bin
BIG_US=$RUN_US
same big-200M.bin "$ROOT/big-200M.bin" ./big-200M.bin
HWM_BIG=$(proc_kb "$SRV_PID" VmHWM)
say "FIGURE: 200 MiB fetch: $(fmt_secs "$BIG_US") s wall," \
  "$(json_get "$TMP/big.json" seconds) s in the client," \
  "$(python3 -c 'import sys; print(round(float(sys.argv[1]) / 1e6, 1))' "$(json_get "$TMP/big.json" rate_bytes_per_s)") MB/s," \
  "retransmits $(json_get "$TMP/big.json" retransmits)"
say "FIGURE: ferryd peak RSS during the 200 MiB fetch: ${HWM_BIG} kB (VmRSS now $(proc_kb "$SRV_PID" VmRSS) kB)"
rm -f ./big-200M.bin

section "5 GiB sparse file"
FERRY_LIMIT=540 fetch sparse sparse-5G.bin
SPARSE_US=$RUN_US
check_eq "sparse-5G.bin: size" $((5 * 1024 * 1024 * 1024)) "$(file_size ./sparse-5G.bin 2>/dev/null || echo missing)"
same sparse-5G.bin "$ROOT/sparse-5G.bin" ./sparse-5G.bin
ALLOC=$(allocated_bytes ./sparse-5G.bin 2>/dev/null || echo 0)
check_int "the copy of the sparse file stays sparse (allocated bytes < 64 MiB)" "$ALLOC" -lt $((64 * 1024 * 1024))
say "FIGURE: 5 GiB sparse fetch: $(fmt_secs "$SPARSE_US") s wall, $(json_get "$TMP/sparse.json" seconds) s in the client"
rm -f ./sparse-5G.bin

section "leftovers"
check "no .part or .part.state left in the download directory" no_part_files "$DL"

section "listing 100,000 entries"
reset_peak_rss "$SRV_PID" || true
run_bounded 300 bash -c '"$1" ls "$2" bigdir | wc -l' _ "$FERRY" "$ADDR"
LIST_US=$RUN_US
check_rc "ferry ls ADDR bigdir | wc -l" 0
check_eq "ferry ls bigdir prints 100000 lines" 100000 "$(tr -d ' ' <"$RUN_OUT")"
HWM_LIST=$(proc_kb "$SRV_PID" VmHWM)
say "FIGURE: listing 100,000 entries: $(fmt_secs "$LIST_US") s"
say "FIGURE: ferryd peak RSS during the listing: ${HWM_LIST} kB"

section "recursive ferry ls --json against the real tree"
cat >"$TMP/walk.py" <<'EOF'
import json, os, stat, subprocess, sys
ferry, addr, root = sys.argv[1:4]

def kind(st):
    if stat.S_ISREG(st.st_mode): return "file"
    if stat.S_ISDIR(st.st_mode): return "dir"
    if stat.S_ISLNK(st.st_mode): return "symlink"
    return "other"

def remote(rel):
    cmd = [ferry, "ls", addr] + ([rel] if rel else []) + ["--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=120).stdout
    return json.loads(out)

problems, compared, dirs = [], 0, 0
todo = [""]
while todo:
    rel = todo.pop()
    dirs += 1
    entries = remote(rel)
    got = {}
    for e in entries:
        # Names that are not UTF-8 come with their exact bytes in name_hex.
        raw = bytes.fromhex(e["name_hex"]) if "name_hex" in e else e["name"].encode()
        name = os.fsdecode(raw)
        if name in got: problems.append(f"{rel}/{name!r}: listed twice")
        got[name] = e
    want = {}
    for name in os.listdir(os.path.join(root, rel)):
        st = os.lstat(os.path.join(root, rel, name))
        size = st.st_size if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else 0
        want[name] = (kind(st), size)
    for name in sorted(set(want) | set(got)):
        where = f"{rel}/{name}" if rel else name
        where = os.fsencode(where).decode("utf-8", "backslashreplace")
        if name not in got: problems.append(f"{where}: missing from the listing"); continue
        if name not in want: problems.append(f"{where}: listed but not on disk"); continue
        e = got[name]
        if (e["type"], e["size"]) != want[name]:
            problems.append(f"{where}: listed {e['type']} {e['size']}, on disk {want[name]}")
        for key in ("mtime", "mtime_ns"):
            if not isinstance(e.get(key), int): problems.append(f"{where}: no integer {key}")
        compared += 1
        if e["type"] == "dir": todo.append(os.path.join(rel, name) if rel else name)
print(f"compared {compared} entries in {dirs} directories")
for p in problems[:20]: print("  " + p)
sys.exit(1 if problems else 0)
EOF
run_bounded 300 python3 "$TMP/walk.py" "$FERRY" "$ADDR" "$ROOT"
cat "$RUN_OUT" "$RUN_ERR"
check_rc "every name, type and size in the listing matches os.lstat" 0
WALKED=$(sed -n 's/^compared \([0-9]*\) entries.*/\1/p' "$RUN_OUT")
check_int "the walk compared every path of the tree" "${WALKED:-0}" -eq "$(find "$ROOT" -mindepth 1 | wc -l)"

section "ferry ls -l"
run_ferry ls "$ADDR" -l
check_rc "ferry ls ADDR -l" 0
check_eq "ls -l prints one line per entry of the root" "$(find "$ROOT" -mindepth 1 -maxdepth 1 | wc -l)" \
  "$(wc -l <"$RUN_OUT")"
check "ls -l shows 'name with spaces.txt' at the end of a line" grep -q ' name with spaces\.txt$' "$RUN_OUT"
check "ls -l shows the 5 GiB size" grep -Eq '^- +5368709120 .* sparse-5G\.bin$' "$RUN_OUT"
check "ls -l marks sub as a directory" grep -Eq '^d .* sub$' "$RUN_OUT"

section "shutdown"
stop_server "$SRV_PID"
check_eq "ferryd exits 0 on SIGTERM" 0 "$STOP_RC"

section "a sparse file on tmpfs is served without filling its holes"
# ferryd sends cached blocks from a mapping of the file. A hole of a tmpfs file, mapped and
# read, would be filled with pages of zeros: the file on the server would grow to its full size
# in memory. Holes must be read, not mapped.
if [[ -d /dev/shm && -w /dev/shm && $(stat -f -c %T /dev/shm) == tmpfs ]]; then
  SHM=$(mktemp -d /dev/shm/ferry-transfer.XXXXXX)
  trap 'rm -rf -- "$SHM"; lib_cleanup' EXIT
  truncate -s 1G "$SHM/holes.bin"
  printf 'M' | dd of="$SHM/holes.bin" bs=1 seek=$((512 * 1024 * 1024)) conv=notrunc status=none
  BEFORE=$(allocated_bytes "$SHM/holes.bin")
  start_server "$SHM" || fail "ferryd on /dev/shm started"
  run_ferry get "$SRV_ADDR" -o "$DL/holes.bin" -- holes.bin
  check_rc "get of a 1 GiB sparse file from tmpfs" 0
  same holes.bin "$SHM/holes.bin" "$DL/holes.bin"
  AFTER=$(allocated_bytes "$SHM/holes.bin")
  say "FIGURE: the 1 GiB sparse source held $BEFORE bytes before the fetch, $AFTER after"
  check_int "the source on the server still holds under 1 MiB" "$AFTER" -lt $((1024 * 1024))
  check_int "ferryd's peak RSS (kB) stayed small" "$(proc_kb "$SRV_PID" VmHWM)" -lt $((64 * 1024))
  stop_server "$SRV_PID"
  rm -f -- "$DL/holes.bin"
else
  say "SKIP - /dev/shm is not a writable tmpfs here"
fi

cd "$TMP"
summary
