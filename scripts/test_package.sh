#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check and wait_until
# Packaging: cpack builds the Debian package from the build directory into a temp dir; its control
# fields, Depends (against the libraries the binaries really load), conffiles, maintainer
# scripts and file list are checked; the unpacked ferryd and ferry serve and fetch a file; dpkg
# installs, keeps the edited conffile, removes and purges it in a scratch root (--root); and
# `cmake --install --prefix` into a scratch prefix gives a working pair of binaries.
#
# The build directory is the one FERRYD lives in (BUILD/server/ferryd), the source tree the one
# this script lives in. Nothing is left in either (both cpack and cmake --install write
# BUILD/install_manifest.txt, which is put back as it was), and no service is started.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(cd "$(dirname "$FERRYD")/.." && pwd)
say "source: $SRC"
say "build:  $BUILD"

for tool in cpack cmake dpkg-deb dpkg-shlibdeps dpkg objdump ldd; do
  command -v "$tool" >/dev/null || fail "$tool is installed (scripts/install-deps.sh installs it)"
done
if [[ ! -f $BUILD/CPackConfig.cmake ]]; then
  fail "$BUILD/CPackConfig.cmake exists (cmake/packaging.cmake was included)"
fi
((FAILED == 0)) || summary

# What the tree holds that the package must then carry.
MAN_NOTE=""
if [[ ! -f $SRC/docs/man/ferry.1.scd || ! -f $SRC/docs/man/ferryd.8.scd ]]; then
  MAN_NOTE="docs/man/ferry.1.scd and ferryd.8.scd are not in the tree yet"
elif [[ ! -d $BUILD/docs/man ]]; then
  MAN_NOTE="docs/man/*.scd exist, but this build does not generate them"
  MAN_NOTE+=" (no add_subdirectory(docs/man) in CMakeLists.txt yet, or not reconfigured)"
fi
COMPLETIONS=()
for c in ferry ferryd; do
  if [[ -f $SRC/client/completion/$c ]]; then
    COMPLETIONS+=("$c")
  else
    say "note: client/completion/$c is not in the tree yet; not expected in the package"
  fi
done
[[ -z $MAN_NOTE ]] || say "note: $MAN_NOTE; man pages are not expected in the package"

SANITIZED=0
if grep -Eq '^FERRY_SANITIZE:STRING=.+' "$BUILD/CMakeCache.txt"; then SANITIZED=1; fi
VERSION=$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")$/\1/p' "$BUILD/CPackConfig.cmake")
ARCH=$(dpkg --print-architecture)
UNIT_DIR=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
UNIT_DIR=${UNIT_DIR:-/usr/lib/systemd/system}

# Files that must exist for the checks to mean anything: a build that is out of date would
# package stale binaries.
for f in "$FERRYD" "$FERRY"; do
  [[ -x $f ]] || fail "$f is built"
done

section "cpack -G DEB"
touch "$TMP/before-cpack"
locked_keep_manifest run_bounded 300 cpack --config "$BUILD/CPackConfig.cmake" -G DEB \
  -B "$TMP/cpack" || RC=1
check_rc "cpack builds the package" 0
if ((RC != 0)); then
  cat "$RUN_OUT" "$RUN_ERR"
  summary
fi
DEB=$TMP/cpack/ferry_${VERSION}-1_${ARCH}.deb
check "the package is $(basename "$DEB")" test -f "$DEB"
[[ -f $DEB ]] || summary
say "$(du -h "$DEB" | cut -f1) $(basename "$DEB")"
# new_in_trees: what cpack or cmake --install might have left in the build or source tree.
new_in_trees() {
  find "$BUILD" "$SRC" -maxdepth 2 -newer "$TMP/before-cpack" \( -name _CPack_Packages \
    -o -name '*.deb' -o -name 'install_manifest*.txt' -o -name '*.ddeb' \) -print
}
check_eq "cpack left nothing in the build or source tree" "" "$(new_in_trees)"

