#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called through check and wait_until
# Packaging: cpack builds the Debian package from the build directory into a temp dir; its control
# fields, Depends (against the libraries the binaries really load), conffiles, maintainer
# scripts (what they do on a system run by systemd, with stand-ins for deb-systemd-helper,
# deb-systemd-invoke and systemctl), file list, copyright file, changelog and hardening are
# checked, and lintian reports no error or warning (skipped, saying so, without lintian); the
# unpacked ferryd and ferry serve and fetch a file; dpkg installs, keeps the edited conffile,
# makes /srv/ferry, removes and purges it in a scratch root (--root), and purge removes the
# links that `systemctl enable` made; `cmake --install --prefix` into a scratch prefix gives a
# working pair of binaries. The package file name the README gives and every path its Install
# section names are checked against what cpack and `cmake --install` (prefixes /usr/local and
# /opt/ferry) make.
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

for tool in cpack cmake dpkg-deb dpkg-shlibdeps dpkg-parsechangelog dpkg objdump readelf ldd \
  systemctl; do
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
elif grep -q '^FERRY_SCDOC:FILEPATH=.*-NOTFOUND$' "$BUILD/CMakeCache.txt"; then
  MAN_NOTE="this build found no scdoc, so docs/man/CMakeLists.txt skipped the pages"
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
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
BUILD_TYPE=$(cache_value CMAKE_BUILD_TYPE)
# _FORTIFY_SOURCE needs optimisation and is left out under sanitizers (CMakeLists.txt); a build
# type of None (debhelper's) has it only from dpkg-buildflags' CPPFLAGS folded into CXXFLAGS.
FORTIFIED=0
if [[ $(cache_value FERRY_HARDEN) != OFF ]] && ((!SANITIZED)) &&
  { [[ $BUILD_TYPE =~ ^(Release|RelWithDebInfo|MinSizeRel)$ ]] ||
    [[ $(cache_value CMAKE_CXX_FLAGS) == *_FORTIFY_SOURCE* ]]; }; then
  FORTIFIED=1
fi
README=$SRC/README.md
# readme_section TITLE: the lines of the README's "## TITLE" section.
readme_section() { awk -v t="## $1" '$0 == t { f = 1; next } f && /^## / { exit } f' "$README"; }
# The absolute paths that the Install section names, each alone in backquotes.
# shellcheck disable=SC2016  # backquotes, not an expansion
mapfile -t README_PATHS < <(readme_section Install | grep -oE '`/[^` ]+`' | tr -d '`' | sort -u)
# A build without man pages cannot show where they go.
if [[ -n $MAN_NOTE ]]; then
  mapfile -t README_PATHS < <(printf '%s\n' "${README_PATHS[@]}" | grep -v '/share/man/')
fi

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
  fi
done

section "maintainer scripts under systemd (stand-ins log what they are asked)"
# The scripts as they would run on a system booted with systemd: /run/systemd/system, the path of
# deb-systemd-helper and /srv/ferry are moved into $TMP, and deb-systemd-helper,
# deb-systemd-invoke and systemctl are stand-ins that log their arguments. STUB_INSTALLED and
# STUB_ENABLED are the exit codes of `deb-systemd-helper debian-installed` (the unit was
# installed before) and `deb-systemd-helper --quiet was-enabled`.
STUBS=$TMP/stubs
SIM=$TMP/simulated
mkdir -p "$STUBS" "$SIM/run/systemd/system" "$SIM/root"
for stub in deb-systemd-helper deb-systemd-invoke systemctl; do
  # shellcheck disable=SC2016  # the stand-in's text
  {
    printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$stub" "$SIM/calls"
    printf 'case "%s $1" in\n' "$stub"
    printf '  "deb-systemd-helper debian-installed") exit "${STUB_INSTALLED:-1}" ;;\n'
    printf '  "deb-systemd-helper --quiet") exit "${STUB_ENABLED:-1}" ;;\n'
    printf 'esac\nexit 0\n'
  } >"$STUBS/$stub"
  chmod +x "$STUBS/$stub"
