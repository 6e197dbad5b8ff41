#!/usr/bin/env bash
# Discovery from DNS (issue 16.1), against a real DNS server: dnsmasq on 127.0.0.1 at a free port,
# with only the records given here, which ferry is pointed at with FERRY_DNS_SERVER.
# - `ferry get srv+NAME` fetches from the three ferryd that NAME's _ferry._udp SRV records of the
#   lowest priority name, at once; one killed mid-transfer, the file still completes, identical;
#   the server of a higher priority is not used.
# - the servers of a higher priority are used when none of the lowest answers, and when all of
#   the lowest die mid-transfer (after --timeout without progress).
# - a name with three A records (one port) is three servers for get.
# - a name that does not exist exits 4 and says so.
# dnsmasq missing is a failure, not a skip: CI installs it (scripts/install-deps.sh).
# shellcheck disable=SC2317  # functions called through check
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
if [[ ! -x $DNSMASQ ]]; then
  fail "dnsmasq is installed (Debian: dnsmasq-base; scripts/install-deps.sh)"
  summary
fi

SIZE=$((4 * 1024 * 1024))
RATE=2M
mkdir -p "$TMP/r" "$TMP/other" "$TMP/dl"
gen_random "$TMP/r/big.bin" "$SIZE" 71
gen_random "$TMP/other/big.bin" 65536 72 # another version: must never be fetched from

declare -a PIDS PORTS
for i in 1 2 3; do
  start_server "$TMP/r" --max-rate "$RATE" || {
    fail "ferryd $i started"
    summary
  }
  PIDS[i]=$SRV_PID
  PORTS[i]=$SRV_PORT
done
start_server "$TMP/other" || fail "the ferryd of priority 20 started"
BACKUP_PORT=$SRV_PORT
DEAD1=$(free_udp_port)
DEAD2=$(free_udp_port)
# Three servers on 127.0.0.2-4, one port: a name with three A records.
APORT=$(free_udp_port)
for i in 2 3 4; do
  start_server "$TMP/r" --bind "127.0.0.$i" --port "$APORT" || fail "ferryd on 127.0.0.$i started"
done
pass "ferryd on ports ${PORTS[*]}, $BACKUP_PORT (priority 20) and 127.0.0.2-4:$APORT"

DNS_PORT=$(free_udp_port)
as_user=()
if [[ $(id -u) == 0 ]]; then as_user=(--user=root); fi # no dnsmasq user needed
start_bg 60 dnsmasq "$DNSMASQ" --keep-in-foreground --no-resolv --no-hosts \
  --conf-file=/dev/null --pid-file= --listen-address=127.0.0.1 --bind-interfaces \
  --port="$DNS_PORT" --local=/ferry.test/ --log-facility=- \
  "${as_user[@]}" \
  --host-record=a.ferry.test,127.0.0.1 \
  --host-record=multi.ferry.test,127.0.0.2 --host-record=multi.ferry.test,127.0.0.3 \
  --host-record=multi.ferry.test,127.0.0.4 \
  --srv-host="_ferry._udp.group.ferry.test,a.ferry.test,${PORTS[1]},10,10" \
  --srv-host="_ferry._udp.group.ferry.test,a.ferry.test,${PORTS[2]},10,10" \
  --srv-host="_ferry._udp.group.ferry.test,a.ferry.test,${PORTS[3]},10,10" \
  --srv-host="_ferry._udp.group.ferry.test,a.ferry.test,$BACKUP_PORT,20,10" \
  --srv-host="_ferry._udp.fallback.ferry.test,a.ferry.test,$DEAD1,10,10" \
  --srv-host="_ferry._udp.fallback.ferry.test,a.ferry.test,$DEAD2,10,10" \
  --srv-host="_ferry._udp.fallback.ferry.test,a.ferry.test,${PORTS[1]},20,10" \
  --srv-host="_ferry._udp.tiers.ferry.test,a.ferry.test,${PORTS[2]},10,10" \
  --srv-host="_ferry._udp.tiers.ferry.test,a.ferry.test,${PORTS[1]},20,10"
DNS_PID=$BG_PID
hex_port=$(printf '%04X' "$DNS_PORT")
if wait_until 10 grep -q "0100007F:$hex_port " /proc/net/udp; then
  pass "dnsmasq (PID $DNS_PID) answers on 127.0.0.1:$DNS_PORT"
