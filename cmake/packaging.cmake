# Installation layout and the Debian package. Included at the end of the top-level CMakeLists.txt.
#
#   cmake --install build [--prefix /usr/local]    ferryd in sbin, ferry in bin, man pages,
#                                                  bash completion, systemd unit, defaults file
#   cpack --config build/CPackConfig.cmake -G DEB   ferry_0.1.0-1_amd64.deb, installed under /usr
#   ninja -C build package                          the same, into the build directory
#
# Paths that depend on the prefix (the unit's directory and its ExecStart=, the defaults file
# under SYSCONFDIR) are decided when installing, not when configuring, because cpack installs
# into /usr (CPACK_PACKAGING_INSTALL_PREFIX) whatever CMAKE_INSTALL_PREFIX the build has, and
# `cmake --install --prefix` may name yet another prefix. The prefix /usr gets Debian's layout:
# the defaults file in /etc/default, and the Debian changelog and lintian overrides, which
# belong to the package alone; any other prefix keeps everything under it (see
# cmake/install_service.cmake and the README's Install section).
#
# Contract with docs/man/CMakeLists.txt (owned by whoever writes the man pages):
#   - The top-level CMakeLists.txt adds it with add_subdirectory(docs/man), before or after this
#     file's include(): the man pages are installed by a call deferred to the end of the
#     top-level directory, so the order does not matter.
#   - It generates the pages from docs/man/*.scd with scdoc, creates the target `ferry_man` with
#     ALL, and sets FERRY_MAN_PAGES with PARENT_SCOPE to the absolute paths of the generated
#     pages, e.g. ${CMAKE_BINARY_DIR}/man/ferry.1;${CMAKE_BINARY_DIR}/man/ferryd.8.
#   - The section is taken from each file name's extension (ferry.1 -> man1, ferryd.8 -> man8).
#   - If ferry_man exists but FERRY_MAN_PAGES is empty, ${CMAKE_BINARY_DIR}/man/ferry.1 and
#     ferryd.8 are assumed.
#   - Without scdoc it skips the pages: no ferry_man and no FERRY_MAN_PAGES, so none is installed.
#   - Install rules for the pages belong here, not in docs/man. They are gzipped (gzip -9n, as
#     Debian policy asks) into ${CMAKE_BINARY_DIR}/man-gz when the ALL target builds.

include(GNUInstallDirs)

# ferry_gzip(INPUT OUTPUT): OUTPUT is INPUT compressed as Debian policy asks (gzip -9n: no name
# or time stamp, so the package is reproducible), made when the ALL target builds.
find_program(FERRY_GZIP gzip REQUIRED)
function(ferry_gzip input output)
  get_filename_component(name "${output}" NAME)
  get_filename_component(dir "${output}" DIRECTORY)
  add_custom_command(OUTPUT ${output}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${dir}
    COMMAND sh -c "\"$1\" -9n -c \"$2\" > \"$3\"" sh ${FERRY_GZIP} ${input} ${output}
    DEPENDS ${input}
    COMMENT "Compressing ${name}"
    VERBATIM)
endfunction()

