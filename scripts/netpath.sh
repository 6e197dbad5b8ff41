#!/usr/bin/env bash
# shellcheck shell=bash disable=SC2034  # the NP_ variables are set for the sourcing script
# netpath.sh: a real network path between two network namespaces, for benchmarks and tests that
# must see a kernel's real behaviour (PMTU discovery, qdisc tail drop, TCP next to ferry) rather
# than the user-space proxy ferry_impair. Needs root, iproute2, nftables, ethtool and ping; this
# kernel has no netem, so the delay comes from tests/tools/ferry_delay and the loss from nftables.
#
# Sourced:
#   source scripts/netpath.sh
#   netpath_up 60 0.5 100               # RTT 60 ms, 0.5 % loss each way, 100 Mbit/s bottleneck
#   "${NP_SERVER_EXEC[@]}" "$FERRYD" --root DIR --bind "$NP_SERVER_IP" --port 7070 & srv=$!
#   np_client "$FERRY" get "$NP_SERVER_IP:7070" FILE -o OUT
#   kill "$srv"; wait "$srv"
#   netpath_down                        # also from the caller's EXIT trap; idempotent
#
# Stand-alone:
#   bash scripts/netpath.sh demo [RTT_MS LOSS_PCT RATE_MBIT [key=value ...]]
#   bash scripts/netpath.sh iperf RTT_MS LOSS_PCT RATE_MBIT [bbr|cubic|...] [key=value ...]
#   bash scripts/netpath.sh install     # apt-get installs what is missing (nftables, iperf3...)
#
# The path is routed, so that a narrower link makes the router send real ICMP "fragmentation
# needed" (IPv6: "packet too big") messages. The delay bridge sits in the middle namespace on the
# server's side of the router:
#
#   server ns          middle ns (router, ip_forward=1)                          client ns
#   s0 10.201.1.1 ==== ms <ferry_delay> mx ==== mr 10.201.1.254 | mc 10.201.2.254 ==== c0 10.201.2.1
#   loss: ingress                               tbf on egress   | tbf on egress        loss: ingress
#
# - Delay: RTT_MS/2 each way in ferry_delay (AF_PACKET, ms <-> mx), which holds at most
#   delay_limit_bytes (default 64 MiB) a direction and drops beyond; no TCP or ferry test comes
#   near that (500 Mbit/s for 100 ms is 6 MB). With RTT_MS 0 a kernel bridge joins ms and mx.
#   IPv6 (fd00:201:1::1 and fd00:201:2::1, ipv6=1, the default) takes the same path.
# - Bottleneck: tbf at RATE_MBIT on mc's egress (server to client, the data direction) and on
#   mr's egress (client to server). Queue limit: one bandwidth-delay product, RATE*RTT, at least
#   64 KiB (limit_bytes=N overrides); bucket: 1 ms at RATE, at least 16 KiB (burst_bytes=N). A
#   full queue drops at the tail. RATE_MBIT 0: no bottleneck.
# - Loss: LOSS_PCT (e.g. 0.5) of IPv4 and IPv6 frames in each direction, dropped at random by
#   nftables (numgen random) in the netdev ingress hook of s0 and of c0. Not on ms or mx: an
#   AF_PACKET tap sees a frame before that hook drops it. ARP is never dropped.
# - client_mtu=N: the MTU of the router-client link (mc and c0); the server's side stays at 1500,
#   so the router answers an oversized DF packet from the server with ICMP, and the client's own
#   stack refuses to send one ("message too long").
# - blackhole=1: the router drops every forwarded IP packet longer than blackhole_size (default
#   1280) bytes, in both directions, and sends no ICMP: a PMTU black hole.
# - Offloads: GRO, GSO, TSO and UDP segmentation are off on every veth, so that a frame on the
#   wire is one MTU-sized packet and a drop removes exactly one. Checksum offload stays on:
#   ferry_delay carries the "checksum still to do" mark across (PACKET_VNET_HDR).
#
# Variables set by netpath_up: NP_SERVER_NS NP_MIDDLE_NS NP_CLIENT_NS NP_SERVER_IP NP_CLIENT_IP
# NP_SERVER_IP6 NP_CLIENT_IP6 NP_SERVER_IF NP_CLIENT_IF NP_RATE_MBIT NP_RTT_MS NP_LOSS_PCT
# NP_DELAY_PID NP_DIR, and the arrays NP_SERVER_EXEC NP_CLIENT_EXEC NP_MIDDLE_EXEC (see
# np_server). netpath_down sets NP_DELAY_COUNTERS (ferry_delay's stderr: its counters).
#
# Bounds: every step is bounded in time; ferry_delay exits by itself and a detached watchdog
# deletes the namespaces (killing what still runs in them) NETPATH_MAX_SECONDS (default 1800)
# after netpath_up, in case the caller dies without calling netpath_down.