else
  fail "dnsmasq started on 127.0.0.1:$DNS_PORT"
  summary
fi
export FERRY_DNS_SERVER=127.0.0.1:$DNS_PORT

# source_ports JSON: the ports of the sources in `ferry get --json` output, sorted.
source_ports() {
  python3 -c 'import json, sys
print(" ".join(sorted(s["address"].rsplit(":", 1)[1] for s in json.load(open(sys.argv[1]))["sources"])))' "$1"
}
# still_fetching PID OUT: the get PID still runs and OUT is not there yet.
still_fetching() { alive "$1" && test ! -e "$2"; }
want_ports=$(printf '%s\n' "${PORTS[@]}" | sort | tr '\n' ' ' | sed 's/ $//')

section "ls through srv+NAME"
run_ferry ls srv+group.ferry.test --timeout 5
check_rc "ferry ls srv+group.ferry.test" 0
check_eq "it lists the served directory" big.bin "$(cat "$RUN_OUT")"

section "get through srv+NAME: three servers at once, one killed mid-transfer"
start_bg 60 kill-client "$FERRY" get srv+group.ferry.test big.bin -o "$TMP/dl/kill.bin" --json \
  --timeout 5
wait_until 20 test -s "$TMP/dl/kill.bin.part.state" || true
sleep 0.2
kill -KILL "${PIDS[1]}"
check "the server was killed mid-transfer: the get still runs, the copy is not complete" \
  still_fetching "$BG_PID" "$TMP/dl/kill.bin"
wait "${PIDS[1]}" 2>/dev/null || true
wait_bg "$BG_PID" 60
check_rc "the get finished with two of three servers" 0
check "the copy is identical" cmp -s "$TMP/r/big.bin" "$TMP/dl/kill.bin"
check_eq "the three servers of priority 10 were the sources, not the one of 20" "$want_ports" \
  "$(source_ports "$LOGS/kill-client.out")"
say "FIGURE: $(grep -c "stopped answering" "$LOGS/kill-client.err" || true) warning(s) that a server stopped answering"

section "a higher priority is used when none of the lowest answers"
start_server "$TMP/r" --port "${PORTS[1]}" || fail "ferryd 1 restarted on its port"
run_ferry get srv+fallback.ferry.test big.bin -o "$TMP/dl/fallback.bin" --json --timeout 5
check_rc "get srv+fallback.ferry.test" 0
check "the copy is identical" cmp -s "$TMP/r/big.bin" "$TMP/dl/fallback.bin"
check_eq "the server of priority 20 was the source" "${PORTS[1]}" "$(source_ports "$RUN_OUT")"

section "when the lowest priority dies mid-transfer, the next one finishes it"
start_bg 60 tiers-client "$FERRY" get srv+tiers.ferry.test big.bin -o "$TMP/dl/tiers.bin" \
  --timeout 1
wait_until 20 test -s "$TMP/dl/tiers.bin.part.state" || true
kill -KILL "${PIDS[2]}"
check "the server was killed mid-transfer" still_fetching "$BG_PID" "$TMP/dl/tiers.bin"
wait "${PIDS[2]}" 2>/dev/null || true
wait_bg "$BG_PID" 60
check_rc "the get finished" 0
check "the copy is identical" cmp -s "$TMP/r/big.bin" "$TMP/dl/tiers.bin"
check "it said it went on with the next priority" \
  grep -q "going on with the servers of the next SRV priority" "$LOGS/tiers-client.err"

section "a name with three A records is three servers"
run_ferry get "multi.ferry.test:$APORT" big.bin -o "$TMP/dl/multi.bin" --json --timeout 5
check_rc "get multi.ferry.test:$APORT" 0
check "the copy is identical" cmp -s "$TMP/r/big.bin" "$TMP/dl/multi.bin"
check_eq "three sources" 3 "$(source_ports "$RUN_OUT" | wc -w)"

section "a name that does not exist"
run_ferry get srv+nosuch.ferry.test big.bin -o "$TMP/dl/none.bin" --timeout 5
check_rc "get srv+nosuch.ferry.test exits 4 (network)" 4
check "it names the SRV name and NXDOMAIN" \
  grep -q "_ferry._udp.nosuch.ferry.test.*NXDOMAIN" "$RUN_ERR"
run_ferry stat nosuch.ferry.test big.bin --timeout 5
check_rc "stat nosuch.ferry.test exits 4" 4

summary
