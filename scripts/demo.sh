#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine, builds ferry, then serves a generated sample
# directory, lists it and fetches a file from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Only the two programs it runs, not the test suite.
bash scripts/build.sh build --target ferryd --target ferry
ferryd=$PWD/build/server/ferryd
ferry=$PWD/build/client/ferry

work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/shared-dir/sub/dir" "$work/downloads"
echo "hello from ferry" > "$work/shared-dir/README.txt"
head -c 64M /dev/urandom > "$work/shared-dir/sub/file.iso"
echo "nested" > "$work/shared-dir/sub/dir/notes.txt"

"$ferryd" --root "$work/shared-dir" --port 0 > "$work/ferryd.out" 2> "$work/ferryd.err" &
server_pid=$!
for _ in $(seq 100); do grep -q '^listening on' "$work/ferryd.out" 2>/dev/null && break; sleep 0.05; done
addr=$(awk 'NR==1 {print $3}' "$work/ferryd.out")
echo "\$ ferryd --root shared-dir --port 0"
head -1 "$work/ferryd.out"

run() { echo; echo "\$ ferry $*"; (cd "$work/downloads" && "$ferry" "$@"); }
run ls "$addr"
run ls "$addr" sub -l
run stat "$addr" sub/file.iso
run get "$addr" sub/file.iso --json
cmp "$work/shared-dir/sub/file.iso" "$work/downloads/file.iso"
echo
echo "demo: fetched sub/file.iso and it is identical to the original."
