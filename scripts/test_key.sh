#!/usr/bin/env bash
# The pre-shared key from a shell (issue 14.7): ferry keygen, ferryd --key-file [--encrypt], and
# ferry with the key, without it, with another one and in the other mode. With the right key a
# get is identical to its source in either mode; every mismatch ends with a clear error: exit 7
# when the server can say why, exit 4 (and a hint) when it cannot, exit 2 for a bad key file.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

ROOT=$TMP/root
mkdir -p "$ROOT/dir" "$TMP/keys"
head -c 3000017 /dev/urandom >"$ROOT/big.bin"
printf 'hello\n' >"$ROOT/dir/small.txt"
FERRY_LIMIT=60

# ---------------------------------------------------------------------------------------------
section "ferry keygen"
run_ferry keygen "$TMP/keys/k"
check_rc "keygen writes a key" 0
check_eq "the key file is the owner's alone" 600 "$(stat -c %a "$TMP/keys/k")"
check "the key is 64 hex digits and a newline" grep -qxE '[0-9a-f]{64}' "$TMP/keys/k"
check_eq "one line" 1 "$(wc -l <"$TMP/keys/k")"
before=$(cat "$TMP/keys/k")
run_ferry keygen "$TMP/keys/k"
check_rc "keygen never replaces a key" 2
check_eq "the key is unchanged" "$before" "$(cat "$TMP/keys/k")"
run_ferry keygen "$TMP/keys/other"
check_rc "a second key" 0
check "two keys differ" test "$(cat "$TMP/keys/k")" != "$(cat "$TMP/keys/other")"

# ---------------------------------------------------------------------------------------------
section "key files ferryd refuses"
cp "$TMP/keys/k" "$TMP/keys/open" && chmod 644 "$TMP/keys/open"
printf 'not a key\n' >"$TMP/keys/bad" && chmod 600 "$TMP/keys/bad"
for case in "open:others may read it" "bad:expected 64 hex digits" "missing:No such file"; do
  name=${case%%:*} want=${case#*:}
  run_bounded 10 "$FERRYD" --root "$ROOT" --port 0 --key-file "$TMP/keys/$name"
  check_rc "ferryd --key-file $name exits 2" 2
  check "ferryd says why ($want)" grep -q "$want" "$RUN_ERR"
done
run_bounded 10 "$FERRYD" --root "$ROOT" --port 0 --encrypt
check_rc "ferryd --encrypt without --key-file exits 2" 2

# ---------------------------------------------------------------------------------------------
section "a server with a key (authenticated)"
start_server "$ROOT" --key-file "$TMP/keys/k" || {
  fail "ferryd started"
  summary
}
pass "ferryd --key-file started on $SRV_ADDR"
MAC_PID=$SRV_PID MAC_LOG=$SRV_LOG MAC=$SRV_ADDR

mkdir -p "$TMP/out" && cd "$TMP/out"
run_ferry get "$MAC" big.bin --key-file "$TMP/keys/k"
check_rc "get with the key" 0
check "big.bin is identical to its source" cmp -s big.bin "$ROOT/big.bin"
run_ferry ls "$MAC" dir --key-file "$TMP/keys/k"
check_rc "ls with the key" 0
check_eq "ls shows the file" small.txt "$(cat "$RUN_OUT")"
FERRY_KEY_FILE=$TMP/keys/k run_ferry stat "$MAC" dir/small.txt --json
check_rc "stat with the key from FERRY_KEY_FILE" 0
check "stat says 6 bytes" grep -q '"size": *6' "$RUN_OUT"

run_ferry get "$MAC" dir/small.txt -o nokey.txt --timeout 5
check_rc "get without the key: exit 7" 7
check "it says that the server needs a key" grep -q "needs a key: run ferry with --key-file" "$RUN_ERR"
check "no output and no .part" test ! -e nokey.txt -a ! -e nokey.txt.part
run_ferry ls "$MAC" --key-file "$TMP/keys/k" --encrypt --timeout 5
check_rc "ls with --encrypt at a server that does not encrypt: exit 7" 7
check "it says to leave out --encrypt" grep -q "does not encrypt" "$RUN_ERR"
run_ferry stat "$MAC" dir/small.txt --key-file "$TMP/keys/other" --timeout 2
check_rc "stat with another key: no answer, exit 4" 4
check "the error asks whether the key is the same" grep -q "same --key-file" "$RUN_ERR"
chmod 644 "$TMP/keys/other"
run_ferry stat "$MAC" dir/small.txt --key-file "$TMP/keys/other"
check_rc "a key file others may read: exit 2" 2
chmod 600 "$TMP/keys/other"

# ---------------------------------------------------------------------------------------------
section "a server that encrypts"
start_server "$ROOT" --key-file "$TMP/keys/k" --encrypt || {
  fail "ferryd --encrypt started"
  summary
}
pass "ferryd --key-file --encrypt started on $SRV_ADDR"
AEAD_PID=$SRV_PID AEAD_LOG=$SRV_LOG AEAD=$SRV_ADDR
rm -f big.bin
run_ferry get "$AEAD" big.bin --key-file "$TMP/keys/k" --encrypt
check_rc "get encrypted" 0
check "big.bin is identical to its source" cmp -s big.bin "$ROOT/big.bin"
run_ferry stat "$AEAD" big.bin --key-file "$TMP/keys/k" --timeout 5
check_rc "stat without --encrypt at a server that encrypts: exit 7" 7
check "it says to add --encrypt" grep -q "encrypts: run ferry with --encrypt" "$RUN_ERR"

# ---------------------------------------------------------------------------------------------
section "a server without a key"
start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
pass "ferryd without a key started on $SRV_ADDR"
run_ferry stat "$SRV_ADDR" big.bin --key-file "$TMP/keys/k" --timeout 5
check_rc "stat with a key at a server without one: exit 7" 7
check "it says that the server has no key" grep -q "has no key" "$RUN_ERR"
run_ferry stat "$SRV_ADDR" big.bin --timeout 5
check_rc "stat without a key still works there" 0
stop_server "$SRV_PID"
cd "$TMP"

# ---------------------------------------------------------------------------------------------
section "counters"
for which in MAC AEAD; do
  pid_var=${which}_PID log_var=${which}_LOG
  line=$(server_counters_line "${!pid_var}" "${!log_var}.err") || line=""
  unauth=$(tr ' ' '\n' <<<"$line" | awk -F= '$1 == "unauthenticated" { print $2 }')
  forged=$(tr ' ' '\n' <<<"$line" | awk -F= '$1 == "drop_unauthenticated" { print $2 }')
  check_int "$which: requests answered authentication_required" "${unauth:-0}" -ge 1
  if [[ $which == MAC ]]; then
    check_int "$which: requests sealed with another key dropped" "${forged:-0}" -ge 1
  fi
  check "$which: no internal error" grep -q "internal_errors=0" <<<"$line"
  stop_server "${!pid_var}"
  check_eq "$which: ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
done

summary