NETPATH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NP_DIR=""
NP_DELAY_PID=""
NP_DELAY_COUNTERS=""

# np_server CMD...: runs CMD in the server's namespace (np_client, np_middle: in the others').
# These are functions, so `np_server CMD &` forks a subshell and $! is the subshell's PID, not
# CMD's: to start CMD in the background and keep its PID (to stop it later, or for lib.sh's
# track_pid), use the arrays instead: "${NP_SERVER_EXEC[@]}" CMD & pid=$!  (ip netns exec
# replaces itself with CMD, so $! is CMD).
# netpath_wrap FILE NS EXE: writes an executable FILE that runs EXE with its arguments inside
# namespace NS. It execs into it, so the PID of the wrapper, started in the background, is the
# PID of EXE, which lib.sh's start_server and start_bg can track and stop.
netpath_wrap() {
  printf '#!/bin/sh\nexec ip netns exec "%s" "%s" "$@"\n' "$2" "$3" >"$1"
  chmod +x "$1"
}

np_server() { ip netns exec "$NP_SERVER_NS" "$@"; }
np_client() { ip netns exec "$NP_CLIENT_NS" "$@"; }
np_middle() { ip netns exec "$NP_MIDDLE_NS" "$@"; }

# netpath_missing: prints the Debian packages that netpath_up (and the iperf check) need and
# that are not installed (ping checks the path as it comes up); returns 1 if there are any.
netpath_missing() {
  local missing=() cmd pkg
  for cmd in ip:iproute2 tc:iproute2 nft:nftables ethtool:ethtool ping:iputils-ping \
    iperf3:iperf3 setsid:util-linux; do
    pkg=${cmd#*:}
    command -v "${cmd%%:*}" >/dev/null 2>&1 || [[ " ${missing[*]} " == *" $pkg "* ]] ||
      missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  printf '%s\n' "${missing[@]}"
  return 1
}

# netpath_install: installs the missing packages with apt-get (root only, bounded, no prompts).
netpath_install() {
  local pkgs
  pkgs=$(netpath_missing) && return 0
  if [[ $EUID != 0 ]]; then
    echo "netpath: missing packages: $(echo "$pkgs" | tr '\n' ' ')(install them as root)" >&2
    return 1
  fi
  # shellcheck disable=SC2086  # one package name a word
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends \
    $pkgs </dev/null >&2 ||
    { timeout 600 apt-get update -q </dev/null >&2 &&
      DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q \
        --no-install-recommends $pkgs </dev/null >&2; }
}

# _np CMD...: runs CMD and says which one failed, so that _np_build can stop at the first error
# whether or not the caller runs with set -e.
_np() {
  "$@" && return 0
  echo "netpath: failed: $*" >&2
  return 1
}

_np_max() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (a > b ? a : b) }'; }

# _np_veth NS_A IF_A NS_B IF_B MTU: a veth pair with segmentation offloads off, still down.
_np_veth() {
  local dev
  _np ip -n "$1" link add "$2" mtu "$5" type veth peer name "$4" mtu "$5" netns "$3" || return 1
  for dev in "$1:$2" "$3:$4"; do
    _np ip netns exec "${dev%%:*}" ethtool -K "${dev#*:}" gro off gso off tso off \
      tx-udp-segmentation off >/dev/null || return 1
  done
}

