#!/usr/bin/env bash
# The documentation: the man pages ferry(1) and ferryd(8) that the build generates from
# docs/man/*.scd, and the bash completion in client/completion/.
#
#   - mandoc -T lint -W warning reports nothing for either page, and man(1) renders both
#     without a warning;
#   - every subcommand, every option and every exit code that the binaries' --help prints is
#     in the page (an option of `ferry get` in the page's "get" or "Common options" section),
#     so the pages cannot silently fall behind the code; every --help shows examples;
#   - the completion files parse, and, with bash-completion loaded, complete subcommands,
#     options (every one that --help prints), local files after -o, and remote paths from a
#     running ferryd, and give up quickly and silently on a server that does not answer;
#   - the README, the unit and the defaults file give the same root, ReadOnlyPaths= advice and
#     settings; scripts/demo.sh builds only ferryd and ferry; scripts/build.sh keeps the
#     generator of a tree configured before and turns FERRY_WERROR on (scripts/test_package.sh
#     checks the README's Install section against the package and `cmake --install`).
#
# ctest runs it with FERRYD and FERRY set; the pages are looked for in BUILD/man, with BUILD the
# directory above the one holding ferryd.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
lib_init

SRC=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
BUILD=$(realpath "$(dirname "$FERRYD")/..")
MAN_DIR=$BUILD/man
FERRY_PAGE=$MAN_DIR/ferry.1
FERRYD_PAGE=$MAN_DIR/ferryd.8
COMPLETION_FERRY=$SRC/client/completion/ferry
COMPLETION_FERRYD=$SRC/client/completion/ferryd
BASH_COMPLETION=${BASH_COMPLETION:-/usr/share/bash-completion/bash_completion}
say "pages:  $MAN_DIR"

# need TOOL PACKAGE: fails the run at once if TOOL is missing.
need() {
  if ! command -v "$1" >/dev/null; then
    fail "$1 is installed (apt-get install $2, or run scripts/install-deps.sh)"
    summary
  fi
}
need scdoc scdoc
need mandoc mandoc
need man man-db
if [[ ! -r "$BASH_COMPLETION" ]]; then
  fail "bash-completion is installed (apt-get install bash-completion)"
  summary
fi

# roff_text PAGE: the page's roff source with font changes, \& and \- escapes undone, so that
# "\fB\-\-block\-size\fR" reads "--block-size".
roff_text() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\&//g' -e "s/\\\\(aq/'/g" "$1"; }