section "control fields (dpkg-deb -I)"
dpkg-deb -I "$DEB" >"$TMP/info"
sed 's/^/  /' "$TMP/info"
field() { dpkg-deb -f "$DEB" "$1"; }
check_eq "Package" ferry "$(field Package)"
check_eq "Version" "$VERSION-1" "$(field Version)"
check_eq "Architecture" "$ARCH" "$(field Architecture)"
check_eq "Section" net "$(field Section)"
check_eq "Priority" optional "$(field Priority)"
check "Maintainer is 'name <address>'" \
  grep -Eq '^[^<>]+ <[^<>@ ]+@[^<>@ ]+>$' <<<"$(field Maintainer)"
check "Description has a synopsis and an extended part" \
  test "$(field Description | wc -l)" -ge 3
DEPENDS=$(field Depends)
dep_names() { tr ',|' '\n' <<<"$DEPENDS" | sed -E 's/^ *([^ (]+).*$/\1/' | sort -u; }
for pkg in libuv1 libfmt9 libc6 libstdc++6 libgcc-s1; do
  check "Depends names $pkg" grep -qx "$pkg" <(dep_names)
done
if ((SANITIZED)); then
  check "Depends names libasan8 (sanitizer build)" grep -qx libasan8 <(dep_names)
fi
check_eq "conffiles" "/etc/default/ferryd" "$(dpkg-deb -I "$DEB" conffiles)"

mkdir -p "$TMP/control"
dpkg-deb -e "$DEB" "$TMP/control"
for script in postinst prerm postrm; do
  if [[ -f $TMP/control/$script ]]; then
    check "$script is valid sh" sh -n "$TMP/control/$script"
    check "$script is executable" test -x "$TMP/control/$script"
    # The package must never start or enable the service by itself.
    check "$script neither starts, restarts nor enables anything" no_match \
      '^([^#]*[[:space:]])?(start|restart|try-restart|enable|reenable|preset)([[:space:]]|$)' \
      "$TMP/control/$script"
  fi
done

section "file list (dpkg-deb -c)"
dpkg-deb -c "$DEB" >"$TMP/contents"
awk '{ print $1, $2, $6 }' "$TMP/contents" | grep -v '/$' | sed 's/^/  /'
# Regular files and links, without the leading "./".
awk '$1 !~ /^d/ { sub(/^\.\//, "", $6); print $6 }' "$TMP/contents" | sort >"$TMP/files"
expected=(usr/sbin/ferryd usr/bin/ferry "${UNIT_DIR#/}/ferryd.service" etc/default/ferryd)
for c in "${COMPLETIONS[@]}"; do expected+=("usr/share/bash-completion/completions/$c"); done
if [[ -z $MAN_NOTE ]]; then
  expected+=(usr/share/man/man1/ferry.1.gz usr/share/man/man8/ferryd.8.gz)
fi
printf '%s\n' "${expected[@]}" | sort >"$TMP/files.expected"
for f in "${expected[@]}"; do
  check "the package holds /$f" grep -qx "$f" "$TMP/files"
done
check_eq "the package holds nothing else" "" \
  "$(comm -23 "$TMP/files" "$TMP/files.expected" | tr '\n' ' ')"
mode_of() { awk -v f="./$1" '$6 == f { print $1, $2 }' "$TMP/contents"; }
check_eq "usr/sbin/ferryd is root-owned 0755" "-rwxr-xr-x root/root" "$(mode_of usr/sbin/ferryd)"
check_eq "usr/bin/ferry is root-owned 0755" "-rwxr-xr-x root/root" "$(mode_of usr/bin/ferry)"
check_eq "etc/default/ferryd is root-owned 0644" "-rw-r--r-- root/root" \
  "$(mode_of etc/default/ferryd)"