# _np_loss NS DEV N: drops N in 10000 IP frames arriving on DEV, before the stack sees them.
_np_loss() {
  _np ip netns exec "$1" nft -f - <<EOF || return 1
table netdev netpath {
  chain loss {
    type filter hook ingress device "$2" priority 0; policy accept;
    meta protocol { ip, ip6 } numgen random mod 10000 < $3 counter drop
  }
}
EOF
}

# _np_build RTT LOSS_N RATE CLIENT_MTU BLACKHOLE_SIZE LIMIT BURST IPV6: everything but the delay
# bridge; returns 1 at the first step that fails.
_np_build() {
  local rtt=$1 loss_n=$2 rate=$3 cmtu=$4 hole=$5 limit=$6 burst=$7 ipv6=$8
  local s=$NP_SERVER_NS m=$NP_MIDDLE_NS c=$NP_CLIENT_NS ns dev
  for ns in "$s" "$m" "$c"; do
    _np ip netns add "$ns" || return 1
    _np ip -n "$ns" link set lo up || return 1
  done
  _np ip netns exec "$m" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 ||
    return 1
  _np_veth "$s" s0 "$m" ms 1500 || return 1
  _np_veth "$m" mx "$m" mr 1500 || return 1
  _np_veth "$m" mc "$c" c0 "$cmtu" || return 1
  if [[ $rtt == 0 ]]; then
    _np ip -n "$m" link add name br0 type bridge || return 1
    _np ip -n "$m" link set ms master br0 || return 1
    _np ip -n "$m" link set mx master br0 || return 1
  fi
  # The bridge ports carry other hosts' frames only: no addresses, no IPv6 chatter of their own.
  for dev in ms mx br0; do
    [[ $dev == br0 && $rtt != 0 ]] && continue
    ip netns exec "$m" sysctl -qw "net.ipv6.conf.$dev.disable_ipv6=1" 2>/dev/null || true
    _np ip -n "$m" link set "$dev" promisc on up || return 1
  done
  _np ip -n "$s" addr add "$NP_SERVER_IP/24" dev s0 || return 1
  _np ip -n "$m" addr add 10.201.1.254/24 dev mr || return 1
  _np ip -n "$m" addr add 10.201.2.254/24 dev mc || return 1
  _np ip -n "$c" addr add "$NP_CLIENT_IP/24" dev c0 || return 1
  if [[ $ipv6 == 1 ]]; then
    _np ip -n "$s" addr add "$NP_SERVER_IP6/64" dev s0 nodad || return 1
    _np ip -n "$m" addr add fd00:201:1::fe/64 dev mr nodad || return 1
    _np ip -n "$m" addr add fd00:201:2::fe/64 dev mc nodad || return 1
    _np ip -n "$c" addr add "$NP_CLIENT_IP6/64" dev c0 nodad || return 1
  fi
  _np ip -n "$s" link set s0 up || return 1
  _np ip -n "$m" link set mr up || return 1
  _np ip -n "$m" link set mc up || return 1
  _np ip -n "$c" link set c0 up || return 1
  _np ip -n "$s" route add default via 10.201.1.254 || return 1
  _np ip -n "$c" route add default via 10.201.2.254 || return 1
  if [[ $ipv6 == 1 ]]; then
    _np ip -n "$s" -6 route add default via fd00:201:1::fe || return 1
    _np ip -n "$c" -6 route add default via fd00:201:2::fe || return 1
  fi
  if [[ $rate != 0 ]]; then
    for dev in mc mr; do
      _np ip netns exec "$m" tc qdisc add dev "$dev" root tbf rate "${rate}mbit" \
        burst "$burst" limit "$limit" || return 1
    done
  fi
  if [[ $loss_n != 0 ]]; then
    _np_loss "$s" s0 "$loss_n" || return 1
    _np_loss "$c" c0 "$loss_n" || return 1
  fi
  if [[ $hole != 0 ]]; then
    _np ip netns exec "$m" nft -f - <<EOF || return 1
table inet netpath {
  chain forward {
    type filter hook forward priority 0; policy accept;
    meta length > $hole counter drop
  }
}
EOF
  fi
}

