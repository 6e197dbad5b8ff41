#!/usr/bin/env bash
# Discovery on a LAN (issue 16.2), against a real avahi-daemon: the script runs itself again in
# network, mount and UTS namespaces of its own (unshare), where only `lo` is up, with multicast,
# and the host name is ferry-test; there it starts its own dbus-daemon (a private bus in the temp
# dir, which DBUS_SYSTEM_BUS_ADDRESS points ferryd, ferry and avahi at) and its own avahi-daemon
# (its own config, as root without dropping it, a tmpfs over /run for its pid file). Nothing of
# the machine's own bus, daemon or network is touched, and the namespaces go with the script.
# - ferryd --announce is announced; a second one with the same name gets "NAME #2".
# - ferry discover lists both (name, host, root, addresses with ports), in text and JSON.
# - ls, get and sync take dnssd+NAME as the source: the copies are identical, from the right one.
# - a service of the type whose TXT record is not ferry's is left out and refused by name.
# - dnssd+NAME of nothing fails within --timeout, exit 4; a stopped ferryd is withdrawn.
# - without avahi-daemon: ferry discover exits 4 at once and says why; ferryd --announce warns,
#   serves, and announces once the daemon is started.
# Skipped (exit 77, which ctest is told) only when avahi cannot run here: not root, no
# namespaces, or an avahi-daemon that does not start. The binaries missing is a failure: CI
# installs them (scripts/install-deps.sh).
# shellcheck disable=SC2317  # functions called through check and wait_until
set -euo pipefail
SKIP=77

if [[ ${FERRY_AVAHI_INSIDE:-} != 1 ]]; then
  for tool in avahi-daemon dbus-daemon; do
    if ! command -v "$tool" >/dev/null && [[ ! -x /usr/sbin/$tool ]]; then
      echo "FAIL - $tool is installed (scripts/install-deps.sh)"
      printf '\n0 passed, 1 failed\n'
      exit 1
    fi
  done
  if [[ $(id -u) != 0 ]]; then
    echo "SKIP - not root: avahi-daemon needs namespaces of its own here (unshare as root)"
    exit "$SKIP"
  fi
  if ! unshare --net --mount --uts --propagation private true 2>/dev/null; then
    echo "SKIP - cannot make network and mount namespaces here (unshare refused)"
    exit "$SKIP"
  fi
  rc=0
  FERRY_AVAHI_INSIDE=1 timeout -k 10 400 unshare --net --mount --uts --propagation private \
    bash "${BASH_SOURCE[0]}" "$@" || rc=$?
  exit "$rc"
fi

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init
PATH=$PATH:/usr/sbin:/sbin

ip link set lo up
ip link set lo multicast on
hostname ferry-test
# Over /run, so that avahi-daemon's pid file is its own, and nothing finds the machine's bus.
mount -t tmpfs -o mode=0755 ferry-test-run /run
mkdir -p /run/avahi-daemon

# start_bus: dbus-daemon on $TMP/bus, letting any local user own any name (avahi's own policy
# file is for the machine's bus).
cat >"$TMP/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$TMP/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
cat >"$TMP/avahi.conf" <<'CONF'
[server]
host-name=ferry-test
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
CONF
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$TMP/bus

start_bg 300 dbus dbus-daemon --config-file="$TMP/bus.conf" --nofork --nopidfile
if ! wait_until 10 test -S "$TMP/bus"; then
  say "SKIP - dbus-daemon did not start: $(tail -n 3 "$LOGS/dbus.err" | tr '\n' ' ')"
  exit "$SKIP"
fi
pass "dbus-daemon (PID $BG_CHILD) listens on $TMP/bus"

# start_avahi: avahi-daemon on the private bus; sets AVAHI_PID. 1 if it did not come up.
start_avahi() {
  SEQ=$((SEQ + 1))
  start_bg 300 "avahi.$SEQ" avahi-daemon -f "$TMP/avahi.conf" --no-drop-root --no-chroot \
    --no-rlimits --no-proc-title
  AVAHI_PID=$BG_CHILD
  AVAHI_LOG=$LOGS/avahi.$SEQ.err
  wait_until 20 grep -q "Server startup complete" "$AVAHI_LOG"
}
if ! start_avahi; then
  say "SKIP - avahi-daemon cannot run here: $(tail -n 5 "$AVAHI_LOG" | tr '\n' ' ')"
  exit "$SKIP"
fi
pass "avahi-daemon (PID $AVAHI_PID) runs on lo as ferry-test.local"

