#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check
# ferry get and sync keep what rsync -t -p keeps, and sync's rules: a fetched file gets the
# server's mode (never setuid, setgid or sticky; --no-mode: not) and mtime; sync gives directories
# their mode and mtime after their contents; --exclude/--include in order; --checksum finds a
# change that keeps size and mtime; --links makes symlinks, but not those that point outside the
# sync (--unsafe-links does); a progress line on a terminal only; a missing remote directory
# makes nothing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

ROOT=$TMP/root
T=$ROOT/t
mkdir -p "$T/sub/deep" "$T/ro" "$T/cache" "$T/keep"
printf 'plain\n' >"$T/plain.txt"
printf 'script\n' >"$T/run.sh"
printf 'suid\n' >"$T/suid"
printf 'tmp\n' >"$T/a.tmp"
printf 'tmp\n' >"$T/sub/b.tmp"
printf 'keep\n' >"$T/keep/k.tmp"
printf 'cached\n' >"$T/cache/c"
printf 'deep\n' >"$T/sub/deep/d.txt"
printf 'ro\n' >"$T/ro/r.txt"
head -c 524288 /dev/urandom >"$T/big.bin"
ln -s plain.txt "$T/near"
ln -s ../plain.txt "$T/sub/up"
ln -s ../../etc/passwd "$T/sub/out"
ln -s /etc/passwd "$T/abs"
ln -s . "$T/dot"
ln -s dot/dot/.. "$T/esc"  # its text stays inside; through dot -> . it leaves
chmod 0640 "$T/plain.txt"
chmod 0750 "$T/run.sh"
chmod 04755 "$T/suid"
chmod 0700 "$T/sub/deep"
chmod 0555 "$T/ro"
chmod 02750 "$T/sub"
touch -h -d '2001-02-03 04:05:06.123456789' "$T/near"
touch -d '2001-01-01 00:00:00.25' "$T/run.sh"
touch -d '2002-03-04 05:06:07.5' "$T/sub/deep" "$T/ro" "$T/sub"

start_server "$ROOT" --max-rate 8M || {
  fail "ferryd started"
  summary
}
pass "ferryd started on $SRV_ADDR"

mode_of() { stat -c %a -- "$1"; }
same_mtime() { [[ $(stat -c %y -- "$1") == $(stat -c %y -- "$2") ]]; }

section "get keeps the server's mode and mtime"
mkdir -p "$TMP/get"
cd "$TMP/get"
umask 077
run_ferry get "$SRV_ADDR" t/run.sh t/suid t/plain.txt
umask 022
check_rc "get of three files" 0
check_eq "the mode, exactly: the umask does not apply" 750 "$(mode_of "$TMP/get/run.sh")"
check_eq "0640 stays 0640" 640 "$(mode_of "$TMP/get/plain.txt")"
check_eq "setuid is never taken from the server" 755 "$(mode_of "$TMP/get/suid")"
check "the mtime is the server's" same_mtime "$T/run.sh" "$TMP/get/run.sh"
run_ferry get "$SRV_ADDR" t/run.sh -o nomode --no-mode --no-mtime
cd "$TMP"
check_rc "get --no-mode --no-mtime" 0
check_eq "--no-mode: 0644 less the umask" 644 "$(mode_of "$TMP/get/nomode")"
check "--no-mtime: now, not the server's 2001" test "$(stat -c %Y "$TMP/get/nomode")" -gt 1600000000
run_ferry stat "$SRV_ADDR" t/suid --json
check "stat --json shows the mode" grep -q '"mode":"4755"' "$RUN_OUT"

section "sync keeps modes and directory mtimes; filters in order"
OUT=$TMP/out
run_ferry sync "$SRV_ADDR" t "$OUT" --exclude '*.tmp' --exclude 'cache/' --include 'keep/k.tmp'
check_rc "first sync" 0
check_eq "a file's mode" 640 "$(mode_of "$OUT/plain.txt")"
check_eq "setuid stripped in sync too" 755 "$(mode_of "$OUT/suid")"
check_eq "a directory's mode, setgid stripped" 750 "$(mode_of "$OUT/sub")"
check_eq "a directory's mode" 700 "$(mode_of "$OUT/sub/deep")"
check_eq "a read-only directory, filled all the same" 555 "$(mode_of "$OUT/ro")"
check "and its file is in it" test -f "$OUT/ro/r.txt"
check "a directory's mtime, set after its contents" same_mtime "$T/sub/deep" "$OUT/sub/deep"
check "the mtime of a directory that has subdirectories" same_mtime "$T/sub" "$OUT/sub"
check "*.tmp excluded at the top" test ! -e "$OUT/a.tmp"
check "*.tmp excluded at any depth" test ! -e "$OUT/sub/b.tmp"
check "cache/ excluded, with what is in it" test ! -e "$OUT/cache"
check "an --exclude before the --include wins" test ! -e "$OUT/keep/k.tmp"
check "symlinks are skipped without --links" test ! -L "$OUT/near"
run_ferry sync "$SRV_ADDR" t "$OUT" --json --exclude '*.tmp' --exclude 'cache/'
check_rc "a second sync" 0
check_eq "nothing fetched the second time" 0 "$(json_get "$RUN_OUT" files_fetched)"
check_eq "and no mode or mtime to set" 0 "$(json_get "$RUN_OUT" files_time_only)"
check "no directory reported changed" no_match '"attributes"' "$RUN_OUT"

