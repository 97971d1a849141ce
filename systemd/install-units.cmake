# Run by `cmake --install` (install(SCRIPT) in CMakeLists.txt): writes the systemd units with
# ExecStart= naming the server where this install puts it, <prefix>/<sbindir>, so --prefix and
# DESTDIR given at install time are honoured. Expects SYNCHMESS_UNIT_SOURCE_DIR, and
# SYNCHMESS_SBINDIR and SYNCHMESS_DOCDIR (relative to the prefix).
cmake_policy(VERSION 3.25)  # "@SYNCHMESS_SBINDIR@" below is text, not a variable reference
set(unit_dir "lib/systemd/system")
foreach(unit synchmess-cuse.service synchmess-fuse@.service)
  file(READ "${SYNCHMESS_UNIT_SOURCE_DIR}/${unit}.in" text)
  string(REPLACE "@SYNCHMESS_SBINDIR@" "${CMAKE_INSTALL_PREFIX}/${SYNCHMESS_SBINDIR}" text
                 "${text}")
  string(REPLACE "@SYNCHMESS_DOCDIR@" "${CMAKE_INSTALL_PREFIX}/${SYNCHMESS_DOCDIR}" text
                 "${text}")
  set(destination "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/${unit_dir}")
  message(STATUS "Installing: ${destination}/${unit}")
  file(MAKE_DIRECTORY "${destination}")
  file(WRITE "${destination}/${unit}" "${text}")
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES "${CMAKE_INSTALL_PREFIX}/${unit_dir}/${unit}")
endforeach()
