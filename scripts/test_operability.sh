#!/usr/bin/env bash
# Operability: ferryd logs one key=value event a line with levels, prints its counters on
# SIGUSR1 and at --stats-interval, and counts refusals by reason; ferry's --quiet and --verbose
# do what they say, and its errors say what to do.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

ROOT=$TMP/root
mkdir -p "$ROOT/dir"
printf 'hello\n' >"$ROOT/a.txt"
gen_random "$ROOT/b.bin" $((3 * 1024 * 1024)) 5
FERRY_LIMIT=60
cd "$TMP"

# counter NAME FILE: the value of NAME in the last "msg=counters" event of FILE.
counter() {
  grep 'msg=counters' "$2" | tail -n1 | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'
}

section "ferryd logs key=value events, and SIGUSR1 prints the counters"
start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
ERRLOG=$SRV_LOG.err
run_ferry get "$SRV_ADDR" a.txt -o got-a.txt --json
check_rc "get a.txt" 0
sent=$(json_get "$RUN_OUT" requests)
run_ferry get "$SRV_ADDR" b.bin -o got-b.bin --json
check_rc "get b.bin" 0
sent=$((sent + $(json_get "$RUN_OUT" requests)))
run_ferry get "$SRV_ADDR" missing.txt
check_rc "get of a missing file is refused" 3
run_ferry get "$SRV_ADDR" ../escape
check_rc "get of ../escape is refused" 3
run_ferry ls "$SRV_ADDR"
check_rc "ls" 0
before=$(grep -c 'msg=counters' "$ERRLOG" || true)
kill -USR1 "$SRV_PID"
got_counters() { (($(grep -c 'msg=counters' "$ERRLOG" || true) > before)); }
check "SIGUSR1 prints a counters event" wait_until 10 got_counters
# 3 MiB in 65024-byte blocks is 49 blocks, plus one for a.txt; a retransmitted GET counts again,
# so the server was asked for at least 50 and at most what the clients asked for. GET-RUNs ask
# for several at once, so there are fewer GET datagrams than blocks.
blocks=$(counter blocks_asked "$ERRLOG")
gets=$(counter requests_get "$ERRLOG")
check_int "blocks_asked counts every block asked for" "$blocks" -ge 50
check_int "blocks_asked counts no more than the clients asked for ($sent)" "$blocks" -le "$sent"
check_int "requests_get counts GET datagrams, at most one a block" "$gets" -le "$blocks"
check_eq "requests_list counts the LIST" 1 "$(counter requests_list "$ERRLOG")"
refusals=$(counter refusals "$ERRLOG")
check "refusals are counted by reason (not_found): $refusals" grep -q 'not_found:1' <<<"$refusals"
check "refusals are counted by reason (outside_root)" grep -q 'outside_root:1' <<<"$refusals"
check_eq "active_addresses counts the clients heard from" 5 "$(counter active_addresses "$ERRLOG")"
check_int "bytes_out covers the data sent" "$(counter bytes_out "$ERRLOG")" -gt $((3 * 1024 * 1024))
stop_server "$SRV_PID"
check_eq "ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
bad=$(grep -cvE '^ts=[0-9T:.-]+Z level=(debug|info|warn|error) msg=' "$ERRLOG" || true)
check_eq "every stderr line of ferryd is a key=value event" 0 "$bad"
check "the listening event names the address" grep -q "msg=listening addr=$SRV_ADDR" "$ERRLOG"
check "the stop is logged" grep -q 'msg=stopping signal=15' "$ERRLOG"

section "the access log: one line per finished transfer or listing"
# In the first section's log, at info level: the transfers, the refusals and the listing.
access() { grep 'msg=access' "$ERRLOG" | grep -E "$1"; }
line=$(access 'op=get .*path=b\.bin' || true)
check "a transfer has one line: $line" test "$(grep -c . <<<"$line")" -eq 1
check "it names the client and the result" \
  grep -Eq "client=127\.0\.0\.1:[0-9]+ path=b\.bin result=ok bytes=[0-9]+ requests=[0-9]+ refusals=0 duration_ms=[0-9]+" <<<"$line"
# A block asked again is sent again, so the bytes are the file's at least.
check_int "its bytes cover the file" "$(sed -E 's/.* bytes=([0-9]+) .*/\1/' <<<"$line")" -ge $((3 * 1024 * 1024))
check "a refused STAT has its line" access 'op=stat .*path=missing\.txt result=not_found'
check "a path outside the root has its line" access 'path=\.\./escape result=outside_root'
check "the listing has one line with its entries" access 'op=list .*path=\. result=ok entries=3 '
# --access-log FILE: the same lines in a file of their own, also at --log-level warn.
start_server "$ROOT" --log-level warn --access-log "$TMP/access.log" || fail "ferryd started"
ERRLOG=$SRV_LOG.err
run_ferry get "$SRV_ADDR" a.txt -o got-a4.txt
check_rc "get a.txt" 0
run_ferry ls "$SRV_ADDR" dir
check_rc "ls dir" 0
stop_server "$SRV_PID"
check "--access-log writes the transfer to its file" \
  grep -Eq '^ts=[0-9T:.-]+Z level=info msg=access op=get client=127\.0\.0\.1:[0-9]+ path=a\.txt result=ok bytes=(6|12|18) ' "$TMP/access.log"
