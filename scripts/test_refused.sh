#!/usr/bin/env bash
# Refusals and error exits: paths outside the root, symlinks that escape or loop, special files
# and directories are refused with exit 3, one line on stderr and no output file, and the server
# keeps serving. Usage errors exit 2, an absent server 4, an unwritable output 6.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

ROOT=$TMP/srv/root
mkdir -p "$ROOT/adir"
printf 'fine\n' >"$ROOT/ok.txt"
printf 'inside\n' >"$ROOT/adir/inner.txt"
ln -s /etc/passwd "$ROOT/passwd-link"
ln -s ../../../../../../../../etc/passwd "$ROOT/escape-link"
ln -s ../secret.txt "$ROOT/up-link"
printf 'secret\n' >"$TMP/srv/secret.txt"
ln -s /etc "$ROOT/etc-link"
ln -s loop-b "$ROOT/loop-a"
ln -s loop-a "$ROOT/loop-b"
mkfifo "$ROOT/fifo"
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(sys.argv[1])' "$ROOT/sock"
check "the UNIX socket exists" test -S "$ROOT/sock"

start_server "$ROOT" || {
  fail "ferryd started"
  summary
}
pass "ferryd started on $SRV_ADDR"
ADDR=$SRV_ADDR
FERRY_LIMIT=60

# one_line_err DESC: the last run printed exactly one non-empty line on stderr.
one_line_err() {
  local lines
  lines=$(wc -l <"$RUN_ERR")
  if [[ "$lines" == 1 && -n $(tr -d '[:space:]' <"$RUN_ERR") ]]; then
    pass "$1: one line on stderr: $(cat "$RUN_ERR")"
  else
    fail "$1: expected one line on stderr, got $lines: $(tr '\n' '|' <"$RUN_ERR")"
  fi
}

# refused_get REMOTE: exit 3, exactly one non-empty line on stderr, nothing written locally.
refused_get() {
  local remote=$1 dir
  dir=$(mktemp -d "$TMP/get.XXXXXX")
  cd "$dir"
  run_ferry get "$ADDR" --timeout 10 -- "$remote"
  check_rc "get '$remote' is refused" 3
  one_line_err "get '$remote'"
  local left
  left=$(find "$dir" -mindepth 1 | sed "s|^$dir/||" | tr '\n' ' ')
  check_eq "get '$remote': no output, .part or .part.state created" "" "$left"
  cd "$TMP"
}

section "refused gets"
for remote in ../x ../../etc/passwd /etc/passwd passwd-link escape-link up-link etc-link/passwd \
  etc-link loop-a fifo sock adir adir/../../x; do
  refused_get "$remote"
done
check "ferryd is still running" alive "$SRV_PID"

section "the server keeps serving"
mkdir -p "$TMP/after"
cd "$TMP/after"
run_ferry get "$ADDR" ok.txt
check_rc "a normal get works after the refusals" 0
check "ok.txt is identical to the source" cmp -s ok.txt "$ROOT/ok.txt"
run_ferry get "$ADDR" adir/inner.txt
check_rc "a nested get works" 0
cd "$TMP"

section "stat and ls of missing or refused paths"
run_ferry stat "$ADDR" missing.txt
check_rc "stat of a missing path" 3
one_line_err "stat of a missing path"
run_ferry ls "$ADDR" missing-dir
check_rc "ls of a missing path" 3
run_ferry stat "$ADDR" ../x
check_rc "stat ../x" 3
run_ferry ls "$ADDR" etc-link
check_rc "ls of a directory symlink leaving the root" 3
run_ferry stat "$ADDR" fifo --json
check_rc "stat of a FIFO still answers (type other)" 0
if is_json "$RUN_OUT"; then
  check_eq "stat --json of a FIFO: type" other "$(json_get "$RUN_OUT" type)"
else
  fail "stat --json of a FIFO prints JSON"
fi

section "usage errors"
usage() {
  local desc=$1
  shift
  run_ferry "$@"
  check_rc "usage: $desc" 2
}
usage "no subcommand"
usage "unknown subcommand" frobnicate
usage "get without arguments" get
usage "get without PATH" get "$ADDR"
usage "stat without PATH" stat "$ADDR"
usage "ls without ADDR" ls
usage "bad port in the address" ls 1.2.3.4:notaport
usage "bad port in a get" get 1.2.3.4:notaport ok.txt
usage "port out of range" ls 127.0.0.1:70000
usage "unknown option" ls "$ADDR" --bogus
usage "unknown option to get" get "$ADDR" ok.txt --frobnicate
usage "--block-size 0" get "$ADDR" ok.txt --block-size 0
usage "--block-size too large" get "$ADDR" ok.txt --block-size 100000
usage "--timeout -1" ls "$ADDR" --timeout -1
usage "--timeout not a number" ls "$ADDR" --timeout soon
usage "too many arguments" stat "$ADDR" a b
run_bounded 30 "$FERRYD"
check_rc "ferryd without --root" 2
run_bounded 30 "$FERRYD" --root "$TMP/does-not-exist" --port 0
check_rc "ferryd with a missing root" 2

section "no server"
PORT=$(free_udp_port)
for sub in ls stat get; do
  dir=$(mktemp -d "$TMP/noserver.XXXXXX")
  cd "$dir"
  args=("$sub" "127.0.0.1:$PORT")
  [[ $sub == ls ]] || args+=(ok.txt)
  run_ferry "${args[@]}" --timeout 1
  check_rc "ferry ${args[*]} (nothing listening) --timeout 1" 4
  one_line_err "ferry $sub (nothing listening)"
  check_int "ferry $sub gave up within 5 s (ms)" $((RUN_US / 1000)) -lt 5000
  check_eq "ferry $sub: nothing written locally" "" "$(ls -A "$dir")"
  cd "$TMP"
done
run_ferry get "127.0.0.1:$PORT" ok.txt -o "$TMP/noserver-out" --timeout 1
check_rc "get -o OUT against a free port" 4
check "nothing written for -o" test ! -e "$TMP/noserver-out"
check "no .part written for -o" test ! -e "$TMP/noserver-out.part"

section "local I/O errors"
run_ferry get "$ADDR" ok.txt -o "$TMP/no/such/dir/out.txt"
check_rc "-o under a directory that does not exist" 6
one_line_err "-o under a directory that does not exist"
run_ferry get "$ADDR" ok.txt -o /proc/ferry-cannot-write-here
check_rc "-o /proc/ferry-cannot-write-here" 6
if [[ $(id -u) != 0 ]]; then
  mkdir -p "$TMP/readonly"
  chmod 555 "$TMP/readonly"
  run_ferry get "$ADDR" ok.txt -o "$TMP/readonly/out.txt"
  check_rc "-o into a read-only directory" 6
  chmod 755 "$TMP/readonly"
else
  say "note: running as root, so a read-only directory is no obstacle; skipped that case"
fi
check "ferryd is still running" alive "$SRV_PID"

stop_server "$SRV_PID"
check_eq "ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
summary
