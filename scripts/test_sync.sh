#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check and wait_until
# ferry sync: a 500-file tree (nested directories, empty to a few MiB) is mirrored and compared
# with diff -r; after changes to the source a second sync moves only what changed, proved by the
# sync's bytes_fetched and by ferryd's own bytes_out counter; --dry-run prints rsync-style lines
# and changes nothing; --delete removes what the server lacks but keeps the .part files of files
# it still has; a symlink and a FIFO on the server are reported and skipped; a local symlink
# where the server has a file or a directory is never written through; a sync killed in the
# middle of a large file resumes it; an unchanged file costs no STAT; with --mirror, files come
# from both servers, and a sync goes on when the primary dies.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
require_impair

ROOT=$TMP/root
OUT=$TMP/out
mkdir -p "$ROOT/tree"

# 500 regular files in nested directories: a third empty or tiny, most up to 300 KiB, three of
# 2 to 3 MiB. The same seed gives the same tree.
python3 - "$ROOT/tree" <<'EOF'
import os, random, sys
top = sys.argv[1]
rng = random.Random(5)
for i in range(500):
    d = os.path.join(top, f"d{i % 7}", f"s{i % 3}") if i % 5 else os.path.join(top, f"d{i % 7}")
    if i % 11 == 0:
        d = os.path.join(d, "deep", "deeper")
    os.makedirs(d, exist_ok=True)
    if i in (17, 250, 444):
        size = rng.randint(2 << 20, 3 << 20)
    elif i % 3 == 0:
        size = rng.randint(0, 100)
    else:
        size = rng.randint(1000, 300 << 10)
    with open(os.path.join(d, f"f{i:03d}.bin"), "wb") as f:
        f.write(rng.randbytes(size))