# _np_watchdog SECONDS: a detached process that deletes the namespaces after SECONDS unless
# netpath_down stops it first. It runs in its own session, so that a signal to the caller's process
# group does not reach it, and is not the caller's child (the subshell that starts it exits at
# once), so that a plain `wait` in the caller does not wait for it. It records its PID in
# $NP_DIR/watchdog.pid.
_np_watchdog() {
  # shellcheck disable=SC2016  # expanded by the watchdog shell, from its arguments
  (setsid bash -c '
    dir=$1 secs=$2
    shift 2
    echo "$$" >"$dir/watchdog.pid"
    sleep "$secs" &
    nap=$!
    trap "kill \$nap 2>/dev/null; wait \$nap; exit 0" TERM
    wait "$nap"
    for ns in "$@"; do
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null
    done
    rm -rf -- "$dir"' netpath-watchdog "$NP_DIR" "$1" \
    "$NP_SERVER_NS" "$NP_MIDDLE_NS" "$NP_CLIENT_NS" </dev/null >/dev/null 2>&1 &)
}

# netpath_up RTT_MS LOSS_PCT RATE_MBIT [client_mtu=N] [blackhole=1] [blackhole_size=N]
#            [limit_bytes=N] [burst_bytes=N] [ipv6=0|1] [delay_limit_bytes=N]
netpath_up() {
  if (($# < 3)); then
    echo "usage: netpath_up RTT_MS LOSS_PCT RATE_MBIT [key=value ...]" >&2
    return 2
  fi
  local rtt=$1 loss=$2 rate=$3 kv cmtu=1500 hole=0 hole_size=1280 limit="" burst="" ipv6=1
  local dlimit=$((64 << 20))
  shift 3
  for kv in "$@"; do
    case $kv in
      client_mtu=*) cmtu=${kv#*=} ;;
      blackhole=*) hole=${kv#*=} ;;
      blackhole_size=*) hole_size=${kv#*=} ;;
      limit_bytes=*) limit=${kv#*=} ;;
      burst_bytes=*) burst=${kv#*=} ;;
      ipv6=*) ipv6=${kv#*=} ;;
      delay_limit_bytes=*) dlimit=${kv#*=} ;;
      *)
        echo "netpath_up: unknown option '$kv'" >&2
        return 2
        ;;
    esac
  done
  local num='^[0-9]+([.][0-9]+)?$' int='^[0-9]+$'
  if ! [[ $rtt =~ $num && $loss =~ $num && $rate =~ $num && $cmtu =~ $int &&
    $hole_size =~ $int && ${limit:-0} =~ $int && ${burst:-0} =~ $int && $dlimit =~ $int &&
    $hole =~ ^[01]$ && $ipv6 =~ ^[01]$ ]] || ((cmtu < 576 || cmtu > 1500)); then
    echo "netpath_up: bad arguments: $rtt $loss $rate $*" >&2
    return 2
  fi
  if [[ -n $NP_DIR ]]; then
    echo "netpath_up: a path is already up ($NP_SERVER_NS); netpath_down first" >&2
    return 1
  fi
  if [[ $EUID != 0 ]]; then
    echo "netpath_up: needs root (network namespaces)" >&2
    return 1
  fi
  local missing
  missing=$(netpath_missing | grep -v '^iperf3$' || true)
  if [[ -n $missing ]]; then
    echo "netpath_up: missing packages: $(echo "$missing" | tr '\n' ' ')(netpath_install)" >&2
    return 1
  fi
  local delay_bin=${FERRY_DELAY:-$NETPATH_REPO/build/tests/tools/ferry_delay}
  if [[ $rtt =~ ^0+([.]0+)?$ ]]; then
    rtt=0
  elif [[ ! -x $delay_bin ]]; then
    echo "netpath_up: no delay bridge at $delay_bin (cmake --build build --target ferry_delay" \
      "or set FERRY_DELAY)" >&2
    return 1
  fi
  [[ $rate =~ ^0+([.]0+)?$ ]] && rate=0
  local loss_n max=${NETPATH_MAX_SECONDS:-1800}
  loss_n=$(awk -v p="$loss" 'BEGIN { n = int(p * 100 + 0.5); print (n > 10000 ? 10000 : n) }')
  # Mbit/s times 125 is bytes per millisecond.
  [[ -n $limit ]] ||
    limit=$(_np_max "$(awk -v r="$rate" -v t="$rtt" 'BEGIN { print r * 125 * t }')" 65536)
  [[ -n $burst ]] || burst=$(_np_max "$(awk -v r="$rate" 'BEGIN { print r * 125 }')" 16384)
  ((hole)) && hole=$hole_size

  NP_SERVER_NS=fps$BASHPID
  NP_MIDDLE_NS=fpm$BASHPID
  NP_CLIENT_NS=fpc$BASHPID
  NP_SERVER_IP=10.201.1.1
  NP_CLIENT_IP=10.201.2.1
  NP_SERVER_IP6=""
  NP_CLIENT_IP6=""
  if ((ipv6)); then
    NP_SERVER_IP6=fd00:201:1::1
    NP_CLIENT_IP6=fd00:201:2::1
  fi
  NP_SERVER_EXEC=(ip netns exec "$NP_SERVER_NS")
  NP_CLIENT_EXEC=(ip netns exec "$NP_CLIENT_NS")
  NP_MIDDLE_EXEC=(ip netns exec "$NP_MIDDLE_NS")
  NP_SERVER_IF=s0
  NP_CLIENT_IF=c0
  NP_RTT_MS=$rtt
  NP_LOSS_PCT=$loss
  NP_RATE_MBIT=$rate
  NP_DELAY_PID=""
  NP_DELAY_COUNTERS=""
  NP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/netpath.XXXXXX") || return 1
  export NP_SERVER_NS NP_MIDDLE_NS NP_CLIENT_NS NP_SERVER_IP NP_CLIENT_IP NP_SERVER_IP6 \
    NP_CLIENT_IP6 NP_SERVER_IF NP_CLIENT_IF NP_RTT_MS NP_LOSS_PCT NP_RATE_MBIT
  _np_watchdog "$max"
  local i
  for ((i = 0; i < 250; i++)); do
    [[ -s $NP_DIR/watchdog.pid ]] && break
    sleep 0.02
  done

  if ! _np_build "$rtt" "$loss_n" "$rate" "$cmtu" "$hole" "$limit" "$burst" "$ipv6"; then
    netpath_down
    return 1
  fi
  if [[ $rtt != 0 ]]; then
    local half
    half=$(awk -v r="$rtt" 'BEGIN { printf "%.3f", r / 2 }')
    # Started from a subshell that exits at once, so that it is not the caller's child and a
    # plain `wait` in the caller does not wait for it.
    (ip netns exec "$NP_MIDDLE_NS" "$delay_bin" --a ms --b mx --delay-ms "$half" \
      --limit-bytes "$dlimit" --max-seconds "$max" \
      </dev/null >"$NP_DIR/delay.out" 2>"$NP_DIR/delay.err" &
      echo "$!" >"$NP_DIR/delay.pid")
    NP_DELAY_PID=$(cat "$NP_DIR/delay.pid")
    for ((i = 0; i < 500; i++)); do
      grep -q '^ready' "$NP_DIR/delay.out" 2>/dev/null && break
      _np_alive "$NP_DELAY_PID" || break
      sleep 0.02
    done
    if ! grep -q '^ready' "$NP_DIR/delay.out" 2>/dev/null; then
      echo "netpath_up: ferry_delay did not start: $(head -c 500 "$NP_DIR/delay.err")" >&2
      netpath_down
      return 1
    fi
  fi
  # Resolve the neighbours and check the path end to end; a few tries, since loss may be on.
  local tries wait_s
  wait_s=$(awk -v r="$rtt" 'BEGIN { print int(r / 1000) + 1 }')
  for ((tries = 0; tries < 10; tries++)); do
    np_client ping -q -n -c 1 -W "$wait_s" "$NP_SERVER_IP" >/dev/null 2>&1 && break
  done
  if ((tries == 10)); then
    echo "netpath_up: the server does not answer ping from the client" >&2
    netpath_down
    return 1
  fi
  if ((ipv6)); then
    for ((tries = 0; tries < 10; tries++)); do
      np_client ping -6 -q -n -c 1 -W "$wait_s" "$NP_SERVER_IP6" >/dev/null 2>&1 && break
    done
    ((tries < 10)) || echo "netpath_up: warning: no IPv6 answer from the server" >&2
  fi
  return 0
}

# netpath_show: the topology as it is now (addresses, routes, qdiscs, nftables rules).
netpath_show() {
  local ns
  for ns in "$NP_SERVER_NS" "$NP_MIDDLE_NS" "$NP_CLIENT_NS"; do
    echo "== $ns"
    ip -n "$ns" -br link
    ip -n "$ns" -br addr
    ip -n "$ns" route
    ip netns exec "$ns" tc qdisc show | grep -v 'noqueue' || true
    ip netns exec "$ns" nft list ruleset
  done
  [[ -z $NP_DELAY_PID ]] || ps -o pid=,args= -p "$NP_DELAY_PID"
}

# netpath_counters: what the path dropped so far (nftables loss and blackhole, tbf queues).
netpath_counters() {
  local ns
  for ns in "$NP_SERVER_NS" "$NP_MIDDLE_NS" "$NP_CLIENT_NS"; do
    ip netns exec "$ns" nft list ruleset 2>/dev/null |
      awk -v ns="$ns" '/counter packets/ { print ns ": " $0 }'
  done
  ip netns exec "$NP_MIDDLE_NS" tc -s qdisc show 2>/dev/null | awk '/^qdisc tbf/ { q = $0 }
    /Sent/ && q { print "middle: " q " ::" $0; q = "" }'
}

# _np_alive PID: PID is our ferry_delay and has not exited. It is not this shell's child, and
# init reaps it when it likes, so a zombie counts as gone; the command line guards against a
# recycled PID.
_np_alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]] || return 1
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "--a ms --b mx"
}

