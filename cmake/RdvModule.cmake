# rdv_add_module(NAME SOURCES src... [DEPS target...])
# Builds modules/<NAME>.so into build/modules/ with hidden visibility and
# --no-undefined: a module links only against librdvwire and system libraries,
# never against the core (everything else comes through rdv_core_api).
# Installed modules find librdvwire two directories up ($libdir/rdvd/modules).
function(rdv_add_module NAME)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  set(tgt mod_${NAME})
  add_library(${tgt} MODULE ${M_SOURCES})
  set_target_properties(${tgt} PROPERTIES
    OUTPUT_NAME ${NAME} PREFIX ""
    LIBRARY_OUTPUT_DIRECTORY ${RDV_MODULE_DIR}
    C_VISIBILITY_PRESET hidden
    INSTALL_RPATH "$ORIGIN/../..")
  # Export only rdv_module_get: nothing of a static library linked in (DEPS).
  target_link_options(${tgt} PRIVATE -Wl,--exclude-libs,ALL)
  if(NOT RDV_SANITIZE AND NOT RDV_FUZZ)
    target_link_options(${tgt} PRIVATE -Wl,--no-undefined)
  endif()
  target_link_libraries(${tgt} PRIVATE rdvwire ${M_DEPS})
  install(TARGETS ${tgt} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/rdvd/modules COMPONENT runtime)
endfunction()