check "and the listing" grep -Eq 'msg=access op=list .*path=dir result=ok entries=0 ' "$TMP/access.log"
check "and nothing of it on stderr" bash -c "! grep -q msg=access '$ERRLOG'"
run_bounded 10 "$FERRYD" --root "$ROOT" --port 0 --access-log "$TMP/no/such/dir/access.log"
check_rc "an access log that cannot be opened stops ferryd" 1
check "with the reason" grep -q "cannot open the access log" "$RUN_ERR"

section "--allow: clients outside its networks are told permission denied"
start_server "$ROOT" --allow 10.0.0.0/8 --allow 2001:db8::/32 || fail "ferryd started"
run_ferry stat "$SRV_ADDR" a.txt --timeout 5
check_rc "a client outside --allow gets the refusal's exit code" 3
check "and is told why" grep -qi "permission denied" "$RUN_ERR"
stop_server "$SRV_PID"
start_server "$ROOT" --allow 10.0.0.0/8 --allow 127.0.0.0/8 || fail "ferryd started"
run_ferry get "$SRV_ADDR" a.txt -o got-allowed.txt
check_rc "a client inside --allow is served" 0
stop_server "$SRV_PID"
run_bounded 10 "$FERRYD" --root "$ROOT" --port 0 --allow 127.0.0.1/8
check_rc "a network with host bits set is a usage error" 2
check "with a suggestion" grep -q "did you mean '127.0.0.0/8'" "$RUN_ERR"

section "--log-level warn keeps info events out; --stats-interval prints counters by itself"
start_server "$ROOT" --log-level warn --stats-interval 0.2 || fail "ferryd started"
ERRLOG=$SRV_LOG.err
run_ferry get "$SRV_ADDR" a.txt -o got-a2.txt
check_rc "get a.txt" 0
periodic() { (($(grep -c 'msg=counters' "$ERRLOG" || true) >= 2)); }
check "--stats-interval 0.2 prints counters at least twice" wait_until 10 periodic
check "no msg=listening event at --log-level warn" bash -c "! grep -q msg=listening '$ERRLOG'"
stop_server "$SRV_PID"
run_bounded 10 "$FERRYD" --root "$ROOT" --log-level chatty
check_rc "an unknown --log-level is a usage error" 2
check "it is explained in key=value form" grep -q 'msg="unknown --log-level' "$RUN_ERR"

section "--log-level debug: one line a request, and one a refusal"
start_server "$ROOT" --log-level debug || fail "ferryd started"
ERRLOG=$SRV_LOG.err
run_ferry get "$SRV_ADDR" a.txt -o got-a3.txt
check_rc "get a.txt" 0
run_ferry stat "$SRV_ADDR" missing.txt
check_rc "stat missing.txt" 3
stop_server "$SRV_PID"
check "a stat request is logged with its client and path" \
  grep -Eq 'msg=request client=127\.0\.0\.1:[0-9]+ id=[0-9]+ type=stat path=a\.txt' "$ERRLOG"
check "a get request is logged with its offset, block and count" \
  grep -Eq 'msg=request .* type=get(_run)? path=a\.txt offset=0 block=[0-9]+ count=[0-9]+' "$ERRLOG"
check "the refusal is logged with its code" grep -Eq 'msg=refused .* code=not_found' "$ERRLOG"

section "ferry --quiet prints nothing but errors; --verbose says what happens"
start_server "$ROOT" || fail "ferryd started"
run_ferry get "$SRV_ADDR" b.bin -o quiet.bin -q
check_rc "get -q" 0
check "get -q prints nothing on stderr" test ! -s "$RUN_ERR"
run_ferry get "$SRV_ADDR" b.bin -o verbose.bin -v
check_rc "get -v" 0
check "get -v reports the block size" grep -q 'block size' "$RUN_ERR"
check "get -v reports a summary" grep -q 'fetched in' "$RUN_ERR"
run_ferry get "$SRV_ADDR" b.bin -o x.bin -q -v
check_rc "-q and -v together are a usage error" 2
run_ferry get "$SRV_ADDR" missing.txt -q
check_rc "get -q of a missing file" 3
check "the error still shows under -q, with a hint" grep -q "ferry ls ADDR DIR" "$RUN_ERR"
run_ferry ls 127.0.0.1:notaport
check_rc "a bad address is a usage error" 2
check "it shows the expected form" grep -q '127.0.0.1:7070' "$RUN_ERR"
stop_server "$SRV_PID"
port=$(free_udp_port)
run_ferry stat "127.0.0.1:$port" a.txt --timeout 1
check_rc "no server is a network error" 4
check "the error asks whether ferryd runs and the port is open" grep -q "is ferryd running" "$RUN_ERR"

summary
