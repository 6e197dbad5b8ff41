# Installation layout and the Debian package. Included at the end of the top-level CMakeLists.txt.
#
#   cmake --install build [--prefix /usr/local]    ferryd in sbin, ferry in bin, man pages,
#                                                  bash completion, systemd unit, defaults file
#   cpack --config build/CPackConfig.cmake -G DEB   ferry_VERSION-1_ARCH.deb, installed under /usr
#   ninja -C build package                          the same, into the build directory
#
# Paths that depend on the prefix (the unit's directory and its ExecStart=, the defaults file
# under SYSCONFDIR) are decided when installing, not when configuring, because cpack installs
# into /usr (CPACK_PACKAGING_INSTALL_PREFIX) whatever CMAKE_INSTALL_PREFIX the build has, and
# `cmake --install --prefix` may name yet another prefix.
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
#   - Install rules for the pages belong here, not in docs/man. They are gzipped (gzip -9n, as
#     Debian policy asks) into ${CMAKE_BINARY_DIR}/man-gz when the ALL target builds.

include(GNUInstallDirs)

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
  find_program(FERRY_GZIP gzip REQUIRED)
  set(compressed)
  foreach(page IN LISTS pages)
    get_filename_component(name "${page}" NAME)
    if(NOT name MATCHES "\\.([1-9])[a-z]*$")
      message(FATAL_ERROR "FERRY_MAN_PAGES: '${page}' does not end in a man section (.1 ... .9)")
    endif()
    set(section ${CMAKE_MATCH_1})
    set(gz ${CMAKE_BINARY_DIR}/man-gz/${name}.gz)
    add_custom_command(OUTPUT ${gz}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man-gz
      COMMAND sh -c "\"$1\" -9n -c \"$2\" > \"$3\"" sh ${FERRY_GZIP} ${page} ${gz}
      DEPENDS ${page}
      COMMENT "Compressing man page ${name}"
      VERBATIM)
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

set(FERRY_PACKAGE_MAINTAINER
  "ferry maintainers <ferry@localhost>"
  CACHE STRING "Maintainer field of the Debian package")

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

set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/\\\\.cache/")

include(CPack)