EOF
mkdir -p "$ROOT/tree/odd"
ln -s ../d0/f000.bin "$ROOT/tree/odd/link"
mkfifo "$ROOT/tree/odd/fifo"
NFILES=$(find "$ROOT/tree" -type f | wc -l)
TREE_BYTES=$(find "$ROOT/tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
say "source tree: $NFILES files, $TREE_BYTES bytes"

start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
pass "ferryd started on $SRV_ADDR"

# fingerprint DIR: every name below DIR with its type, size and mtime, one line each.
fingerprint() { find "$1" -printf '%P %y %s %T@\n' | sort; }

# same_mtimes A B: every regular file below A has the same mtime (to the nanosecond) below B.
same_mtimes() {
  python3 - "$1" "$2" <<'EOF'
import os, sys
a, b = sys.argv[1:3]
bad = 0
for d, _, files in os.walk(a):
    for f in files:
        p = os.path.join(d, f)
        if not os.path.isfile(p) or os.path.islink(p):
            continue
        q = os.path.join(b, os.path.relpath(p, a))
        if os.lstat(p).st_mtime_ns != os.lstat(q).st_mtime_ns:
            bad += 1
sys.exit(1 if bad else 0)
EOF
}

# sync_json LABEL ARGS...: ferry sync --json ARGS; the object is left in $TMP/LABEL.json.
sync_json() {
  local label=$1
  shift
  run_ferry sync --json "$@"
  cp "$RUN_OUT" "$TMP/$label.json"
  cp "$RUN_ERR" "$TMP/$label.err"
  is_json "$TMP/$label.json" || fail "$label: --json printed one JSON object"
}
jget() { json_get "$TMP/$1.json" "$2" 2>/dev/null || echo "?"; }

section "first sync of the whole tree"
t0=$(now_us)
sync_json first "$SRV_ADDR" tree "$OUT"
check_rc "first sync" 0
say "FIGURE: first sync of $NFILES files, $TREE_BYTES bytes: $(fmt_secs $(($(now_us) - t0))) s"
check_eq "files_fetched is the number of files" "$NFILES" "$(jget first files_fetched)"
check_eq "bytes_fetched is the size of the tree" "$TREE_BYTES" "$(jget first bytes_fetched)"
check "diff -r finds no difference but the symlink and the FIFO" \
  diff -r -x link -x fifo "$ROOT/tree" "$OUT"
check "every file has the server's mtime, to the nanosecond" same_mtimes "$ROOT/tree" "$OUT"
check_eq "the symlink is reported in --json" '["odd/link"]' "$(jget first symlinks)"
check_eq "the FIFO is reported in --json" '["odd/fifo"]' "$(jget first specials)"
check "the symlink is reported on stderr" grep -q "symlink 'odd/link'" "$TMP/first.err"
check "the FIFO is reported on stderr" grep -q "special file 'odd/fifo'" "$TMP/first.err"
check "the symlink was not followed" test ! -e "$OUT/odd/link" -a ! -L "$OUT/odd/link"
check "the FIFO was not made" test ! -e "$OUT/odd/fifo"
check "no .part files are left" no_part_files "$OUT"

section "a second sync with nothing changed"
S0=$(server_counter "$SRV_PID" "$SRV_LOG.err" requests_stat) || S0=""
sync_json again "$SRV_ADDR" tree "$OUT"
check_rc "second sync" 0
S1=$(server_counter "$SRV_PID" "$SRV_LOG.err" requests_stat) || S1=""
check_eq "nothing fetched" 0 "$(jget again files_fetched)"
check_eq "no bytes fetched" 0 "$(jget again bytes_fetched)"
check_eq "every file skipped by the quick check" "$NFILES" "$(jget again files_skipped)"
if [[ -n "$S0" && -n "$S1" ]]; then
  say "FIGURE: sync of an unchanged tree of $NFILES files: $((S1 - S0)) STAT requests"
  # The listing's sizes and mtimes judge every file, so an unchanged one costs no STAT.
  check_int "ferryd counted no STAT per unchanged file (the listing judges them)" \
    $((S1 - S0)) -lt 10
else
  fail "ferryd printed its counters on SIGUSR1"
fi

section "arguments"
run_ferry sync "$SRV_ADDR" tree "$OUT" --mirror 'no port:x'
check_rc "a --mirror that is not an address is a usage error" 2
run_ferry sync "$SRV_ADDR" ../x "$OUT"
check_rc "a REMOTE_DIR with .. is a usage error" 2
run_ferry sync "$SRV_ADDR" tree/d0/s0/f021.bin "$OUT"
check_rc "a REMOTE_DIR that is a file is refused" 3
run_ferry sync "$SRV_ADDR" tree "$OUT/d0/s0/f021.bin"
check_rc "a LOCAL_DIR that is a file is a usage error" 2
run_ferry sync "$SRV_ADDR" no-such-dir "$TMP/never-made"
check_rc "a REMOTE_DIR that does not exist is refused" 3
check "the refusal names it" grep -q "no-such-dir/\?: no such file or directory" "$RUN_ERR"
check "and nothing is created for it" test ! -e "$TMP/never-made"
run_ferry sync "$SRV_ADDR" tree/d0/s0/f021.bin "$TMP/never-made"
check_rc "a REMOTE_DIR that is a file is refused" 3
check "and nothing is created for it either" test ! -e "$TMP/never-made"

section "changes on the server"
T=$ROOT/tree
C1=d1/s1/f001.bin C2=d2/s2/f002.bin C3=d4/s1/f004.bin C4=d1/s2/f008.bin C5=d6/s1/f013.bin
head -c 777 /dev/urandom >>"$T/$C1"                 # content and size
truncate -s 999 "$T/$C2"                           # content and size
M3=$(stat -c %Y "$T/$C3")                           # same size, new content and a new mtime
gen_random "$TMP/c3" "$(file_size "$T/$C3")" 31 && cp "$TMP/c3" "$T/$C3"
touch -d "@$((M3 + 100))" "$T/$C3"
cp -p "$T/$C4" "$TMP/c4.old"                        # same size and mtime, new content
gen_random "$TMP/c4" "$(file_size "$T/$C4")" 32 && cp "$TMP/c4" "$T/$C4"
touch -r "$TMP/c4.old" "$T/$C4"
touch -d "@$(($(stat -c %Y "$T/$C5") + 200))" "$T/$C5"   # only the mtime
mkdir -p "$T/newdir"
gen_random "$T/new1.bin" 5000 41
gen_random "$T/newdir/new2.bin" 123456 42
gen_random "$T/d3/new3.bin" 65025 43
R1=d0/s1/f007.bin R2=d3/s0/f003.bin
rm "$T/$R1" "$T/$R2"
CHANGED_BYTES=$(($(file_size "$T/$C1") + $(file_size "$T/$C2") + $(file_size "$T/$C3") + 5000 +
  123456 + 65025))
say "bytes in changed and added files: $CHANGED_BYTES"

# A partial download of a file still on the server, and one of a file that is not. Directories
# get the server's mtime back, as rsync -t gives them: those a name was added to or removed from
# on the server (d3, d0/s1, d3/s0), and d0/s2, whose local mtime the .part below changes.
printf 'partial' >"$OUT/d0/s2/f014.bin.part"
printf 'stray' >"$OUT/gone.bin.part"

cat >"$TMP/expected.lines" <<EOF
>f+++++++++ d3/new3.bin
>f+++++++++ new1.bin
cd+++++++++ newdir/
>f+++++++++ newdir/new2.bin
>f.st...... $C1
>f.st...... $C2
>f..t...... $C3
.f..t...... $C5
.d..t...... d0/s1/
.d..t...... d0/s2/
.d..t...... d3/
.d..t...... d3/s0/
*deleting   $R1
*deleting   $R2
*deleting   gone.bin.part
EOF
sort -o "$TMP/expected.lines" "$TMP/expected.lines"

section "--dry-run --delete"
fingerprint "$OUT" >"$TMP/before.fp"
run_ferry sync "$SRV_ADDR" tree "$OUT" --dry-run --delete
check_rc "dry run" 0
sort "$RUN_OUT" >"$TMP/dry.lines"
if diff "$TMP/expected.lines" "$TMP/dry.lines" >"$TMP/dry.diff"; then
  pass "the dry run prints the expected itemized lines"
else
  fail "the dry run's lines differ: $(tr '\n' '|' <"$TMP/dry.diff")"
fi
fingerprint "$OUT" >"$TMP/after.fp"
check "the dry run changed nothing" cmp -s "$TMP/before.fp" "$TMP/after.fp"

section "second sync: only the changes move"
B0=$(server_counter "$SRV_PID" "$SRV_LOG.err" bytes_out) || B0=""
run_ferry sync "$SRV_ADDR" tree "$OUT" --jobs 3
check_rc "second sync" 0
B1=$(server_counter "$SRV_PID" "$SRV_LOG.err" bytes_out) || B1=""
sort "$RUN_OUT" >"$TMP/real.lines"
grep -v '^\*deleting' "$TMP/expected.lines" >"$TMP/expected.nodelete"
check "the sync prints the dry run's lines, without deletions" \
  cmp -s "$TMP/expected.nodelete" "$TMP/real.lines"
if [[ -n "$B0" && -n "$B1" ]]; then
  SENT=$((B1 - B0))
  say "FIGURE: second sync: ferryd sent $SENT bytes for $CHANGED_BYTES changed bytes (tree: $TREE_BYTES)"
  check_int "ferryd sent at least the changed files' bytes" "$SENT" -ge "$CHANGED_BYTES"
  check_int "ferryd sent no more than those plus 5% and 256 KiB of overhead" \
    "$SENT" -le $((CHANGED_BYTES + CHANGED_BYTES / 20 + 262144))
else
  fail "ferryd printed its counters on SIGUSR1"
fi
check "the removed files are still here without --delete" test -f "$OUT/$R1" -a -f "$OUT/$R2"
check "$C4 (same size and mtime) is left alone, as rsync's quick check does" \
  cmp -s "$OUT/$C4" "$TMP/c4.old"
diff -rq -x link -x fifo -x '*.part' "$ROOT/tree" "$OUT" >"$TMP/rest.diff" || true
check_eq "diff -r finds only the removed files and $C4" \
  "3: f003.bin f007.bin f008.bin" \
  "$(wc -l <"$TMP/rest.diff"): $(grep -o 'f[0-9]*\.bin' "$TMP/rest.diff" | sort -u | tr '\n' ' ' | sed 's/ $//')"
check "every file has the server's mtime again" same_mtimes "$ROOT/tree" "$OUT"

section "--delete"
sync_json delete "$SRV_ADDR" tree "$OUT" --delete
check_rc "sync --delete" 0
check_eq "three names deleted" 3 "$(jget delete deleted)"
check_eq "nothing fetched" 0 "$(jget delete bytes_fetched)"
check "the removed files are gone" test ! -e "$OUT/$R1" -a ! -e "$OUT/$R2"
check "the .part of a file still on the server is kept" test -f "$OUT/d0/s2/f014.bin.part"
check "the .part of a file not on the server is deleted" test ! -e "$OUT/gone.bin.part"
rm -f "$OUT/d0/s2/f014.bin.part"
cp "$TMP/c4" "$OUT/$C4"
touch -r "$T/$C4" "$OUT/$C4"
check "diff -r finds no difference now" diff -r -x link -x fifo "$ROOT/tree" "$OUT"

section "a local symlink where the server has a file or a directory"
mkdir -p "$TMP/outside/dir"
printf 'outside' >"$TMP/outside/file"
printf 'keep' >"$TMP/outside/dir/keep"
rm "$OUT/d6/f020.bin"
ln -s "$TMP/outside/file" "$OUT/d6/f020.bin"
head -c 10 /dev/urandom >>"$T/d6/f020.bin"
rm -r "$OUT/d5/deep"
ln -s "$TMP/outside/dir" "$OUT/d5/deep"
gen_random "$T/new4.bin" 777 44
sync_json conflict "$SRV_ADDR" tree "$OUT" --delete
check_rc "sync over local symlinks fails with local I/O" 6
check "the outside file is untouched" test "$(cat "$TMP/outside/file")" = outside
check "nothing was written or deleted in the outside directory" \
  test "$(ls -A "$TMP/outside/dir")" = keep
check "the symlinks are still there" test -L "$OUT/d6/f020.bin" -a -L "$OUT/d5/deep"
check "both conflicts are in --json errors" python3 -c '
import json, sys
names = sorted(e["name"] for e in json.load(open(sys.argv[1]))["errors"])
sys.exit(names != ["d5/deep/", "d6/f020.bin"])' "$TMP/conflict.json"
check "the other files were still synced" cmp -s "$T/new4.bin" "$OUT/new4.bin"
rm "$OUT/d6/f020.bin" "$OUT/d5/deep"
run_ferry sync "$SRV_ADDR" tree "$OUT"
check_rc "a sync after removing the symlinks" 0
check "diff -r finds no difference" diff -r -x link -x fifo "$ROOT/tree" "$OUT"

section "a sync killed in the middle of a large file resumes"
BIG=$((24 * 1024 * 1024))
mkdir -p "$ROOT/big"
gen_random "$ROOT/big/a-small.bin" 1000 51
gen_random "$ROOT/big/large.bin" "$BIG" 52
# 4 MB/s: the 24 MiB take 6 s, so the sync is surely still running when the state file, written
# every half second, shows a tenth done. At 20 MB/s it took 1.3 s, and in one CI run (ASan) the
# sync finished before the poll saw the state file and the kill came.
start_proxy "$SRV_ADDR" --rate 4M --seed 3 || fail "ferry_impair started"
start_bg 120 killed "$FERRY" sync "$PROXY_ADDR" big "$TMP/bigout" --jobs 1
STATE=$TMP/bigout/large.bin.part.state
want=$((BIG / 65024 / 10))
enough() { (($(part_done_blocks "$STATE") >= want)) || ! alive "$BG_CHILD"; }
wait_until 60 enough || fail "the state file did not record $want blocks within 60 s"
kill -KILL "$BG_CHILD" 2>/dev/null || true
wait_bg "$BG_PID" 30
check_eq "the sync died of SIGKILL (it had not finished)" 137 "$RC"
stop_pid "$PROXY_PID"
check "large.bin.part is left" test -f "$TMP/bigout/large.bin.part"
check "large.bin is not there yet" test ! -e "$TMP/bigout/large.bin"
sync_json resumed "$SRV_ADDR" big "$TMP/bigout"
check_rc "the rerun completes" 0
check "large.bin is identical to the source" cmp -s "$ROOT/big/large.bin" "$TMP/bigout/large.bin"
read -r RESUMED FETCHED < <(python3 -c '
import json, sys
f = [x for x in json.load(open(sys.argv[1]))["files"] if x["name"] == "large.bin"]
print(f[0]["resumed_bytes"], f[0]["bytes_fetched"]) if f else print(-1, -1)' "$TMP/resumed.json")
say "FIGURE: resumed sync: $RESUMED bytes resumed, $FETCHED fetched of $BIG"
check_int "the rerun resumed from large.bin.part" "$RESUMED" -gt 0
check_int "the rerun fetched only the rest (plus at most one block)" "$FETCHED" -le \
  $((BIG - RESUMED + 65024))
check "no .part files are left" no_part_files "$TMP/bigout"

section "--mirror: a second server with a copy of the tree"
# 32 files of 256 KiB, and a few small ones in their own directory.
mkdir -p "$ROOT/mtree/a" "$ROOT/mtree/b"
for i in $(seq 10 41); do gen_random "$ROOT/mtree/a/m$i.bin" 262144 "$i"; done
for i in 1 2 3; do gen_random "$ROOT/mtree/b/s$i.bin" $((i * 1000)) $((i + 60)); done
MTREE_BYTES=$(find "$ROOT/mtree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
mkdir -p "$TMP/mroot"
cp -a "$ROOT/mtree" "$TMP/mroot/mtree"
MAIN_PID=$SRV_PID MAIN_ADDR=$SRV_ADDR
start_server "$TMP/mroot" || fail "the mirror started"
sync_json mirrored "$MAIN_ADDR" mtree "$TMP/mout" --mirror "$SRV_ADDR"
check_rc "sync from both" 0
check "diff -r finds no difference" diff -r "$ROOT/mtree" "$TMP/mout"
read -r MB0 MB1 MSUM < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["sources"]
b = [x["bytes"] for x in s]
print(b[0], b[1], sum(b)) if len(b) == 2 else print(-1, -1, -1)' "$TMP/mirrored.json")
say "FIGURE: sync with a mirror: $MB0 bytes from the primary, $MB1 from the mirror"
check_int "--json: bytes from the primary" "$MB0" -gt 0
check_int "--json: bytes from the mirror" "$MB1" -gt 0
check_eq "--json: the sources' bytes add up to the tree" "$MTREE_BYTES" "$MSUM"

section "--mirror: the primary killed in the middle of a sync"
# Both are slowed, so that the sync is still running when the primary is killed.
start_server "$TMP/mroot" --max-rate 2M || fail "a slow mirror started"
MIRROR_ADDR=$SRV_ADDR
start_server "$ROOT" --max-rate 2M || fail "a primary to kill started"
DOOMED_PID=$SRV_PID DOOMED_ADDR=$SRV_ADDR
start_bg 60 doomed "$FERRY" sync "$DOOMED_ADDR" mtree "$TMP/kout" --mirror "$MIRROR_ADDR" \
  --timeout 2 --jobs 2
bins_in() { { find "$1" -name '*.bin' 2>/dev/null || true; } | wc -l; }
some_done() { (($(bins_in "$TMP/kout") >= 6)) || ! alive "$BG_CHILD"; }
wait_until 60 some_done || fail "the sync did not fetch 6 files within 60 s"
check "the sync was still running when the primary was killed" alive "$BG_CHILD"
stop_pid "$DOOMED_PID" KILL
wait_bg "$BG_PID" 60
check_eq "the sync completed from the mirror" 0 "$RC"
check "diff -r finds no difference" diff -r "$ROOT/mtree" "$TMP/kout"
# With the primary gone from the start, the listing itself fails over to the mirror.
run_ferry sync "$DOOMED_ADDR" mtree/b "$TMP/dout" --mirror "$MIRROR_ADDR" --timeout 2
check_rc "a sync whose primary is down from the start" 0
check "diff -r finds no difference" diff -r "$ROOT/mtree/b" "$TMP/dout"
check "the failover is said on stderr" grep -q "asking $MIRROR_ADDR" "$RUN_ERR"
SRV_PID=$MAIN_PID SRV_ADDR=$MAIN_ADDR

summary