section "unpacked package (dpkg-deb -x)"
U=$TMP/unpacked
dpkg-deb -x "$DEB" "$U"
UNIT=$U$UNIT_DIR/ferryd.service
# shellcheck disable=SC2016  # systemd's variables, not the shell's
exec_start='ExecStart=/usr/sbin/ferryd --root ${FERRYD_ROOT} --bind ${FERRYD_BIND}'
# shellcheck disable=SC2016
exec_start+=' --port ${FERRYD_PORT} $FERRYD_OPTS'
check "the unit runs /usr/sbin/ferryd" grep -qxF -- "$exec_start" "$UNIT"
check "the unit reads /etc/default/ferryd" grep -qx 'EnvironmentFile=-/etc/default/ferryd' "$UNIT"
check "the unit has no unsubstituted @VAR@" no_match '@[A-Z_]+@' "$UNIT"
check "etc/default/ferryd is server/systemd/ferryd.default" \
  cmp -s "$U/etc/default/ferryd" "$SRC/server/systemd/ferryd.default"

# Every shared library the binaries load must come from a package that Depends names.
for bin in usr/sbin/ferryd usr/bin/ferry; do
  ldd "$U/$bin" >"$TMP/ldd" 2>&1 || true
  check "$bin: every shared library is found" no_match 'not found' "$TMP/ldd"
  while read -r soname; do
    path=$(awk -v s="$soname" '$1 == s && $3 ~ /^\// { print $3 }' "$TMP/ldd" | head -n1)
    [[ -n $path ]] || { fail "$bin: $soname resolves to a path"; continue; }
    owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$(realpath "$path")" 2>/dev/null ||
      dpkg -S "/usr$path" 2>/dev/null || true)
    owner=${owner%%:*}
    if [[ -z $owner ]]; then
      fail "$bin: $soname ($path) belongs to an installed package"
      continue
    fi
    check "$bin needs $soname from $owner, which Depends names" grep -qx "$owner" <(dep_names)
  done < <(objdump -p "$U/$bin" | awk '$1 == "NEEDED" { print $2 }')
done

for bin in usr/sbin/ferryd usr/bin/ferry; do
  run_bounded 30 "$U/$bin" --help
  check_rc "unpacked $bin --help" 0
done

ROOT=$TMP/root
mkdir -p "$ROOT/sub"
gen_random "$ROOT/data.bin" 700000 81
printf 'hello from the package\n' >"$ROOT/sub/note.txt"
FERRY_LIMIT=60

# serve_and_fetch LABEL FERRYD FERRY: the pair serves $ROOT and fetches from it.
serve_and_fetch() {
  local label=$1 saved_ferryd=$FERRYD saved_ferry=$FERRY
  FERRYD=$2
  FERRY=$3
  if ! start_server "$ROOT"; then
    fail "$label: ferryd started"
    FERRYD=$saved_ferryd FERRY=$saved_ferry
    return 0
  fi
  pass "$label: ferryd started on $SRV_ADDR"
  run_ferry ls "$SRV_ADDR"
  check_rc "$label: ferry ls" 0
  check_eq "$label: ls lists the root" "data.bin sub" "$(tr '\n' ' ' <"$RUN_OUT" | sed 's/ $//')"
  run_ferry stat "$SRV_ADDR" data.bin --json
  check_rc "$label: ferry stat" 0
  check_eq "$label: stat size" 700000 "$(json_get "$RUN_OUT" size 2>/dev/null)"
  local out=$TMP/out.$label
  mkdir -p "$out"
  run_ferry get "$SRV_ADDR" data.bin -o "$out/"
  check_rc "$label: ferry get data.bin" 0
  check "$label: the fetched file is identical" cmp -s "$ROOT/data.bin" "$out/data.bin"
  run_ferry get "$SRV_ADDR" sub/note.txt -o "$out/note.txt"
  check_rc "$label: ferry get sub/note.txt" 0
  check "$label: the fetched note is identical" cmp -s "$ROOT/sub/note.txt" "$out/note.txt"
  stop_server "$SRV_PID"
  check_eq "$label: ferryd exits 0 on SIGTERM" 0 "$STOP_RC"
  FERRYD=$saved_ferryd
  FERRY=$saved_ferry
}
serve_and_fetch unpacked "$U/usr/sbin/ferryd" "$U/usr/bin/ferry"

