#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check and wait_until
# The systemd unit, without starting it (systemd need not be PID 1 here):
#   1. `systemd-analyze verify` passes on ferryd.service exactly as the package installs it:
#      `DESTDIR=R cmake --install --prefix /usr` (what cpack does), with systemd's own units
#      copied into R, checked with --root=R, which also resolves ExecStart's /usr/sbin/ferryd
#      inside R. Then on the unit as `cmake --install --prefix P` writes it (ExecStart is
#      P/sbin/ferryd), checked directly. Neither file is edited.
#   2. The unit holds every sandboxing setting it promises; `systemd-analyze security` reports
#      its exposure (informational).
#   3. ExecStart, expanded the way systemd expands it with the installed defaults file (as an
#      admin would edit it: another root, port 0, extra options), starts a ferryd that serves,
#      logs to stderr and exits 0 on SIGTERM. Under strace, it makes no system call that the
#      unit's SystemCallFilter= denies and opens nothing under /proc (ProcSubset=pid).
#
# The build directory is the one FERRYD lives in (BUILD/server/ferryd). cmake --install writes
# BUILD/install_manifest.txt, which is put back as it was.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "$(dirname "$FERRYD")/.." && pwd)
say "source: $SRC"
say "build:  $BUILD"
if ! command -v systemd-analyze >/dev/null; then
  fail "systemd-analyze is installed (package systemd; scripts/install-deps.sh installs it)"
  summary
fi
say "$(systemd-analyze --version | head -n1)"
SANITIZED=0
if grep -Eq '^FERRY_SANITIZE:STRING=.+' "$BUILD/CMakeCache.txt"; then SANITIZED=1; fi

# man pages, if this build makes them and man(1) is here, so that verify can check
# Documentation=man:ferryd(8).
have_man_pages() {
  command -v man >/dev/null &&
    [[ -f $1/usr/share/man/man8/ferryd.8.gz || -f $1/share/man/man8/ferryd.8.gz ]]
}

section "systemd-analyze verify: the unit as the package installs it (prefix /usr, --root)"
R=$TMP/sysroot
locked_keep_manifest run_bounded 120 env DESTDIR="$R" cmake --install "$BUILD" --prefix /usr ||
  RC=1
check_rc "DESTDIR=$R cmake --install --prefix /usr" 0
UNIT_DIR=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
UNIT_DIR=${UNIT_DIR:-/usr/lib/systemd/system}
PKG_UNIT=$R$UNIT_DIR/ferryd.service
check "the unit is at $UNIT_DIR/ferryd.service" test -f "$PKG_UNIT"
check "/etc/default/ferryd is in the DESTDIR, not on this host" test -f "$R/etc/default/ferryd"
check "ExecStart is /usr/sbin/ferryd" grep -q '^ExecStart=/usr/sbin/ferryd ' "$PKG_UNIT"
check "EnvironmentFile is /etc/default/ferryd" \
  grep -qx 'EnvironmentFile=-/etc/default/ferryd' "$PKG_UNIT"
# This host's systemd units (sysinit.target, multi-user.target, ...) for the dependencies, in
# R/etc/systemd/system, which every systemd searches and no package installs into, so the one
# ferryd.service in R is the package's.
mkdir -p "$R/etc/systemd/system"
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [[ -d $d ]]; then
    cp -a "$d/." "$R/etc/systemd/system/"
    break
  fi
done
rm -rf "$R/etc/systemd/system/ferryd.service" "$R/etc/systemd/system/ferryd.service.d"
man_args=(--man=no)
if have_man_pages "$R"; then man_args=(--man=yes); fi
MANPATH=$R/usr/share/man run_bounded 60 systemd-analyze verify "${man_args[@]}" --root="$R" \
  ferryd.service
say "\$ systemd-analyze verify ${man_args[*]} --root=$R ferryd.service"
cat "$RUN_OUT" "$RUN_ERR"
check_rc "systemd-analyze verify --root (the packaged unit)" 0
cat "$RUN_OUT" "$RUN_ERR" >"$TMP/verify.out"
check "verify has nothing to say about ferryd.service" no_match 'ferryd' "$TMP/verify.out"
# The check is real: without the binary, the same command fails.
mv "$R/usr/sbin/ferryd" "$R/usr/sbin/ferryd.moved"
run_bounded 60 systemd-analyze verify --man=no --root="$R" ferryd.service
check "verify --root fails when /usr/sbin/ferryd is missing" \
  grep -q 'ferryd is not executable' "$RUN_ERR"