done
for script in postinst prerm postrm; do
  # shellcheck disable=SC2016  # ${DPKG_ROOT:-} is the script's text
  sed -e "s|/run/systemd/system|$SIM/run/systemd/system|g" \
    -e "s|/usr/bin/deb-systemd-helper|$STUBS/deb-systemd-helper|g" \
    -e 's|"${DPKG_ROOT:-}/srv/ferry"|"$SIMROOT/srv/ferry"|g' \
    "$TMP/control/$script" >"$SIM/$script"
done
# shellcheck disable=SC2016  # the scripts' text
check "the simulated scripts name nothing of this host's" \
  no_match '(^|[[:space:]"])(/run/systemd/system|/usr/bin/deb-systemd-helper)|DPKG_ROOT:-}/srv' \
  <(grep -hv '^#' "$SIM/postinst" "$SIM/prerm" "$SIM/postrm")
# simulate SCRIPT ARG...: runs the simulated script; its calls, one a line, are in $SIM/calls.
simulate() {
  : >"$SIM/calls"
  run_bounded 30 env -u DPKG_ROOT SIMROOT="$SIM/root" PATH="$STUBS:$PATH" sh "$SIM/$1" "${@:2}"
  check_rc "$* exits 0" 0
  cat "$SIM/calls" >>"$SIM/all-calls"
}
calls() { tr '\n' ';' <"$SIM/calls"; }
UNIT_NAME=ferryd.service

STUB_INSTALLED=1 simulate postinst configure
check "fresh install: /srv/ferry is made" test -d "$SIM/root/srv/ferry"
check_eq "fresh install: records the links enabling would make, reloads systemd, no more" \
  "deb-systemd-helper debian-installed $UNIT_NAME;deb-systemd-helper update-state $UNIT_NAME;systemctl --system daemon-reload;" \
  "$(calls)"
printf 'keep\n' >"$SIM/root/srv/ferry/data"
STUB_INSTALLED=0 STUB_ENABLED=1 simulate postinst configure 0.1.0-1
check "upgrade: /srv/ferry and its files are kept" test -f "$SIM/root/srv/ferry/data"
check "upgrade of a disabled unit: neither enabled nor started" \
  no_match ' (enable|reenable|start|restart) ' "$SIM/calls"
check "upgrade: restarts ferryd only if it runs (try-restart)" \
  grep -qx "deb-systemd-invoke try-restart $UNIT_NAME" "$SIM/calls"
STUB_INSTALLED=0 STUB_ENABLED=0 simulate postinst configure 0.1.0-1
check "upgrade of an enabled unit: stays enabled" \
  grep -qx "deb-systemd-helper enable $UNIT_NAME" "$SIM/calls"
check "upgrade of an enabled unit: not started" no_match ' (start|restart) ' "$SIM/calls"
simulate prerm upgrade 0.1.0-1
check_eq "prerm upgrade: does nothing" "" "$(calls)"
simulate prerm remove
check_eq "prerm remove: stops ferryd" "deb-systemd-invoke stop $UNIT_NAME;" "$(calls)"
simulate postrm remove
check_eq "postrm remove: systemd forgets the unit" "systemctl --system daemon-reload;" "$(calls)"
simulate postrm purge
check_eq "postrm purge: removes the links enabling made" "deb-systemd-helper purge $UNIT_NAME;" \
  "$(calls)"
check "postrm purge: keeps a /srv/ferry with files in it" test -f "$SIM/root/srv/ferry/data"
rm "$SIM/root/srv/ferry/data"
simulate postrm purge
check "postrm purge: removes an empty /srv/ferry" test ! -e "$SIM/root/srv/ferry"
check_eq "systemctl is called for daemon-reload only (lintian: maintainer-script-calls-systemctl)" \
  "" "$(grep '^systemctl ' "$SIM/all-calls" | grep -vx 'systemctl --system daemon-reload' || true)"

