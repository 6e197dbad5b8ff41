# Runs at install time, from the install(CODE) in cmake/packaging.cmake (so also under cpack):
# installs ferryd.service and the defaults file for the prefix being installed into, which is
# ${CMAKE_INSTALL_PREFIX} here. Inputs, set by that install(CODE):
#   FERRY_UNIT_TEMPLATE      server/systemd/ferryd.service.in
#   FERRY_DEFAULTS_SOURCE    server/systemd/ferryd.default
#   FERRY_SBINDIR            CMAKE_INSTALL_SBINDIR (usually "sbin")
#   FERRY_SYSCONFDIR         CMAKE_INSTALL_SYSCONFDIR (usually "etc")
#   FERRY_UNIT_DIR_OVERRIDE  the FERRY_SYSTEMD_UNIT_DIR cache variable, may be empty
#   FERRY_USR_UNIT_DIR       systemd's systemdsystemunitdir, may be empty
#
#   prefix      sbin                 unit directory             defaults file
#   /usr        /usr/sbin            /lib/systemd/system (1)    /etc/default/ferryd
#   /usr/local  /usr/local/sbin      /usr/local/lib/systemd/system  /usr/local/etc/default/ferryd
#   /opt/ferry  /opt/ferry/sbin      /opt/ferry/lib/systemd/system  /etc/opt/ferry/default/ferryd
#   (1) pkg-config's answer on Debian 12; /usr/lib/systemd/system without systemd.pc.
# DESTDIR is prepended by file(INSTALL) and below, as for every other install rule.

# PREFIX joined with a relative DIR; an absolute DIR stays as it is.
function(ferry_under_prefix out prefix dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  elseif(prefix STREQUAL "/")
    set(${out} "/${dir}" PARENT_SCOPE)
  else()
    set(${out} "${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

set(_ferry_prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "(.)/+$" "\\1" _ferry_prefix "${_ferry_prefix}")

ferry_under_prefix(_ferry_sbindir "${_ferry_prefix}" "${FERRY_SBINDIR}")

# GNUInstallDirs' rule for CMAKE_INSTALL_FULL_SYSCONFDIR, applied to this prefix.
if(IS_ABSOLUTE "${FERRY_SYSCONFDIR}")
  set(_ferry_sysconfdir "${FERRY_SYSCONFDIR}")
elseif(_ferry_prefix MATCHES "^/(usr)?$")
  set(_ferry_sysconfdir "/${FERRY_SYSCONFDIR}")
elseif(_ferry_prefix MATCHES "^/opt/")
  set(_ferry_sysconfdir "/${FERRY_SYSCONFDIR}${_ferry_prefix}")
else()
  set(_ferry_sysconfdir "${_ferry_prefix}/${FERRY_SYSCONFDIR}")
endif()

if(FERRY_UNIT_DIR_OVERRIDE)
  ferry_under_prefix(_ferry_unitdir "${_ferry_prefix}" "${FERRY_UNIT_DIR_OVERRIDE}")
elseif(_ferry_prefix STREQUAL "/usr" AND FERRY_USR_UNIT_DIR)
  set(_ferry_unitdir "${FERRY_USR_UNIT_DIR}")
else()
  ferry_under_prefix(_ferry_unitdir "${_ferry_prefix}" "lib/systemd/system")
endif()

# These paths are written into the unit unquoted, where a space would split a word and % or $
# would be expanded by systemd.
set(FERRY_SBIN_DIR "${_ferry_sbindir}")
set(FERRY_ENVIRONMENT_FILE "${_ferry_sysconfdir}/default/ferryd")
foreach(_ferry_path IN ITEMS "${FERRY_SBIN_DIR}" "${FERRY_ENVIRONMENT_FILE}")
  if(_ferry_path MATCHES "[ \t\n\"'\\\\$%;]")
    message(FATAL_ERROR "ferry: cannot write '${_ferry_path}' into ferryd.service; "
      "choose a prefix without spaces, quotes, backslashes, '$', '%' or ';'")
  endif()
endforeach()

file(INSTALL "${FERRY_DEFAULTS_SOURCE}" DESTINATION "${_ferry_sysconfdir}/default" RENAME ferryd
  PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# The unit is configured straight into its destination (under DESTDIR), so that neither the
# build tree nor the source tree gets a file per prefix; it is added to the install manifest by
# hand, as file(INSTALL) would.
set(_ferry_unit "${_ferry_unitdir}/ferryd.service")
message(STATUS "Installing: $ENV{DESTDIR}${_ferry_unit}")
configure_file("${FERRY_UNIT_TEMPLATE}" "$ENV{DESTDIR}${_ferry_unit}" @ONLY
  FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${_ferry_unit}")