# roff_sections TEXT_FILE NAME...: the lines of the .SH or .SS sections with these names.
roff_sections() {
  local file=$1
  shift
  awk -v names="$(printf '%s\n' "$@")" '
    BEGIN { n = split(names, list, "\n"); for (i = 1; i <= n; i++) want[list[i]] = 1 }
    /^\.S[HS] / { name = substr($0, 5); gsub(/"/, "", name); inside = (name in want); next }
    inside { print }' "$file"
}

# roff_terms: of the text on stdin, the terms of definition lists, that is the lines right before
# an indented block (.RS), such as "-o OUT, --output OUT" or "--timeout S". An option counts as
# described only if it is such a term, not if it is merely mentioned.
roff_terms() { awk '/^\.RS/ && prev !~ /^\./ { print prev } { prev = $0 }'; }

# has_word FILE WORD: FILE holds WORD (an option such as --block-size or -o) as a whole token.
# shellcheck disable=SC2317  # called through check
has_word() { grep -Eq -- "(^|[^A-Za-z0-9-])$2(\$|[^A-Za-z0-9-])" "$1"; }

# long_options HELP_FILE / short_options HELP_FILE: the options a --help text shows.
long_options() {
  grep -oE -- '(^|[^A-Za-z0-9-])--[a-z][a-z0-9-]*' "$1" | sed -E 's/^[^-]//' | sort -u || true
}
short_options() { sed -nE 's/^ +(-[A-Za-z]),--.*/\1/p' "$1" | sort -u; }

section "the generated pages"
for page in "$FERRY_PAGE" "$FERRYD_PAGE"; do
  if [[ ! -s "$page" ]]; then
    fail "$page exists (build the ferry_man target; cmake skips it when it finds no scdoc, so configure again after installing scdoc)"
  fi
done
((FAILED == 0)) || summary
pass "both pages were generated"
roff_text "$FERRY_PAGE" >"$TMP/ferry.1.txt"
roff_text "$FERRYD_PAGE" >"$TMP/ferryd.8.txt"

section "mandoc -T lint"
# -W warning: every message from "warning" up (warning, error, unsupp). Style messages are
# shown but not counted; see docs/man/scdoc_man.cmake for why the pages pass this level.
for page in "$FERRY_PAGE" "$FERRYD_PAGE"; do
  name=${page##*/}
  run_bounded 60 mandoc -T lint -W warning "$page"
  lint=$(cat "$RUN_OUT" "$RUN_ERR")
  if [[ "$RC" == 0 && -z "$lint" ]]; then
    pass "mandoc -T lint -W warning $name: nothing to report"
  else
    fail "mandoc -T lint -W warning $name (exit $RC): $(head -c 2000 <<<"$lint")"
  fi
  run_bounded 60 mandoc -T lint -W style "$page"
  if [[ -s "$RUN_OUT" || -s "$RUN_ERR" ]]; then
    say "note: mandoc -W style on $name (not counted):"
    cat "$RUN_OUT" "$RUN_ERR" | head -n 20
  fi
done

section "man -l"
for page in "$FERRY_PAGE" "$FERRYD_PAGE"; do
  name=${page##*/}
  LC_ALL=C.UTF-8 MANWIDTH=80 MAN_KEEP_FORMATTING='' run_bounded 60 man --warnings -l "$page"
  check_rc "man --warnings -l $name" 0
  check "man -l $name prints no warning: $(head -c 1000 "$RUN_ERR" | tr '\n' '|')" test ! -s "$RUN_ERR"
  check_int "man -l $name renders a page" "$(wc -l <"$RUN_OUT")" -ge 100
done

section "the pages against ferryd --help"
run_bounded 30 "$FERRYD" --help
check_rc "ferryd --help" 0
cp "$RUN_OUT" "$TMP/ferryd.help"
check "ferryd --help shows examples" grep -q '^Examples' "$TMP/ferryd.help"
roff_sections "$TMP/ferryd.8.txt" OPTIONS | roff_terms >"$TMP/ferryd.options.txt"
check_int "ferryd --help shows some long options" "$(long_options "$TMP/ferryd.help" | wc -l)" -ge 5
for opt in $(long_options "$TMP/ferryd.help") $(short_options "$TMP/ferryd.help"); do
  check "ferryd $opt is described under OPTIONS in ferryd(8)" has_word "$TMP/ferryd.options.txt" "$opt"
done
for sec in NAME SYNOPSIS DESCRIPTION OPTIONS SIGNALS "EXIT STATUS" ENVIRONMENT FILES SECURITY \
  EXAMPLES "SEE ALSO"; do
  check "ferryd(8) has a $sec section" grep -qx "\.SH \"\?$sec\"\?" "$FERRYD_PAGE"
done

section "the pages against ferry --help"
run_bounded 30 "$FERRY" --help
check_rc "ferry --help" 0
cp "$RUN_OUT" "$TMP/ferry.help"
check "ferry --help shows examples" grep -q '^Examples' "$TMP/ferry.help"
mapfile -t SUBCOMMANDS < <(awk '/^Subcommands:/ { f = 1; next } f && /^$/ { exit } f { print $1 }' \
  "$TMP/ferry.help")
check_int "ferry --help lists subcommands" "${#SUBCOMMANDS[@]}" -ge 3
for sub in "${SUBCOMMANDS[@]}"; do
  check "ferry(1) has a section for 'ferry $sub'" grep -qx "\.SS \"\?$sub\"\?" "$FERRY_PAGE"
  run_bounded 30 "$FERRY" "$sub" --help
  check_rc "ferry $sub --help" 0
  cp "$RUN_OUT" "$TMP/ferry.$sub.help"
  check "ferry $sub --help shows an Examples section" grep -q '^Examples' "$TMP/ferry.$sub.help"
  roff_sections "$TMP/ferry.1.txt" "$sub" "Common options" | roff_terms >"$TMP/ferry.$sub.txt"
  for opt in $(long_options "$TMP/ferry.$sub.help") $(short_options "$TMP/ferry.$sub.help"); do
    check "ferry $sub $opt is described in ferry(1) under '$sub' or 'Common options'" \
      has_word "$TMP/ferry.$sub.txt" "$opt"
  done
done
roff_sections "$TMP/ferry.1.txt" "EXIT STATUS" >"$TMP/ferry.exit.txt"
mapfile -t CODES < <(awk '/^Exit codes:/ { f = 1; next } f && !/^ +[0-9]+ / { exit } f { print $1 }' \
  "$TMP/ferry.help")
check_int "ferry --help lists exit codes" "${#CODES[@]}" -ge 7
for code in "${CODES[@]}"; do
  check "exit code $code is under EXIT STATUS in ferry(1)" grep -qx "$code" "$TMP/ferry.exit.txt"
done
for sec in NAME SYNOPSIS DESCRIPTION "EXIT STATUS" SIGNALS FILES SECURITY EXAMPLES "SEE ALSO"; do
  check "ferry(1) has a $sec section" grep -qx "\.SH \"\?$sec\"\?" "$FERRY_PAGE"
done

section "the README, the unit and the defaults file agree"
README=$SRC/README.md
UNIT_IN=$SRC/server/systemd/ferryd.service.in
DEFAULTS=$SRC/server/systemd/ferryd.default
# The drop-in the unit's comments give for another root, and the README's ```ini block.
unit_advice=$(sed -n '/put this in it:$/,/^# (the empty/p' "$UNIT_IN" | sed -n 's/^#   //p')
readme_advice=$(awk '/^```ini$/ { f = 1; next } f && /^```$/ { exit } f' "$README")
check_eq "the README gives the unit's ReadOnlyPaths= drop-in for another root" \
  "$unit_advice" "$readme_advice"
check "the unit mounts /srv/ferry read-only" grep -qx 'ReadOnlyPaths=/srv/ferry' "$UNIT_IN"
# shellcheck disable=SC2016  # backquotes, not an expansion
check "the README says so" grep -qF '`ReadOnlyPaths=/srv/ferry`' "$README"
defaults=$(grep -E '^FERRYD_(ROOT|BIND|PORT)=' "$DEFAULTS" | tr '\n' ' ' | sed 's/ $//')
check_eq "the defaults file sets root, address and port" \
  "FERRYD_ROOT=/srv/ferry FERRYD_BIND=127.0.0.1 FERRYD_PORT=7070" "$defaults"
check "the README's sudoedit line shows the defaults file's values" \
  grep -qE "^sudoedit /etc/default/ferryd +# $defaults\$" "$README"

section "scripts/demo.sh and scripts/build.sh"
demo_build=$(grep -E '^bash scripts/build.sh ' "$SRC/scripts/demo.sh" || true)
check_eq "demo.sh builds ferryd and ferry only" \
  "bash scripts/build.sh build --target ferryd --target ferry" "$demo_build"
# build.sh on a tree configured before with another generator than the Ninja it picks for a
# new one: it keeps the tree's generator, and turns warnings into errors.
TREE=$TMP/tree-make
run_bounded 300 cmake -S "$SRC" -B "$TREE" -G "Unix Makefiles" -DFERRY_BUILD_TESTS=OFF
check_rc "a tree configured with Unix Makefiles" 0
run_bounded 300 bash "$SRC/scripts/build.sh" "$TREE" --target ferry_man
check_rc "build.sh builds a target in it" 0
check "it is still a Unix Makefiles tree" grep -qx 'CMAKE_GENERATOR:INTERNAL=Unix Makefiles' \
  "$TREE/CMakeCache.txt"
check "build.sh turned FERRY_WERROR on" grep -qx 'FERRY_WERROR:BOOL=ON' "$TREE/CMakeCache.txt"
check "FERRY_WERROR is off in CMakeLists.txt unless asked for" \
  grep -q '^option(FERRY_WERROR "[^"]*" OFF)$' "$SRC/CMakeLists.txt"
if command -v ninja >/dev/null; then
  TREE=$TMP/tree-new
  run_bounded 300 bash "$SRC/scripts/build.sh" "$TREE" -DFERRY_BUILD_TESTS=OFF --target ferry_man
  check_rc "build.sh makes a new tree" 0
  check "a new tree uses Ninja" grep -qx 'CMAKE_GENERATOR:INTERNAL=Ninja' "$TREE/CMakeCache.txt"
fi
rm -rf "$TMP/tree-make" "$TMP/tree-new"

section "protocol version"
PROTOCOL_VERSION=$(sed -nE 's/.*constexpr std::uint8_t version = ([0-9]+);.*/\1/p' \
  "$SRC/common/protocol.hpp")
check "common/protocol.hpp names a protocol version" test -n "$PROTOCOL_VERSION"
for txt in "$TMP/ferry.1.txt" "$TMP/ferryd.8.txt"; do
  name=${txt##*/}
  name=${name%.txt}
  check "$name names protocol version $PROTOCOL_VERSION" \
    grep -q "version $PROTOCOL_VERSION of the ferry protocol" "$txt"
  check "$name names docs/PROTOCOL.md as the contract" grep -q 'docs/PROTOCOL.md' "$txt"
done

section "bash completion: syntax"
for f in "$COMPLETION_FERRY" "$COMPLETION_FERRYD"; do
  run_bounded 30 bash -n "$f"
  check_rc "bash -n ${f#"$SRC"/}" 0
done

# complete FILE FUNCTION WORD...: runs FUNCTION from FILE in a fresh bash with bash-completion
# loaded, as if WORD... had been typed and TAB pressed at the end ("" as the last word: after a
# space). COMP_WORDS is split at ':' as bash splits it (COMP_WORDBREAKS). The candidates, one
# a line, are left in $RUN_OUT.
cat >"$TMP/complete.bash" <<'EOF'
source "$1" || exit 97   # bash-completion
source "$2" || exit 98   # the completion file
fn=$3
shift 3
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMP_WORDS=()
for w in "$@"; do
  if [[ -z $w ]]; then
    COMP_WORDS+=("")
    continue
  fi
  # bash makes each run of ':' a word of its own: 127.0.0.1:7070 -> 127.0.0.1 : 7070
  while [[ $w =~ ^([^:]*)(:+)(.*)$ ]]; do
    [[ -n ${BASH_REMATCH[1]} ]] && COMP_WORDS+=("${BASH_REMATCH[1]}")
    COMP_WORDS+=("${BASH_REMATCH[2]}")
    w=${BASH_REMATCH[3]}
  done
  [[ -n $w ]] && COMP_WORDS+=("$w")
done
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_TYPE=9
COMP_KEY=9
COMPREPLY=()
"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]:-}"
printf '%s\n' "${COMPREPLY[@]}"
EOF
complete_line() {
  local file=$1 fn=$2
  shift 2
  run_bounded 30 bash --norc --noprofile "$TMP/complete.bash" "$BASH_COMPLETION" "$file" "$fn" "$@"
}
# candidates: the candidates of the last complete_line, trailing spaces dropped, on one line.
candidates() { sed 's/ *$//' "$RUN_OUT" | tr '\n' ' ' | sed 's/ *$//'; }

section "bash completion: ferry"
complete_line "$COMPLETION_FERRY" _ferry ferry g
check_rc "completing 'ferry g'" 0
check_eq "ferry g<TAB> completes to get" "get" "$(candidates)"
complete_line "$COMPLETION_FERRY" _ferry ferry ""
check_eq "ferry <TAB> offers every subcommand" "$(printf '%s ' "${SUBCOMMANDS[@]}" | sed 's/ $//')" \
  "$(candidates)"
complete_line "$COMPLETION_FERRY" _ferry ferry get --bl
check_rc "completing 'ferry get --bl'" 0
check_eq "ferry get --bl<TAB> completes to --block-size" "--block-size" "$(candidates)"
for sub in "${SUBCOMMANDS[@]}"; do
  complete_line "$COMPLETION_FERRY" _ferry ferry "$sub" -
  cp "$RUN_OUT" "$TMP/complete.$sub"
  for opt in $(long_options "$TMP/ferry.$sub.help") $(short_options "$TMP/ferry.$sub.help"); do
    check "ferry $sub -<TAB> offers $opt" grep -qx -- "$opt" "$TMP/complete.$sub"
  done
done
mkdir -p "$TMP/local"
touch "$TMP/local/output-file.bin"
complete_line "$COMPLETION_FERRY" _ferry ferry get 127.0.0.1:7070 x.bin -o "$TMP/local/out"
check_eq "ferry get ... -o <TAB> completes local files" "$TMP/local/output-file.bin" "$(candidates)"

section "bash completion: ferryd"
complete_line "$COMPLETION_FERRYD" _ferryd ferryd --log-l
check_eq "ferryd --log-l<TAB> completes to --log-level" "--log-level" "$(candidates)"
complete_line "$COMPLETION_FERRYD" _ferryd ferryd --log-level w
check_eq "ferryd --log-level w<TAB> completes to warn" "warn" "$(candidates)"
complete_line "$COMPLETION_FERRYD" _ferryd ferryd -
cp "$RUN_OUT" "$TMP/complete.ferryd"
for opt in $(long_options "$TMP/ferryd.help") $(short_options "$TMP/ferryd.help"); do
  check "ferryd -<TAB> offers $opt" grep -qx -- "$opt" "$TMP/complete.ferryd"
done

section "bash completion: remote paths"
ROOT=$TMP/root
mkdir -p "$ROOT/sub/deeper" "$ROOT/sub/with space"
printf 'x' >"$ROOT/sub/file.txt"
printf 'x' >"$ROOT/solo.txt"
printf 'x' >"$ROOT/sub/with space/inner file.txt"
if start_server "$ROOT"; then
  pass "ferryd started on $SRV_ADDR"
  complete_line "$COMPLETION_FERRY" _ferry "$FERRY" ls "$SRV_ADDR" s
  check_eq "ferry ls ADDR s<TAB> offers the remote names" "solo.txt sub/" "$(candidates)"
  complete_line "$COMPLETION_FERRY" _ferry "$FERRY" get "$SRV_ADDR" sub/
  check_eq "ferry get ADDR sub/<TAB> lists sub/, directories with a slash" \
    'sub/deeper/ sub/file.txt sub/with\ space/' "$(candidates)"
  complete_line "$COMPLETION_FERRY" _ferry "$FERRY" get "$SRV_ADDR" 'sub/with\ space/'
  check_eq "inside a directory with a space (typed with a backslash)" \
    'sub/with\ space/inner\ file.txt' "$(candidates)"
  complete_line "$COMPLETION_FERRY" _ferry "$FERRY" get "$SRV_ADDR" "'sub/with space/in"
  check_eq "inside a directory with a space (typed in quotes)" \
    'sub/with\ space/inner\ file.txt' "$(candidates)"
  complete_line "$COMPLETION_FERRY" _ferry "$FERRY" stat --timeout 5 "$SRV_ADDR" sub/f
  check_eq "ferry stat --timeout 5 ADDR sub/f<TAB> skips the option's value" "sub/file.txt" \
    "$(candidates)"
  stop_server "$SRV_PID"
  DEAD_ADDR=$SRV_ADDR  # nothing listens there any more
else
  fail "ferryd started"
  DEAD_ADDR=127.0.0.1:$(free_udp_port)
fi
complete_line "$COMPLETION_FERRY" _ferry "$FERRY" get "$DEAD_ADDR" sub/
check_rc "completing against a server that does not answer" 0
check_eq "no candidates when the server does not answer" "" "$(candidates)"
check "nothing on stderr when the server does not answer" test ! -s "$RUN_ERR"
check_int "gives up within 5 s (ms)" "$((RUN_US / 1000))" -lt 5000

summary
