# The Debian packages, made by CPack: rdvd (the server) and rdvd-dev (for
# out-of-tree module authors). `sh scripts/deb.sh` builds them (a Release
# build in build-deb with Debian's build flags); any build configured with
# -DCMAKE_INSTALL_PREFIX=/usr can also run `cmake --build <dir> --target package`.
#
# rdvd     = install components runtime (core/CMakeLists.txt, the modules)
#            + deb: /etc/rdvd/conf.d (dpkg conffiles: an edited file is kept
#            on upgrade), the unit in /lib/systemd/system running as the
#            system user rdvd that the postinst makes, /usr/share/doc/rdvd
# rdvd-dev = dev (headers, RdvModule.cmake, rdv-module.pc, the fake core,
#            the librdvwire.so link) + devdoc
# deb and devdoc are EXCLUDE_FROM_ALL, so a plain `cmake --install` never
# installs them; the packages leave out its config component
# (scripts/install-config.cmake), whose job dpkg and the maintainer scripts
# (scripts/deb/) do.
set(RDV_DEB_RELEASE 1 CACHE STRING "Debian revision of the rdvd packages (the N of ${PROJECT_VERSION}-N)")
set(RDV_DEB_MAINTAINER "rdvd developers <dev@rdvd.invalid>" CACHE STRING "Maintainer field of the rdvd packages")
set(RDV_DEB_VERSION ${PROJECT_VERSION}-${RDV_DEB_RELEASE})