# netpath_down: stops ferry_delay and the watchdog (the only processes netpath_up started),
# deletes the namespaces and the temporary directory. Safe to call twice or when nothing is up.
netpath_down() {
  [[ -n $NP_DIR ]] || return 0
  local ns pids i wpid=""
  if [[ -n $NP_DELAY_PID ]]; then
    if _np_alive "$NP_DELAY_PID"; then
      kill -TERM "$NP_DELAY_PID" 2>/dev/null || true
      for ((i = 0; i < 250; i++)); do
        _np_alive "$NP_DELAY_PID" || break
        sleep 0.02
      done
      _np_alive "$NP_DELAY_PID" && kill -KILL "$NP_DELAY_PID" 2>/dev/null
    fi
    NP_DELAY_COUNTERS=$(tail -n 40 "$NP_DIR/delay.err" 2>/dev/null || true)
    NP_DELAY_PID=""
  fi
  for ns in "$NP_SERVER_NS" "$NP_MIDDLE_NS" "$NP_CLIENT_NS"; do
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ' || true)
    [[ -z $pids ]] ||
      echo "netpath_down: warning: the caller left these running in $ns: $pids" >&2
    ip netns del "$ns" 2>/dev/null || true
  done
  [[ -r $NP_DIR/watchdog.pid ]] && wpid=$(cat "$NP_DIR/watchdog.pid" 2>/dev/null)
  # The check of the command line keeps a recycled PID safe from the signal.
  if [[ $wpid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$wpid/cmdline" 2>/dev/null |
    grep -q "netpath-watchdog $NP_DIR "; then
    kill -TERM "$wpid" 2>/dev/null || true
  fi
  rm -rf -- "$NP_DIR"
  NP_DIR=""
  return 0
}

# ---------------------------------------------------------------------------------------------
# Stand-alone use

# _np_iperf CC: a 10 s download (iperf3 -R) from the server ns to the client ns; prints the
# goodput and its share of the bottleneck rate.
_np_iperf() {
  local cc=$1 log=$NP_DIR/iperf.json i srv
  "${NP_SERVER_EXEC[@]}" timeout -k 5 60 iperf3 -s -1 -B "$NP_SERVER_IP" </dev/null \
    >"$NP_DIR/iperf.srv" 2>&1 &
  srv=$!
  for ((i = 0; i < 250; i++)); do
    [[ -n $(np_server ss -Hltn "sport = :5201" 2>/dev/null) ]] && break
    sleep 0.02
  done
  local cpu0 t0 cpu1 t1 all0 all1 b0 i0 b1 i1
  cpu0=$(_np_cpu_ticks)
  all0=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6; exit }' /proc/stat)
  t0=$EPOCHREALTIME
  np_client timeout -k 5 40 iperf3 -c "$NP_SERVER_IP" -R -t 10 -C "$cc" -J </dev/null >"$log" ||
    true
  cpu1=$(_np_cpu_ticks)
  all1=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6; exit }' /proc/stat)
  t1=$EPOCHREALTIME
  kill -TERM "$srv" 2>/dev/null || true
  wait "$srv" 2>/dev/null || true
  python3 - "$log" "$NP_RATE_MBIT" "$cc" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if "error" in d:
    sys.exit("iperf3: " + d["error"])
rate, cc = float(sys.argv[2]), sys.argv[3]
recv = d["end"]["sum_received"]["bits_per_second"] / 1e6
retr = d["end"]["sum_sent"].get("retransmits", 0)
share = f" = {100 * recv / rate:.1f} % of {rate:g} Mbit/s" if rate else ""
print(f"iperf3 -R {cc}: {recv:.1f} Mbit/s{share}, {retr} retransmits")
EOF
  # Busy and idle ticks of all CPUs: the whole machine's load during the run, for comparison.
  read -r b0 i0 <<<"$all0"
  read -r b1 i1 <<<"$all1"
  awk -v b="$((b1 - b0))" -v i="$((i1 - i0))" -v n="$(nproc)" \
    'BEGIN { printf "machine CPU: %.0f %% busy of %d cores\n", 100 * b / (b + i), n }'
  if [[ -n $cpu0 && -n $cpu1 ]]; then
    awk -v c="$((cpu1 - cpu0))" -v hz="$(getconf CLK_TCK)" -v t0="$t0" -v t1="$t1" \
      'BEGIN { printf "ferry_delay CPU: %.2f s in %.1f s = %.0f %% of a core\n", c / hz, t1 - t0,
               100 * c / hz / (t1 - t0) }'
  fi
}