mkdir -p "$TMP/files" "$TMP/other" "$TMP/dl" "$TMP/mirror"
gen_random "$TMP/files/big.bin" $((2 * 1024 * 1024)) 81
mkdir -p "$TMP/files/sub"
gen_random "$TMP/files/sub/small.bin" 10000 82
gen_random "$TMP/other/big.bin" 65536 83 # another file of the same name: must never be fetched
NAME="files on test"

# announced LOG NAME: ferryd's log says it announced NAME (quoted in the log when it has a space).
announced() { grep -qE "msg=announced service=(\"$2\"|$2) " "$1"; }

section "ferryd --announce"
start_server "$TMP/files" --announce-name "$NAME" || fail "ferryd (files) started"
A_PID=$SRV_PID A_PORT=$SRV_PORT A_LOG=$SRV_LOG.err
check "ferryd says it announced '$NAME'" wait_until 10 announced "$A_LOG" "$NAME"
start_server "$TMP/other" --announce-name "$NAME" || fail "ferryd (other) started"
B_PID=$SRV_PID B_PORT=$SRV_PORT B_LOG=$SRV_LOG.err
check "a second ferryd of the same name is announced as '$NAME #2'" \
  wait_until 10 announced "$B_LOG" "$NAME #2"
start_server "$TMP/other" --announce || fail "ferryd (default name) started"
C_PID=$SRV_PID
check "without --announce-name the name is 'ROOT on HOST'" \
  wait_until 10 announced "$SRV_LOG.err" "other on ferry-test"

section "ferry discover"
run_ferry discover --timeout 5
check_rc "ferry discover" 0
say "FIGURE: ferry discover took $(fmt_secs "$RUN_US") s"
cat "$RUN_OUT"
check_eq "it lists '$NAME' with its host, root and address" \
  "dnssd+$NAME	ferry-test.local	root=files	127.0.0.1:$A_PORT" \
  "$(grep -F "dnssd+$NAME	" "$RUN_OUT" || true)"
check_eq "and '$NAME #2'" "dnssd+$NAME #2	ferry-test.local	root=other	127.0.0.1:$B_PORT" \
  "$(grep -F "dnssd+$NAME #2	" "$RUN_OUT" || true)"
check_eq "three servers in all" 3 "$(wc -l <"$RUN_OUT")"
run_ferry discover --timeout 5 --json
check_rc "ferry discover --json" 0
check "it prints JSON" is_json "$RUN_OUT"
check_eq "with each server's source, port, root, addresses and protocol" \
  "dnssd+$NAME|$A_PORT|files|127.0.0.1:$A_PORT|True" \
  "$(python3 -c 'import json, sys
for s in json.load(open(sys.argv[1])):
    if s["name"] == sys.argv[2]:
        print("|".join(str(v) for v in (s["source"], s["port"], s["root"], " ".join(s["addresses"]), s["compatible"])))' "$RUN_OUT" "$NAME")"