function(rdv_deb_files out)
  # The packaged unit: the installed binary and conf.d, as user rdvd.
  set(RDV_BINDIR ${CMAKE_INSTALL_FULL_BINDIR})
  set(RDV_CONFDIR ${CMAKE_INSTALL_FULL_SYSCONFDIR}/rdvd/conf.d)
  set(RDV_UNIT_BY "the rdvd Debian package")
  set(RDV_UNIT_DOC "Documentation=file:/usr/share/doc/rdvd/OPERATIONS.md")
  set(RDV_UNIT_USER "# As the system user the package made (postinst); systemd makes
# /var/lib/rdvd (StateDirectory) that user's, mode 0750.
User=rdvd
Group=rdvd
StateDirectoryMode=0750")
  configure_file(${CMAKE_SOURCE_DIR}/scripts/systemd/rdvd.service.in ${out}/rdvd.service @ONLY)

  # conffiles: every file of the shipped conf.d, profiles included.
  file(GLOB_RECURSE conf RELATIVE ${CMAKE_SOURCE_DIR}/conf.d CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/conf.d/*)
  list(SORT conf)
  list(TRANSFORM conf PREPEND "${RDV_CONFDIR}/")
  list(JOIN conf "\n" conf)
  file(CONFIGURE OUTPUT ${out}/conffiles CONTENT "${conf}\n" @ONLY)

  # changelog.Debian.gz, compressed as Debian does (gzip -9n: no name, no time).
  set(cl ${CMAKE_SOURCE_DIR}/scripts/deb/changelog)
  set_property(DIRECTORY ${CMAKE_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${cl})
  execute_process(COMMAND gzip -9n -c INPUT_FILE ${cl} OUTPUT_FILE ${out}/changelog.Debian.gz
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip ${cl} failed")
  endif()
  file(STRINGS ${cl} top LIMIT_COUNT 1)
  if(NOT top MATCHES "^rdvd \\(${RDV_DEB_VERSION}\\) ")
    string(REGEX MATCH "^[^)]*\\)?" top "${top}")
    set(RDV_DEB_CHANGELOG_STALE "${top}" PARENT_SCOPE)
  endif()
endfunction()

set(rdv_deb ${CMAKE_BINARY_DIR}/deb)
rdv_deb_files(${rdv_deb})
set(rdv_deb_src ${CMAKE_SOURCE_DIR}/scripts/deb)

install(DIRECTORY ${CMAKE_SOURCE_DIR}/conf.d/ DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/rdvd/conf.d
        COMPONENT deb EXCLUDE_FROM_ALL)
# /lib, not /usr/lib: where Debian bookworm's packages (debhelper) put units.
install(FILES ${rdv_deb}/rdvd.service DESTINATION /lib/systemd/system COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/OPERATIONS.md
              ${rdv_deb_src}/copyright ${rdv_deb}/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/rdvd COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${CMAKE_SOURCE_DIR}/docs/MODULES.md ${rdv_deb_src}/copyright ${rdv_deb}/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/rdvd-dev COMPONENT devdoc EXCLUDE_FROM_ALL)
# Manual pages (section 8), made from each program's --help and --version
# by help2man, gzip -9n as Debian ships them. Built with the programs when
# help2man is there; packaging needs them (checked when cpack runs).
find_program(RDV_HELP2MAN help2man)
set(rdv_man_names rdvd rdvctl hbbs hbbr)
set(rdv_man_what
    "RustDesk-compatible ID/rendezvous and relay server"
    "admin console and key tool of rdvd"
    "hbbs launcher of rdvd (upstream's ID/rendezvous server options)"
    "hbbr launcher of rdvd (upstream's relay server options)")
set(rdv_man_pages "")
if(RDV_HELP2MAN AND CMAKE_INSTALL_PREFIX STREQUAL "/usr") # the packaging builds (scripts/deb.sh)
  foreach(name what IN ZIP_LISTS rdv_man_names rdv_man_what)
    set(page ${rdv_deb}/man/${name}.8.gz)
    add_custom_command(OUTPUT ${page}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${rdv_deb}/man
      COMMAND sh ${rdv_deb_src}/manpage.sh ${RDV_HELP2MAN} ${CMAKE_BINARY_DIR}/${name} ${what}
              ${rdv_deb_src}/manpage.h2m ${page}
      DEPENDS rdvd rdvctl ${rdv_deb_src}/manpage.h2m ${rdv_deb_src}/manpage.sh
      COMMENT "manual page ${name}(8)" VERBATIM)
    list(APPEND rdv_man_pages ${page})
  endforeach()
  add_custom_target(rdv_manpages ALL DEPENDS ${rdv_man_pages})
  install(FILES ${rdv_man_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT deb EXCLUDE_FROM_ALL)
endif()
# lintian tags overridden on purpose, each with its reason (scripts/deb/lintian-overrides).
install(FILES ${rdv_deb_src}/lintian-overrides DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides
        RENAME rdvd COMPONENT deb EXCLUDE_FROM_ALL)
install(FILES ${rdv_deb_src}/lintian-overrides-dev DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides
        RENAME rdvd-dev COMPONENT devdoc EXCLUDE_FROM_ALL)

# Checked when cpack runs (not at configure time: other builds need neither).
file(CONFIGURE OUTPUT ${rdv_deb}/CPackProject.cmake CONTENT [[
if(CPACK_GENERATOR STREQUAL "TXZ") # package_source: the tree at the top, not under usr/
  set(CPACK_PACKAGING_INSTALL_PREFIX "/")
endif()
if(CPACK_GENERATOR STREQUAL "DEB")
  if(NOT "@CMAKE_INSTALL_PREFIX@" STREQUAL "/usr")
    message(FATAL_ERROR "rdvd packages: configure with -DCMAKE_INSTALL_PREFIX=/usr "
      "(this build has @CMAKE_INSTALL_PREFIX@; sh scripts/deb.sh does it)")
  endif()
  if("@RDV_HELP2MAN@" STREQUAL "" OR "@RDV_HELP2MAN@" MATCHES "NOTFOUND$")
    message(FATAL_ERROR "rdvd packages: help2man not found (apt-get install help2man, "
      "or sh scripts/setup.sh), then configure again")
  endif()
  if(NOT "@RDV_DEB_CHANGELOG_STALE@" STREQUAL "")
    message(FATAL_ERROR "rdvd packages: scripts/deb/changelog starts with "
      "'@RDV_DEB_CHANGELOG_STALE@', not rdvd (@RDV_DEB_VERSION@): add an entry")
  endif()
endif()
]] @ONLY)

set(CPACK_GENERATOR DEB)
set(CPACK_PROJECT_CONFIG_FILE ${rdv_deb}/CPackProject.cmake)
set(CPACK_PACKAGE_NAME rdvd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime deb dev devdoc)
set(CPACK_COMPONENTS_GROUPING ONE_PER_GROUP)
set(CPACK_COMPONENT_RUNTIME_GROUP rdvd)
set(CPACK_COMPONENT_DEB_GROUP rdvd)
set(CPACK_COMPONENT_DEV_GROUP dev)
set(CPACK_COMPONENT_DEVDOC_GROUP dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${RDV_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${RDV_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# A shlibs entry for librdvwire.so.1, for packaged out-of-tree modules.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_RDVD_PACKAGE_NAME rdvd)
set(CPACK_DEBIAN_RDVD_PACKAGE_SECTION net)
# Depends: dpkg-shlibdeps over the binaries, librdvwire and every module,
# plus adduser for the postinst.
set(CPACK_DEBIAN_RDVD_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RDVD_PACKAGE_DEPENDS adduser)
# Upstream's packages ship /usr/bin/hbbs and /usr/bin/hbbr too and use the
# same ports: installing rdvd removes them (their state in
# /var/lib/rustdesk-server stays; the postinst says how to move the keys).
set(CPACK_DEBIAN_RDVD_PACKAGE_CONFLICTS "rustdesk-server-hbbs, rustdesk-server-hbbr")
set(CPACK_DEBIAN_RDVD_PACKAGE_REPLACES "rustdesk-server-hbbs, rustdesk-server-hbbr")
set(CPACK_DEBIAN_RDVD_PACKAGE_CONTROL_EXTRA
    ${rdv_deb_src}/postinst ${rdv_deb_src}/prerm ${rdv_deb_src}/postrm ${rdv_deb_src}/triggers ${rdv_deb}/conffiles)
set(CPACK_DEBIAN_RDVD_DESCRIPTION "RustDesk-compatible ID/rendezvous and relay server
rdvd is a modular C11 re-implementation of the RustDesk self-hosted server:
the ID/rendezvous server (hbbs) and the relay server (hbbr), wire-compatible
with unmodified RustDesk clients.
.
This package runs a full node as the system user rdvd (systemd unit
rdvd.service, state in /var/lib/rdvd, settings in /etc/rdvd/conf.d) and
provides hbbs and hbbr launchers that take upstream's options.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME rdvd-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS OFF)
# rdv/uthash.h and the fake core include uthash-dev's headers.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "rdvd (= ${RDV_DEB_VERSION}), libprotobuf-c-dev, libsodium-dev, uthash-dev, pkg-config")
set(CPACK_DEBIAN_DEV_PACKAGE_SUGGESTS "cmake, libcriterion-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION "development files for rdvd modules
Headers, the librdvwire link, the pkg-config file rdv-module.pc, the CMake
helper RdvModule.cmake and the fake core (as source, for unit tests) to
build rdvd modules outside the rdvd source tree.")

# include(CPack) also makes `package_source`: the tree without builds,
# results or git, as .gitignore (CPack's default takes every build along).
set(CPACK_SOURCE_GENERATOR TXZ)
set(CPACK_SOURCE_PACKAGE_FILE_NAME rdvd-${PROJECT_VERSION})
# (regular expressions, read once more by CPack: hence \\\\.)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/bench/results" "/tests/tmp/" "/var/" "\\\\.o$" "\\\\.so$" "~$")

include(CPack)