mv "$R/usr/sbin/ferryd.moved" "$R/usr/sbin/ferryd"

section "systemd-analyze verify: the unit as cmake --install --prefix writes it"
P=$TMP/prefix
locked_keep_manifest run_bounded 120 cmake --install "$BUILD" --prefix "$P" || RC=1
check_rc "cmake --install --prefix $P" 0
UNIT=$P/lib/systemd/system/ferryd.service
check "ExecStart is $P/sbin/ferryd" grep -q "^ExecStart=$P/sbin/ferryd " "$UNIT"
man_args=(--man=no)
if have_man_pages "$P"; then man_args=(--man=yes); fi
MANPATH=$P/share/man run_bounded 60 systemd-analyze verify "${man_args[@]}" "$UNIT"
say "\$ systemd-analyze verify ${man_args[*]} $UNIT"
cat "$RUN_OUT" "$RUN_ERR"
check_rc "systemd-analyze verify (the installed unit)" 0
cat "$RUN_OUT" "$RUN_ERR" >"$TMP/verify.out"
check "verify has nothing to say about ferryd.service" no_match 'ferryd' "$TMP/verify.out"
[[ ${man_args[0]} == --man=yes ]] ||
  say "note: no man pages in this build yet, or no man(1): Documentation= is not checked"

section "sandboxing settings"
for setting in Type=exec 'EnvironmentFile=-*' Restart=on-failure DynamicUser=yes \
  ProtectSystem=strict ReadOnlyPaths=/srv/ferry ProtectHome=read-only NoNewPrivileges=yes \
  PrivateTmp=yes PrivateDevices=yes ProtectKernelTunables=yes ProtectKernelModules=yes \
  ProtectKernelLogs=yes ProtectControlGroups=yes ProtectClock=yes ProtectHostname=yes \
  'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' RestrictNamespaces=yes \
  LockPersonality=yes MemoryDenyWriteExecute=yes RestrictRealtime=yes RestrictSUIDSGID=yes \
  SystemCallArchitectures=native SystemCallFilter=@system-service CapabilityBoundingSet= \
  UMask=0077; do
  if grep -qx -- "${setting//\*/.*}" "$PKG_UNIT"; then pass "$setting"; else fail "$setting"; fi
done
check "no AmbientCapabilities" no_match '^AmbientCapabilities=' "$PKG_UNIT"
check "no [Install] alias or Also= that would enable more" no_match '^(Alias|Also)=' "$PKG_UNIT"
run_bounded 60 systemd-analyze security --offline=yes --root="$R" ferryd.service
if [[ $RC == 0 ]]; then
  say "systemd-analyze security (informational): $(grep -o 'Overall exposure level.*' "$RUN_OUT")"
else
  say "note: systemd-analyze security --offline did not run (exit $RC): $(head -c 300 "$RUN_ERR")"
fi