run_ferry sync "$SRV_ADDR" t "$TMP/only-sh" --include '*/' --include '*.sh' --exclude '*'
check_rc "include directories and *.sh, exclude the rest" 0
check_eq "only the .sh file, and every directory (as rsync makes them)" \
  "cache keep ro run.sh sub sub/deep" \
  "$(cd "$TMP/only-sh" && find . -mindepth 1 \( -type f -o -type d \) -printf '%P\n' | sort |
    tr '\n' ' ' | sed 's/ $//')"

section "a mode changed on the server, and --delete keeps excluded names"
chmod 0600 "$T/plain.txt"
touch -d '2003-01-01' "$T/sub/deep"
printf 'mine\n' >"$OUT/local.tmp"
run_ferry sync "$SRV_ADDR" t "$OUT" --delete --exclude '*.tmp' --exclude 'cache/'
check_rc "sync after chmod" 0
check "the file is itemized as a permission change only" grep -qx '.f...p..... plain.txt' "$RUN_OUT"
check_eq "and has the new mode" 600 "$(mode_of "$OUT/plain.txt")"
check "the directory is itemized as a time change" grep -qx '.d..t...... sub/deep/' "$RUN_OUT"
check "--delete leaves an excluded local name alone" test -f "$OUT/local.tmp"

section "--checksum finds a change that keeps the size and the mtime"
printf 'PLAIN\n' >"$OUT/plain.txt.new"
touch -r "$OUT/plain.txt" "$OUT/plain.txt.new"
chmod 0600 "$OUT/plain.txt.new"
mv "$OUT/plain.txt.new" "$OUT/plain.txt"
run_ferry sync "$SRV_ADDR" t "$OUT" --exclude '*.tmp' --exclude 'cache/'
check "without --checksum the quick check misses it" grep -qx PLAIN "$OUT/plain.txt"
run_ferry sync "$SRV_ADDR" t "$OUT" --checksum --json --exclude '*.tmp' --exclude 'cache/'
check_rc "sync --checksum" 0
check "with --checksum it is fetched" cmp -s "$T/plain.txt" "$OUT/plain.txt"
check_eq "and only that file" 1 "$(json_get "$RUN_OUT" files_fetched)"

section "--links"
run_ferry sync "$SRV_ADDR" t "$OUT" --links --exclude '*.tmp' --exclude 'cache/'
check_rc "sync --links" 0
check_eq "a link inside the sync is made" plain.txt "$(readlink "$OUT/near")"
check "it is itemized with its target" grep -qx 'cL+++++++++ near -> plain.txt' "$RUN_OUT"
check_eq "a link up to the root's level is made" ../plain.txt "$(readlink "$OUT/sub/up")"
check "with the link's own mtime" same_mtime "$T/near" "$OUT/near"
check "a link that climbs out of the sync is not made" test ! -L "$OUT/sub/out"
check "nor an absolute one" test ! -L "$OUT/abs"
check_eq "a link to . is made" . "$(readlink "$OUT/dot")"
check "but not one with .. after a name, which leaves through it" test ! -L "$OUT/esc"
check "and each is named on stderr" grep -q "'abs' -> '/etc/passwd'.*outside the sync" "$RUN_ERR"
ln -sfn run.sh "$T/near"
run_ferry sync "$SRV_ADDR" t "$OUT" --links --exclude '*.tmp' --exclude 'cache/'
check "a changed target is itemized" grep -qx 'cLc........ near -> run.sh' "$RUN_OUT"
check_eq "and replaced" run.sh "$(readlink "$OUT/near")"
run_ferry sync "$SRV_ADDR" t "$OUT" --links --unsafe-links --exclude '*.tmp' --exclude 'cache/'
check_eq "--unsafe-links makes the absolute one" /etc/passwd "$(readlink "$OUT/abs")"
run_ferry sync "$SRV_ADDR" t "$OUT" --unsafe-links
check_rc "--unsafe-links without --links is a usage error" 2

section "progress on a terminal only"
P=$TMP/progress
run_bounded 60 script -qec "$FERRY sync $SRV_ADDR t $P" "$TMP/tty.log"
check_rc "sync under a terminal" 0
check "a progress line with files and the total" grep -aq '\[[0-9]*/[0-9]*\] .*| all .*%' "$TMP/tty.log"
rm -rf "$P"
run_bounded 60 script -qec "$FERRY sync -q $SRV_ADDR t $P" "$TMP/tty-q.log"
check "-q: none" no_match '\| all' "$TMP/tty-q.log"
rm -rf "$P"
run_ferry sync "$SRV_ADDR" t "$P"
check "not a terminal: none" no_match '\| all' "$RUN_ERR"

section "a remote directory that does not exist"
run_ferry sync "$SRV_ADDR" t/no-such "$TMP/never"
check_rc "is refused" 3
check "and nothing is created for it" test ! -e "$TMP/never"

summary