section "file list (dpkg-deb -c)"
dpkg-deb -c "$DEB" >"$TMP/contents"
awk '{ print $1, $2, $6 }' "$TMP/contents" | grep -v '/$' | sed 's/^/  /'
# Regular files and links, without the leading "./".
awk '$1 !~ /^d/ { sub(/^\.\//, "", $6); print $6 }' "$TMP/contents" | sort >"$TMP/files"
expected=(usr/sbin/ferryd usr/bin/ferry "${UNIT_DIR#/}/ferryd.service" etc/default/ferryd
  usr/share/doc/ferry/copyright usr/share/doc/ferry/changelog.Debian.gz
  usr/share/lintian/overrides/ferry)
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
check "nothing is shipped in /srv, which is the admin's (postinst makes /srv/ferry)" \
  no_match '^\./srv/' <(awk '{ print $6 }' "$TMP/contents")

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

section "copyright and changelog"
COPYRIGHT=$U/usr/share/doc/ferry/copyright
check "copyright is in Debian's machine-readable format 1.0" grep -qx \
  'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' "$COPYRIGHT"
NOTICE=$(sed -n 's/^Copyright (c) //p' "$SRC/LICENSE")
check_eq "LICENSE is the MIT licence of the ferry authors" "MIT License|2026 the ferry authors" \
  "$(head -n1 "$SRC/LICENSE")|$NOTICE"
check_eq "copyright: Files: * is LICENSE's notice, under Expat" \
  "Files: *|Copyright: $NOTICE|License: Expat|" \
  "$(grep -A2 -x 'Files: \*' "$COPYRIGHT" | tr '\n' '|')"
# The Expat text (the stand-alone License: paragraph), its DEP-5 indentation undone, is LICENSE
# from its terms on.
awk 'prev == "License: Expat" && /^ / { f = 1 } f && !/^ / { exit } f { print } { prev = $0 }' \
  "$COPYRIGHT" |
  sed -e 's/^ //' -e 's/^\.$//' >"$TMP/expat"
sed -n '/^Permission is hereby granted/,$p' "$SRC/LICENSE" >"$TMP/license-terms"
check "copyright: the Expat text is LICENSE's" cmp -s "$TMP/expat" "$TMP/license-terms"
for license in BSD-3-clause BSD-2-clause; do
  check "copyright: $license, named in the Comment, has its text" \
    grep -qx "License: $license" "$COPYRIGHT"
done
CHANGELOG=$U/usr/share/doc/ferry/changelog.Debian.gz
check "changelog.Debian.gz is valid gzip" gzip -t "$CHANGELOG"
# gzip -n: FLG (byte 3) names no file and MTIME (bytes 4 to 7) is 0, as reproducible builds ask.
check_eq "changelog.Debian.gz has no name or time stamp (gzip -n)" "00 00 00 00 00" \
  "$(od -An -tx1 -j3 -N5 "$CHANGELOG" | xargs)"
gzip -dc "$CHANGELOG" >"$TMP/changelog"
check_eq "changelog: its version is the package's" "$VERSION-1" \
  "$(dpkg-parsechangelog -l "$TMP/changelog" -S Version 2>/dev/null)"
check_eq "changelog: signed by the Maintainer" "$(field Maintainer)" \
  "$(dpkg-parsechangelog -l "$TMP/changelog" -S Maintainer 2>/dev/null)"

section "hardening (readelf)"
if [[ $(cache_value FERRY_HARDEN) == OFF ]]; then
  say "skip: this build has FERRY_HARDEN=OFF"
else
  for bin in usr/sbin/ferryd usr/bin/ferry; do
    readelf -hld --dyn-syms -W "$U/$bin" >"$TMP/readelf" 2>/dev/null || true
    check "$bin is a position-independent executable" grep -qE 'Type: +DYN ' "$TMP/readelf"
    check "$bin has a RELRO segment" grep -q 'GNU_RELRO' "$TMP/readelf"
    check "$bin binds now (-z now)" grep -qE '\(FLAGS(_1)?\).* (BIND_NOW|NOW)( |$)' "$TMP/readelf"
    check "$bin has a stack protector" grep -q '__stack_chk_fail' "$TMP/readelf"
    if ((FORTIFIED)); then
      check "$bin calls fortified functions (_FORTIFY_SOURCE)" \
        grep -qE ' __[a-z0-9_]+_chk(@|$)' <(grep -v __stack_chk_fail "$TMP/readelf")
    else
      say "note: $bin: no _FORTIFY_SOURCE in build type '$BUILD_TYPE' (sanitizers: $SANITIZED)"
    fi
  done