install(TARGETS ferryd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS ferry RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Bash completions, written by whoever owns client/completion/. OPTIONAL, so each is installed
# as soon as it exists, without configuring again. bash-completion loads a file by the name of
# the command being completed.
install(FILES ${PROJECT_SOURCE_DIR}/client/completion/ferry
  ${PROJECT_SOURCE_DIR}/client/completion/ferryd
  DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions OPTIONAL)

# --- systemd unit and defaults file -------------------------------------------------------------

set(FERRY_SYSTEMD_UNIT_DIR "" CACHE STRING
  "Where ferryd.service goes; empty: systemd's systemdsystemunitdir for a /usr prefix, \
else lib/systemd/system under the prefix. A relative path is taken under the prefix.")

# systemd's own answer for a /usr prefix (/lib/systemd/system on Debian 12). Without systemd's
# pkg-config file, lib/systemd/system under the prefix, which systemd reads on any merged-/usr
# system, is used for /usr as well.
pkg_get_variable(FERRY_SYSTEMD_USR_UNIT_DIR systemd systemdsystemunitdir)

# The install step configures server/systemd/ferryd.service.in for the prefix it installs into
# and installs it with server/systemd/ferryd.default. The variables are bracket-quoted so that
# paths with spaces or semicolons survive; \${CMAKE_INSTALL_PREFIX} is the install-time prefix.
install(CODE "
set(FERRY_UNIT_TEMPLATE [==[${PROJECT_SOURCE_DIR}/server/systemd/ferryd.service.in]==])
set(FERRY_DEFAULTS_SOURCE [==[${PROJECT_SOURCE_DIR}/server/systemd/ferryd.default]==])
set(FERRY_SBINDIR [==[${CMAKE_INSTALL_SBINDIR}]==])
set(FERRY_SYSCONFDIR [==[${CMAKE_INSTALL_SYSCONFDIR}]==])
set(FERRY_UNIT_DIR_OVERRIDE [==[${FERRY_SYSTEMD_UNIT_DIR}]==])
set(FERRY_USR_UNIT_DIR [==[${FERRY_SYSTEMD_USR_UNIT_DIR}]==])
include([==[${CMAKE_CURRENT_LIST_DIR}/install_service.cmake]==])
")

# --- man pages (see the contract above) ---------------------------------------------------------

function(ferry_install_man_pages)
  set(pages ${FERRY_MAN_PAGES})
  if(NOT pages AND TARGET ferry_man)
    set(pages ${CMAKE_BINARY_DIR}/man/ferry.1 ${CMAKE_BINARY_DIR}/man/ferryd.8)
  endif()
  if(NOT pages)
    message(STATUS "ferry: no man pages to install yet (no ferry_man, FERRY_MAN_PAGES is empty)")
    return()
  endif()
  set(compressed)
  foreach(page IN LISTS pages)
    get_filename_component(name "${page}" NAME)
    if(NOT name MATCHES "\\.([1-9])[a-z]*$")
      message(FATAL_ERROR "FERRY_MAN_PAGES: '${page}' does not end in a man section (.1 ... .9)")
    endif()
    set(section ${CMAKE_MATCH_1})
    set(gz ${CMAKE_BINARY_DIR}/man-gz/${name}.gz)
    ferry_gzip(${page} ${gz})
    list(APPEND compressed ${gz})
    install(FILES ${gz} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endforeach()
  add_custom_target(ferry_man_gz ALL DEPENDS ${compressed})
  if(TARGET ferry_man)
    add_dependencies(ferry_man_gz ferry_man)
  endif()
  message(STATUS "ferry: installing man pages ${pages}")
endfunction()
cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL ferry_install_man_pages)

# --- Debian package -----------------------------------------------------------------------------

# The Maintainer: field, and the signature of the Debian changelog. Whoever builds a package to
# hand to others sets their own contact: -DFERRY_PACKAGE_MAINTAINER="Name <address>". The project
# has no address of its own, and a default that merely looks real could not be checked, so the
# default is a role name at GitHub's no-reply domain: a well-formed address on a real domain
# (which lintian's bogus-mail-host asks for, where @localhost failed) that reaches no one's
# private mailbox and that nobody would mistake for a contact.
set(FERRY_PACKAGE_MAINTAINER
  "ferry maintainers <ferry-maintainers@users.noreply.github.com>"
  CACHE STRING "Maintainer field of the Debian package and its changelog: Name <address>")
# A build tree configured before keeps the former default in its cache; it is replaced.
if(FERRY_PACKAGE_MAINTAINER STREQUAL "ferry maintainers <ferry@localhost>")
  set_property(CACHE FERRY_PACKAGE_MAINTAINER PROPERTY VALUE
    "ferry maintainers <ferry-maintainers@users.noreply.github.com>")
endif()
if(NOT FERRY_PACKAGE_MAINTAINER MATCHES "^[^<>]+ <[^<>@ ]+@[^<>@ ]+>$")
  message(FATAL_ERROR "FERRY_PACKAGE_MAINTAINER must read 'Name <address>', "
    "not '${FERRY_PACKAGE_MAINTAINER}'")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ferry)
set(CPACK_PACKAGE_VENDOR "ferry maintainers")
set(CPACK_PACKAGE_CONTACT "${FERRY_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "resumable block file transfer over UDP (server and client)")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Only ferryd and ferry are installed as programs; strip them unless the build is for
# sanitizers, whose reports need the symbols.
if(NOT FERRY_SANITIZE)
  set(CPACK_STRIP_FILES ON)
endif()

set(CPACK_DEBIAN_PACKAGE_NAME ferry)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # ferry_0.1.0-1_amd64.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${FERRY_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# CPackDeb puts CPACK_PACKAGE_DESCRIPTION_SUMMARY on the Description: line; this is the rest.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
  "ferryd serves one directory read-only over UDP; ferry lists it and fetches
files from it block by block, with many requests in flight, per-block
checksums, a whole-file digest check and resumable downloads.
.
The package installs ferryd.service but neither enables nor starts it.
Settings are in /etc/default/ferryd.")
# Depends: from dpkg-shlibdeps, so it names exactly the libraries the binaries load: libuv1,
# libfmt9, libstdc++6, libgcc-s1 and libc6. xxhash is compiled in (XXH_INLINE_ALL) and the link
# drops libxxhash.so as unneeded, so there is no libxxhash0. A sanitizer build adds libasan8 and
# libubsan1, and libxxhash0 too, because -fsanitize links with --no-as-needed.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)

# Maintainer scripts and conffiles. The scripts handle ferryd.service as dh_installsystemd
# --no-enable --no-start writes them (deb-systemd-helper, deb-systemd-invoke): nothing enables or
# starts it, an upgrade restarts it only if it runs, removal stops it, and purge removes the
# links that `systemctl enable` made. postinst also makes /srv/ferry, the default root.
set(FERRY_DEB_CONTROL_DIR ${CMAKE_BINARY_DIR}/packaging/deb)
file(MAKE_DIRECTORY ${FERRY_DEB_CONTROL_DIR})
# The package's prefix is /usr, for which SYSCONFDIR is /etc (see cmake/install_service.cmake).
if(IS_ABSOLUTE "${CMAKE_INSTALL_SYSCONFDIR}")
  set(FERRY_DEB_SYSCONFDIR "${CMAKE_INSTALL_SYSCONFDIR}")
else()
  set(FERRY_DEB_SYSCONFDIR "/${CMAKE_INSTALL_SYSCONFDIR}")
endif()
file(WRITE ${FERRY_DEB_CONTROL_DIR}/conffiles "${FERRY_DEB_SYSCONFDIR}/default/ferryd\n")
foreach(script postinst prerm postrm)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/deb/${script}
    ${FERRY_DEB_CONTROL_DIR}/${script} COPYONLY
    FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
    WORLD_READ WORLD_EXECUTE)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${FERRY_DEB_CONTROL_DIR}/conffiles
  ${FERRY_DEB_CONTROL_DIR}/postinst
  ${FERRY_DEB_CONTROL_DIR}/prerm
  ${FERRY_DEB_CONTROL_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# --- copyright and changelog in /usr/share/doc/ferry ---------------------------------------------

# The copyright file in Debian's machine-readable format (DEP-5), with ferry's notice and licence
# taken from LICENSE, so that there is one copy of the text. Installed for every prefix, since it
# is the licence of an installation from source as well.
set(FERRY_DOC_BUILD_DIR ${CMAKE_BINARY_DIR}/packaging/doc)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/LICENSE)
file(READ ${PROJECT_SOURCE_DIR}/LICENSE license)
if(NOT license MATCHES "Copyright \\(c\\) ([^\n]+)\n\n(.*[^\n])\n*$")
  message(FATAL_ERROR "LICENSE: no 'Copyright (c) ...' line followed by the terms")
endif()
set(FERRY_COPYRIGHT "${CMAKE_MATCH_1}")
# The text of a DEP-5 License: paragraph: every line indented by a space, an empty one as " .".
string(REPLACE "\n\n" "\n.\n" terms "${CMAKE_MATCH_2}")
string(REPLACE "\n" "\n " terms " ${terms}")
set(FERRY_EXPAT_TERMS "${terms}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/deb/copyright.in ${FERRY_DOC_BUILD_DIR}/copyright @ONLY)
install(FILES ${FERRY_DOC_BUILD_DIR}/copyright DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The Debian changelog, signed by the maintainer above, compressed as policy asks, and lintian's
# overrides (one, explained in the file). They belong to the package, so they are installed only
# with the prefix /usr (the package, or Debian's layout).
set(FERRY_DEB_VERSION "${PROJECT_VERSION}-${CPACK_DEBIAN_PACKAGE_RELEASE}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/deb/changelog.in ${FERRY_DOC_BUILD_DIR}/changelog.Debian
  @ONLY)
ferry_gzip(${FERRY_DOC_BUILD_DIR}/changelog.Debian ${FERRY_DOC_BUILD_DIR}/changelog.Debian.gz)
add_custom_target(ferry_deb_changelog ALL DEPENDS ${FERRY_DOC_BUILD_DIR}/changelog.Debian.gz)
if(IS_ABSOLUTE "${CMAKE_INSTALL_DOCDIR}")
  set(docdir "${CMAKE_INSTALL_DOCDIR}")
else()
  set(docdir "\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DOCDIR}")
endif()
install(CODE "
if(CMAKE_INSTALL_PREFIX MATCHES [[^/usr/*$]])
  file(INSTALL [==[${FERRY_DOC_BUILD_DIR}/changelog.Debian.gz]==] DESTINATION \"${docdir}\"
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
  file(INSTALL [==[${CMAKE_CURRENT_LIST_DIR}/deb/lintian-overrides]==]
    DESTINATION \"\${CMAKE_INSTALL_PREFIX}/share/lintian/overrides\" RENAME ferry
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
")

set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/\\\\.cache/")

include(CPack)
