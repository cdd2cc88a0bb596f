# Run by `cmake --install` (core/CMakeLists.txt) for the prefix given at
# install time: conf.d where rdvd looks for it, unless the operator already
# has one (an upgrade never overwrites settings; the shipped files are also
# in share/rdvd/conf.d), and the systemd unit. RDV_SOURCE_DIR is set by the
# install rule before this script runs.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(rdv_etc "/etc/rdvd")
else()
  set(rdv_etc "${CMAKE_INSTALL_PREFIX}/etc/rdvd")
endif()
set(rdv_conf "$ENV{DESTDIR}${rdv_etc}/conf.d")
if(EXISTS "${rdv_conf}")
  message(STATUS "Keeping: ${rdv_conf} (the shipped one is in share/rdvd/conf.d)")
else()
  message(STATUS "Installing: ${rdv_conf}")
  file(COPY "${RDV_SOURCE_DIR}/conf.d/" DESTINATION "${rdv_conf}")
endif()
set(RDV_BINDIR "${CMAKE_INSTALL_PREFIX}/bin")
set(RDV_CONFDIR "${rdv_etc}/conf.d")
set(RDV_UNIT_BY "`cmake --install`")
set(RDV_UNIT_DOC "# Documentation: docs/OPERATIONS.md in the rdvd sources")
# Runs as root; the Debian package's unit runs as rdvd instead (cmake/RdvDeb.cmake).
set(RDV_UNIT_USER "# Not as root: set core.user in conf.d (docs/OPERATIONS.md, \"Not as root\").")
set(rdv_unit "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/lib/systemd/system/rdvd.service")
message(STATUS "Installing: ${rdv_unit}")
configure_file("${RDV_SOURCE_DIR}/scripts/systemd/rdvd.service.in" "${rdv_unit}" @ONLY)