# _np_cpu_ticks: user + system clock ticks used by ferry_delay so far (nothing if none runs).
_np_cpu_ticks() {
  [[ -n $NP_DELAY_PID ]] || return 0
  awk '{ print $14 + $15 }' "/proc/$NP_DELAY_PID/stat" 2>/dev/null || true
}

_np_main() {
  set -euo pipefail
  # A signal ends the script through exit, so that the EXIT trap tears the path down.
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local cmd=${1:-demo}
  shift || true
  case $cmd in
    install) netpath_install ;;
    demo)
      (($# >= 3)) || set -- 40 0.5 100 "$@"
      trap netpath_down EXIT
      netpath_up "$@"
      netpath_show
      echo "== ping -c 5 from the client"
      np_client ping -n -c 5 -i 0.2 "$NP_SERVER_IP" || true
      netpath_counters
      netpath_down
      echo "== ferry_delay"
      echo "${NP_DELAY_COUNTERS:-(none: RTT 0)}"
      ;;
    iperf)
      if (($# < 3)); then
        echo "usage: netpath.sh iperf RTT_MS LOSS_PCT RATE_MBIT [CC] [key=value ...]" >&2
        exit 2
      fi
      local rtt=$1 loss=$2 rate=$3 cc=bbr
      shift 3
      if (($# > 0)) && [[ $1 != *=* ]]; then
        cc=$1
        shift
      fi
      trap netpath_down EXIT
      netpath_up "$rtt" "$loss" "$rate" "$@"
      echo "path: RTT $rtt ms, loss $loss % each way, $rate Mbit/s $*"
      _np_iperf "$cc"
      netpath_down
      echo "$NP_DELAY_COUNTERS"
      ;;
    *)
      echo "usage: netpath.sh demo|iperf|install ..." >&2
      exit 2
      ;;
  esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  _np_main "$@"
fi