section "dpkg --root: install, conffile kept, remove, purge"
# A scratch dpkg database; maintainer scripts run outside a chroot with DPKG_ROOT set, which
# makes them do nothing (they would only talk to a running systemd). Depends cannot be met in
# an empty root, hence --force-depends.
DR=$TMP/dpkg-root
mkdir -p "$DR/var/lib/dpkg/info" "$DR/var/lib/dpkg/updates" "$DR/var/lib/dpkg/triggers"
: >"$DR/var/lib/dpkg/status"
: >"$DR/var/lib/dpkg/available"
dpkg_r() {
  run_bounded 60 dpkg --root="$DR" --log=/dev/null --force-script-chrootless --force-depends \
    --force-not-root --force-confold "$@"
}
query() { dpkg-query --admindir="$DR/var/lib/dpkg" -W -f="$1" ferry 2>/dev/null || true; }
dpkg_r -i "$DEB"
check_rc "dpkg -i into the scratch root" 0
# shellcheck disable=SC2016  # dpkg-query's fields
check_eq "status after install" "install ok installed" "$(query '${Status}')"
# shellcheck disable=SC2016  # dpkg-query's fields
check "/etc/default/ferryd is registered as a conffile" \
  grep -q '^ /etc/default/ferryd [0-9a-f]\{32\}$' <(query '${Conffiles}\n')
check "the package's files are in the scratch root" test -x "$DR/usr/sbin/ferryd"
printf 'FERRYD_PORT=7171\n' >>"$DR/etc/default/ferryd"
dpkg_r -i "$DEB"
check_rc "dpkg -i again over an edited conffile" 0
check "the edited /etc/default/ferryd is kept" grep -qx 'FERRYD_PORT=7171' "$DR/etc/default/ferryd"
dpkg_r -r ferry
check_rc "dpkg -r" 0
check "remove takes the programs" test ! -e "$DR/usr/sbin/ferryd"
check "remove keeps the conffile" test -f "$DR/etc/default/ferryd"
dpkg_r -P ferry
check_rc "dpkg -P" 0
check "purge takes the conffile" test ! -e "$DR/etc/default/ferryd"

section "cmake --install --prefix"
P=$TMP/prefix
locked_keep_manifest run_bounded 120 cmake --install "$BUILD" --prefix "$P" || RC=1
check_rc "cmake --install --prefix $P" 0
((RC == 0)) || cat "$RUN_OUT" "$RUN_ERR"
inst=(sbin/ferryd bin/ferry lib/systemd/system/ferryd.service etc/default/ferryd)
for c in "${COMPLETIONS[@]}"; do inst+=("share/bash-completion/completions/$c"); done
if [[ -z $MAN_NOTE ]]; then inst+=(share/man/man1/ferry.1.gz share/man/man8/ferryd.8.gz); fi
for f in "${inst[@]}"; do
  check "installed $f" test -f "$P/$f"
  check "install_manifest.txt lists $f" grep -qx "$P/$f" "$TMP/install_manifest.last"
done
check "the installed unit runs $P/sbin/ferryd" \
  grep -q "^ExecStart=$P/sbin/ferryd --root " "$P/lib/systemd/system/ferryd.service"
check "the installed unit reads $P/etc/default/ferryd" \
  grep -qx "EnvironmentFile=-$P/etc/default/ferryd" "$P/lib/systemd/system/ferryd.service"
if [[ -z $MAN_NOTE ]]; then
  check "ferry.1.gz is a gzipped man page" \
    grep -q '^\.TH' <(gzip -dc "$P/share/man/man1/ferry.1.gz")
fi
for bin in sbin/ferryd bin/ferry; do
  run_bounded 30 "$P/$bin" --help
  check_rc "installed $bin --help" 0
done
serve_and_fetch installed "$P/sbin/ferryd" "$P/bin/ferry"
check_eq "cmake --install left nothing in the build or source tree" "" "$(new_in_trees)"

summary