fi

section "lintian"
if ! command -v lintian >/dev/null; then
  say "skip: lintian is not installed (apt-get install lintian, or scripts/install-deps.sh)"
else
  # --show-overrides lists what the package's overrides hide, as O: lines: only the one tag
  # cmake/deb/lintian-overrides explains may be among them.
  run_bounded 300 lintian --show-overrides --fail-on none "$DEB"
  sed 's/^/  /' "$RUN_OUT"
  check_rc "lintian runs" 0
  # A sanitizer build's package keeps its symbols on purpose (cmake/packaging.cmake does not strip
  # it, so that the reports name functions), which lintian reports for the two programs; it is
  # a test build, never one to hand out. So is a build without man pages (MAN_NOTE), which
  # lintian reports the same way. Nothing else may show.
  allowed=()
  if ((SANITIZED)); then
    allowed+=("E: ferry: unstripped-binary-or-object [usr/bin/ferry]"
      "E: ferry: unstripped-binary-or-object [usr/sbin/ferryd]")
  fi
  if [[ -n $MAN_NOTE ]]; then
    allowed+=("W: ferry: no-manual-page [usr/bin/ferry]" "W: ferry: no-manual-page [usr/sbin/ferryd]")
  fi
  check_eq "lintian: no errors or warnings (but for a sanitizer build's symbols, or no man pages)" \
    "$(printf '%s\n' "${allowed[@]}" | sort)" "$(grep -E '^[EW]: ' "$RUN_OUT" | sort || true)"
  check_eq "lintian: the only override is the one explained" \
    "O: ferry: initial-upload-closes-no-bugs [usr/share/doc/ferry/changelog.Debian.gz:1]" \
    "$(grep '^O: ' "$RUN_OUT" || true)"
fi

section "the README against the package"
mapfile -t README_DEBS < <(grep -oE 'ferry_[A-Za-z0-9.~+_-]*\.deb' "$README" | sort -u)
check_eq "the README names one package file, the one cpack makes" \
  "ferry_${VERSION}-1_amd64.deb" "${README_DEBS[*]}"
if [[ $ARCH != amd64 ]]; then
  say "note: this machine makes $(basename "$DEB"); the README names the amd64 one"
fi
check_int "the README's Install section names install paths" "${#README_PATHS[@]}" -ge 10

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

