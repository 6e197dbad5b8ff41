# Turns one scdoc source into a man page: cmake -DSCDOC=... -DINPUT=x.1.scd -DOUTPUT=x.1
# -DVERSION=0.1.0 -P scdoc_man.cmake. Run by the custom commands of docs/man/CMakeLists.txt.
#
# 1. @FERRY_VERSION@ in the source becomes VERSION (the footer reads "ferry 0.1.0").
# 2. scdoc(1) writes the roff. It takes the date from SOURCE_DATE_EPOCH when that is set.
# 3. scdoc 1.11 writes .P requests that no renderer uses: right after .TH, .SH and .SS, right
#    before .SH and .SS, at the end of an indented block (.P then .RE) and twice in a row.
#    mandoc -T lint reports each as "WARNING: skipping paragraph macro". They are removed (the
#    one before .RE moves after it, where it still separates the block from the next
#    paragraph), so the page looks the same and the lint that scripts/test_docs.sh runs at
#    -W warning reports only real problems.
# 4. The page is written to OUTPUT.tmp and renamed, so OUTPUT is never half written.

foreach(var SCDOC INPUT OUTPUT VERSION)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "scdoc_man.cmake: -D${var}=... is required")
  endif()
endforeach()

file(READ "${INPUT}" source)
string(REPLACE "@FERRY_VERSION@" "${VERSION}" source "${source}")
get_filename_component(out_dir "${OUTPUT}" DIRECTORY)
file(MAKE_DIRECTORY "${out_dir}")
file(WRITE "${OUTPUT}.scd.tmp" "${source}")

execute_process(COMMAND "${SCDOC}"
  INPUT_FILE "${OUTPUT}.scd.tmp"
  OUTPUT_VARIABLE roff
  ERROR_VARIABLE errors
  RESULT_VARIABLE rc)
file(REMOVE "${OUTPUT}.scd.tmp")
if(NOT rc EQUAL 0 OR NOT errors STREQUAL "")
  message(FATAL_ERROR "scdoc failed on ${INPUT} (status ${rc}):\n${errors}")
endif()

# Redundant paragraph requests (see 3. above), until none is left. A ".P" that ends an indented
# block (".P" then ".RE") moves after the ".RE", where it separates the block from what follows,
# as it did; then a ".P" right after .TH/.SH/.SS, right before .SH/.SS or at the end goes, and
# two in a row become one.
set(previous "")
while(NOT roff STREQUAL previous)
  set(previous "${roff}")
  string(REPLACE "\n.P\n.RE\n" "\n.RE\n.P\n" roff "${roff}")
  string(REGEX REPLACE "(\n\\.(TH|SH|SS) [^\n]*)\n\\.P\n" "\\1\n" roff "${roff}")
  string(REGEX REPLACE "\n\\.P\n\\.(SH|SS) " "\n.\\1 " roff "${roff}")
  string(REGEX REPLACE "\n\\.P\n$" "\n" roff "${roff}")
  string(REPLACE "\n.P\n.P\n" "\n.P\n" roff "${roff}")
endwhile()

# Bold spans hold options and commands (*--stats-interval*, *ferry get*). Their hyphens become
# \-, at which groff never breaks a line (it does after "-"), and which stays an ASCII
# hyphen-minus when copied from a terminal. A span here is \fB, then characters other than a
# backslash (scdoc's \& escapes aside), then \fR.
string(REGEX MATCHALL "\\\\fB([^\\\\;\n]|\\\\&)+\\\\fR" spans "${roff}")
if(spans)
  list(REMOVE_DUPLICATES spans)
endif()
foreach(span IN LISTS spans)
  string(REPLACE "-" "\\-" fixed "${span}")
  string(REPLACE "${span}" "${fixed}" roff "${roff}")
endforeach()

# scdoc asks for no hyphenation and a ragged right margin (.nh, .ad l), but before .TH, which
# resets both in groff's man macros; repeated after .TH they hold, so no option is hyphenated.
string(REGEX REPLACE "(\n\\.TH [^\n]*\n)" "\\1.nh\n.ad l\n" roff "${roff}")

file(WRITE "${OUTPUT}.tmp" "${roff}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