section "bash completion of dnssd+"
BASH_COMPLETION=${BASH_COMPLETION:-/usr/share/bash-completion/bash_completion}
if [[ -r $BASH_COMPLETION ]]; then
  # shellcheck disable=SC2016  # expanded by the inner bash
  run_bounded 30 env PATH="$(dirname "$FERRY"):$PATH" FERRY_COMPLETION_TIMEOUT=5 \
    bash --norc --noprofile -c 'source "$1" && source "$2" || exit 97
      COMP_WORDS=(ferry get "dnssd+files\ on")
      COMP_CWORD=2
      COMP_LINE="${COMP_WORDS[*]}"
      COMP_POINT=${#COMP_LINE}
      _ferry ferry "${COMP_WORDS[2]}" get
      printf "%s\n" "${COMPREPLY[@]}"' _ "$BASH_COMPLETION" \
    "$(dirname "${BASH_SOURCE[0]}")/../client/completion/ferry"
  check_eq "ferry get dnssd+files\\ on<TAB> offers the two servers of that name" \
    'dnssd+files\ on\ test dnssd+files\ on\ test\ #2' \
    "$(sed 's/ *$//' "$RUN_OUT" | tr '\n' ' ' | sed 's/ *$//')"
else
  fail "bash-completion is installed (scripts/install-deps.sh)"
fi

section "ls, get and sync from dnssd+NAME"
run_ferry ls "dnssd+$NAME" --timeout 5
check_rc "ferry ls 'dnssd+$NAME'" 0
check_eq "it lists the served directory" "big.bin sub" "$(tr '\n' ' ' <"$RUN_OUT" | sed 's/ $//')"
run_ferry get "dnssd+$NAME" big.bin -o "$TMP/dl/big.bin" --json --timeout 5
check_rc "ferry get 'dnssd+$NAME' big.bin" 0
say "FIGURE: get through dnssd+ took $(fmt_secs "$RUN_US") s"
check "the copy is identical to the source" cmp -s "$TMP/files/big.bin" "$TMP/dl/big.bin"
check_eq "from the one server named (its namesake holds another big.bin)" "127.0.0.1:$A_PORT" \
  "$(python3 -c 'import json, sys; print(" ".join(s["address"] for s in json.load(open(sys.argv[1]))["sources"]))' "$RUN_OUT")"
run_ferry get "dnssd+$NAME #2" big.bin -o "$TMP/dl/other.bin" --timeout 5
check_rc "ferry get 'dnssd+$NAME #2' big.bin" 0
check "that one is the other server's file" cmp -s "$TMP/other/big.bin" "$TMP/dl/other.bin"
run_ferry sync "dnssd+$NAME" . "$TMP/mirror" --timeout 5
check_rc "ferry sync 'dnssd+$NAME' . mirror/" 0
check "the mirror is identical to the served tree" diff -r "$TMP/files" "$TMP/mirror"

section "what is not a ferry server, or not there"
if command -v avahi-publish >/dev/null; then
  start_bg 120 imposter avahi-publish -s "not ferry" _ferry._udp 9 "path=/"
  wait_until 10 grep -q "Established" "$LOGS/imposter.out" || true
  run_ferry discover --timeout 5
  check_rc "ferry discover with a service that is not ferry's" 0
  check "it is left out of the list" no_match "not ferry" "$RUN_OUT"
  check "and a warning says why" grep -q "'not ferry'.*left out.*txtvers" "$RUN_ERR"
  run_ferry get "dnssd+not ferry" big.bin -o "$TMP/dl/imposter.bin" --timeout 5
  check_rc "get from it is refused" 4
  check "saying it is not a ferry service" grep -q "not a ferry service" "$RUN_ERR"
  stop_pid "$BG_CHILD"
else
  fail "avahi-publish is installed (avahi-utils; scripts/install-deps.sh)"
fi
run_ferry get "dnssd+no such server" big.bin -o "$TMP/dl/none.bin" --timeout 2
check_rc "get 'dnssd+no such server' exits 4" 4
check "it says no such service was found" grep -q "no DNS-SD service 'no such server'" "$RUN_ERR"
check_int "within --timeout 2 and a second (ms)" $((RUN_US / 1000)) -le 3000
run_ferry get "dnssd+" big.bin --timeout 2
check_rc "an empty name is a usage error" 2

section "a stopped ferryd is withdrawn"
stop_server "$C_PID"
stop_server "$B_PID"
# shellcheck disable=SC2329  # called through wait_until
only_one_listed() {
  run_ferry discover --timeout 3
  [[ $RC == 0 && $(wc -l <"$RUN_OUT") == 1 ]] && grep -qF "dnssd+$NAME	" "$RUN_OUT"
}
check "ferry discover lists only '$NAME' once the others stop" wait_until 20 only_one_listed

section "without avahi-daemon"
stop_pid "$AVAHI_PID"
run_ferry discover --timeout 5
check_rc "ferry discover exits 4" 4
check "it says avahi-daemon is not running" grep -q "avahi-daemon is not running" "$RUN_ERR"
check_int "at once, not after --timeout (ms)" $((RUN_US / 1000)) -lt 2000
start_server "$TMP/files" --announce-name "late" || fail "ferryd --announce started without avahi"
D_PID=$SRV_PID D_LOG=$SRV_LOG.err
check "ferryd --announce warns that it is not announced yet" \
  wait_until 10 grep -q "not announced yet: avahi-daemon is not running" "$D_LOG"
run_ferry ls "127.0.0.1:$SRV_PORT" --timeout 5
check_rc "and serves all the same" 0
start_avahi || fail "avahi-daemon started again"
check "once avahi-daemon runs, it is announced" wait_until 20 announced "$D_LOG" late
run_ferry get "dnssd+late" big.bin -o "$TMP/dl/late.bin" --timeout 5
check_rc "and found" 0
check "the copy is identical" cmp -s "$TMP/files/big.bin" "$TMP/dl/late.bin"
stop_server "$D_PID"
check_eq "ferryd stops cleanly" 0 "$STOP_RC"
stop_server "$A_PID"
check_eq "the first ferryd stops cleanly" 0 "$STOP_RC"

summary