section "dpkg --root: install, enable, conffile kept, remove, purge"
# A scratch dpkg database; maintainer scripts run outside a chroot with DPKG_ROOT set, which they
# and deb-systemd-helper honour: they work inside the root and leave this host's systemd alone.
# Depends cannot be met in an empty root, hence --force-depends.
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
check "postinst made /srv/ferry" test -d "$DR/srv/ferry"
for path in "${README_PATHS[@]}"; do
  case $path in /usr/local/* | /opt/* | /etc/opt/*) continue ;; esac
  check "the README's $path is where the package put it" test -e "$DR$path"
done
WANTS=/etc/systemd/system/multi-user.target.wants/ferryd.service
check "postinst recorded the link that enabling makes, for purge" grep -qx "$WANTS" \
  "$DR/var/lib/systemd/deb-systemd-helper-enabled/ferryd.service.dsh-also"
check "postinst did not enable the unit" test ! -e "$DR$WANTS" -a ! -L "$DR$WANTS"
run_bounded 60 systemctl --root="$DR" enable ferryd.service
check_rc "systemctl --root enable ferryd.service" 0
check "enable made $WANTS" test -L "$DR$WANTS"
printf 'FERRYD_PORT=7171\n' >>"$DR/etc/default/ferryd"
dpkg_r -i "$DEB"
check_rc "dpkg -i again over an edited conffile" 0
check "the edited /etc/default/ferryd is kept" grep -qx 'FERRYD_PORT=7171' "$DR/etc/default/ferryd"
check "the unit stays enabled across the upgrade" test -L "$DR$WANTS"
dpkg_r -r ferry
check_rc "dpkg -r" 0
check "remove takes the programs" test ! -e "$DR/usr/sbin/ferryd"
check "remove keeps the conffile" test -f "$DR/etc/default/ferryd"
dpkg_r -P ferry
check_rc "dpkg -P" 0
check "purge takes the conffile" test ! -e "$DR/etc/default/ferryd"
check "purge takes the link that enabling made" test ! -e "$DR$WANTS" -a ! -L "$DR$WANTS"
check "purge takes the empty /srv/ferry" test ! -e "$DR/srv/ferry"

section "cmake --install --prefix"
P=$TMP/prefix
locked_keep_manifest run_bounded 120 cmake --install "$BUILD" --prefix "$P" || RC=1
check_rc "cmake --install --prefix $P" 0
((RC == 0)) || cat "$RUN_OUT" "$RUN_ERR"
inst=(sbin/ferryd bin/ferry lib/systemd/system/ferryd.service etc/default/ferryd
  share/doc/ferry/copyright)
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
check "the Debian changelog and lintian overrides are the package's alone" \
  test ! -e "$P/share/doc/ferry/changelog.Debian.gz" -a ! -e "$P/share/lintian"
serve_and_fetch installed "$P/sbin/ferryd" "$P/bin/ferry"

section "cmake --install with the prefixes the README names (DESTDIR)"
# install_under PREFIX: DESTDIR=$TMP/dest/PREFIX cmake --install --prefix PREFIX.
install_under() {
  locked_keep_manifest run_bounded 120 env DESTDIR="$TMP/dest$1" \
    cmake --install "$BUILD" --prefix "$1" || RC=1
  check_rc "DESTDIR=$TMP/dest$1 cmake --install --prefix $1" 0
}
install_under /usr/local
install_under /opt/ferry
L=$TMP/dest/usr/local
O=$TMP/dest/opt/ferry
for path in "${README_PATHS[@]}"; do
  case $path in
    /usr/local/*) check "the README's $path is where --prefix /usr/local puts it" test -e "$L$path" ;;
    /opt/* | /etc/opt/*) check "the README's $path is there with --prefix /opt/ferry" test -e "$O$path" ;;
  esac
done
check "the README names the defaults file under /usr/local" \
  grep -qxF /usr/local/etc/default/ferryd <(printf '%s\n' "${README_PATHS[@]}")
check "the README names the defaults file for /opt/ferry" \
  grep -qxF /etc/opt/ferry/default/ferryd <(printf '%s\n' "${README_PATHS[@]}")
check "--prefix /usr/local: the unit reads /usr/local/etc/default/ferryd" grep -qx \
  'EnvironmentFile=-/usr/local/etc/default/ferryd' "$L/usr/local/lib/systemd/system/ferryd.service"
check "--prefix /usr/local: the unit runs /usr/local/sbin/ferryd" grep -q \
  '^ExecStart=/usr/local/sbin/ferryd ' "$L/usr/local/lib/systemd/system/ferryd.service"
check "--prefix /usr/local: nothing in /etc" test ! -e "$L/etc"
check "--prefix /usr/local: no Debian changelog, as the README says" \
  test ! -e "$L/usr/local/share/doc/ferry/changelog.Debian.gz"
check "--prefix /opt/ferry: the unit reads /etc/opt/ferry/default/ferryd" grep -qx \
  'EnvironmentFile=-/etc/opt/ferry/default/ferryd' "$O/opt/ferry/lib/systemd/system/ferryd.service"
check_eq "cmake --install left nothing in the build or source tree" "" "$(new_in_trees)"

summary