section "ExecStart, expanded as systemd does, with the defaults file"
# unit_value KEY UNIT: the value of the last KEY= line.
unit_value() { sed -n "s/^$1=//p" "$2" | tail -n1; }
declare -A UNIT_ENV=()
# load_env_words VALUE: an Environment= value of unquoted KEY=VALUE words.
load_env_words() {
  local w
  for w in $1; do UNIT_ENV[${w%%=*}]=${w#*=}; done
}
# load_env_file FILE: KEY=VALUE lines as systemd reads them; # and ; start comments, and one pair
# of surrounding quotes is removed (enough for the file we ship, which check_env_file keeps so).
load_env_file() {
  local line key value
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*([#\;].*)?$ ]] && continue
    key=${line%%=*}
    value=${line#*=}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
    UNIT_ENV[$key]=$value
  done <"$1"
}
# expand_exec LINE: EXEC_ARGV from an ExecStart= value: ${VAR} is one word, $VAR is split on
# white space; anything else with a $ is not something this unit does.
expand_exec() {
  local word
  local -a split
  EXEC_ARGV=()
  for word in $1; do
    if [[ $word =~ ^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$ ]]; then
      EXEC_ARGV+=("${UNIT_ENV[${BASH_REMATCH[1]}]-}")
    elif [[ $word =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
      read -r -a split <<<"${UNIT_ENV[${BASH_REMATCH[1]}]-}"
      EXEC_ARGV+=("${split[@]}")
    elif [[ $word == *'$'* ]]; then
      return 1
    else
      EXEC_ARGV+=("$word")
    fi
  done
}
DEFAULTS=$P/etc/default/ferryd
# simple_env_file FILE: every line is a comment, blank, or KEY=VALUE where VALUE has no quotes,
# backslashes, dollars or spaces, or is one "double-quoted" string without backslashes or
# dollars: read the same way by systemd, sh and load_env_file.
simple_env_file() {
  local line re='^[A-Z_][A-Z0-9_]*=([^"'"'"'\$[:space:]]*|"[^"\$]*")$'
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^(#.*)?$ || $line =~ $re ]] || {
      echo "not a simple line: $line" >&2
      return 1
    }
  done <"$1"
}
check "the defaults file has only comments and simple KEY=VALUE lines" simple_env_file "$DEFAULTS"
check "the defaults file is valid sh too" sh -n "$DEFAULTS"
EXEC=$(unit_value ExecStart "$UNIT")
load_env_words "$(unit_value Environment "$UNIT")"
load_env_file "$DEFAULTS"
if expand_exec "$EXEC"; then
  check_eq "default command line" \
    "$P/sbin/ferryd --root /srv/ferry --bind 127.0.0.1 --port 7070" "${EXEC_ARGV[*]}"
  check_eq "default command line has 7 words (FERRYD_OPTS=\"\" adds none)" 7 "${#EXEC_ARGV[@]}"
else
  fail "ExecStart uses only \${VAR} and \$VAR: $EXEC"
fi

# Without the defaults file, the unit's Environment= gives the same command line.
UNIT_ENV=()
load_env_words "$(unit_value Environment "$UNIT")"
expand_exec "$EXEC" || true
check_eq "command line without the defaults file" \
  "$P/sbin/ferryd --root /srv/ferry --bind 127.0.0.1 --port 7070" "${EXEC_ARGV[*]}"

# As an admin would edit it.
ROOT=$TMP/served
mkdir -p "$ROOT/sub"
gen_random "$ROOT/data.bin" 400000 91
printf 'note\n' >"$ROOT/sub/note.txt"
sed -e "s|^FERRYD_ROOT=.*|FERRYD_ROOT=$ROOT|" -e 's|^FERRYD_PORT=.*|FERRYD_PORT=0|' \
  -e 's|^FERRYD_OPTS=.*|FERRYD_OPTS="--log-level debug --max-block 16384"|' \
  "$DEFAULTS" >"$TMP/ferryd.edited"
UNIT_ENV=()
load_env_words "$(unit_value Environment "$UNIT")"
load_env_file "$TMP/ferryd.edited"
expand_exec "$EXEC" || true
check_eq "edited command line" \
  "$P/sbin/ferryd --root $ROOT --bind 127.0.0.1 --port 0 --log-level debug --max-block 16384" \
  "${EXEC_ARGV[*]}"

# strace shows which system calls ferryd makes; not for a sanitizer build, whose runtime makes
# its own (the filter is for the packaged build).
TRACE=""
if ((SANITIZED)); then
  say "note: sanitizer build; the system call check runs in the normal build only"
elif ! command -v strace >/dev/null; then
  say "note: strace is not installed; the system call check is skipped"
elif ! timeout 10 strace -f -qq -o /dev/null true 2>/dev/null; then
  say "note: strace cannot trace here (ptrace not permitted); the system call check is skipped"
else
  TRACE=$TMP/ferryd.strace
fi
SEQ=$((SEQ + 1))
SRV_LOG=$LOGS/ferryd.$SEQ
if [[ -n $TRACE ]]; then
  timeout -k 5 120 strace -f -qq -o "$TRACE" -- "${EXEC_ARGV[@]}" </dev/null \
    >"$SRV_LOG.out" 2>"$SRV_LOG.err" &
else
  timeout -k 5 120 "${EXEC_ARGV[@]}" </dev/null >"$SRV_LOG.out" 2>"$SRV_LOG.err" &
fi
OUTER=$!
track_pid "$OUTER"
# The process that gets SIGTERM is ferryd itself: the child of timeout, or of strace below it.
SERVER=""
find_ferryd() {
  local p=$OUTER c
  for _ in 1 2 3; do
    c=$(pgrep -P "$p" 2>/dev/null | head -n1) || return 1
    [[ -n $c ]] || return 1
    if [[ $(readlink "/proc/$c/exe" 2>/dev/null) == "$(realpath "${EXEC_ARGV[0]}")" ]]; then
      SERVER=$c
      return 0
    fi
    p=$c
  done
  return 1
}
wait_until 10 find_ferryd || true
if [[ -z $SERVER ]]; then
  fail "ferryd started from the expanded ExecStart"
  summary
fi
track_pid "$SERVER"
if ADDR=$(wait_for_port_line "$SRV_LOG.out" "$SERVER" 30); then
  pass "ferryd from the expanded ExecStart listens on $ADDR"
else
  fail "ferryd from the expanded ExecStart printed its address"
  summary
fi
FERRY_LIMIT=60
run_ferry ls "$ADDR"
check_rc "ferry ls" 0
run_ferry stat "$ADDR" data.bin
check_rc "ferry stat" 0
mkdir -p "$TMP/out"
run_ferry get "$ADDR" data.bin -o "$TMP/out/"
check_rc "ferry get" 0
check "the fetched file is identical" cmp -s "$ROOT/data.bin" "$TMP/out/data.bin"
run_ferry get "$ADDR" missing.bin -o "$TMP/out/"
check_rc "ferry get of a missing file is refused" 3
run_ferry ls "$ADDR" sub
check_rc "ferry ls sub" 0
kill -TERM "$SERVER"
wait_bg "$OUTER" 20
check_eq "ferryd exits 0 on SIGTERM" 0 "$RC"
check "ferryd logged to stderr" test -s "$SRV_LOG.err"
check_eq "stdout holds only the 'listening on' line" 1 "$(wc -l <"$SRV_LOG.out")"

if [[ -n $TRACE ]]; then
  # Every system call ferryd made, against what SystemCallFilter= allows: the union of the
  # allow lists minus the deny lists (~...), with groups expanded by systemd-analyze.
  grep -E '^SystemCallFilter=' "$UNIT" | sed 's/^SystemCallFilter=//' >"$TMP/filters"
  python3 - "$TRACE" "$TMP/filters" >"$TMP/syscall-report" <<'EOF' || true
import re, subprocess, sys

def expand(name, seen=None):
    if not name.startswith("@"):
        return {name}
    out = subprocess.run(["systemd-analyze", "syscall-filter", name],
                         capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            names |= expand(line)
    return names

allowed, denied = set(), set()
for line in open(sys.argv[2]):
    line = line.strip()
    if line.startswith("~"):
        for item in line[1:].split():
            denied |= expand(item)
    else:
        for item in line.split():
            allowed |= expand(item)
allowed -= denied

used, proc = set(), set()
for line in open(sys.argv[1]):
    m = re.match(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]", line)
    if m and m.group(1) not in ("resumed",):
        used.add(m.group(1))
    m = re.search(r'open(?:at2?)?\([^"]*"(/proc/[^"]*)"', line)
    if m:
        proc.add(m.group(1))
own = re.compile(r"/proc/(self|thread-self)(/|$)")
print(" ".join(["used:"] + sorted(used)))
print(" ".join(["denied:"] + sorted(used - allowed)))
print(" ".join(["proc:"] + sorted(p for p in proc if not own.match(p))))
EOF
  say "$(grep '^used:' "$TMP/syscall-report" || echo 'used: (no report)')"
  check "strace recorded system calls" grep -q '^used: [a-z]' "$TMP/syscall-report"
  check_eq "no system call outside SystemCallFilter=" "denied:" \
    "$(grep '^denied:' "$TMP/syscall-report")"
  check_eq "nothing opened under /proc but the process's own entries" "proc:" \
    "$(grep '^proc:' "$TMP/syscall-report")"
fi

summary
