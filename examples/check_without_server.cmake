# ctest script: synchmess-test-app pointed at a directory without devices must fail at once with
# a clear message and a non-zero exit status, for both --dir and SYNCHMESS_DIR.
# Usage: cmake -DTEST_APP=<path> -DDEVICE_DIR=<missing dir> -P check_without_server.cmake
foreach(how IN ITEMS option environment)
  if(how STREQUAL "option")
    execute_process(COMMAND ${TEST_APP} --dir ${DEVICE_DIR}
                    RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 20)
  else()
    set(ENV{SYNCHMESS_DIR} ${DEVICE_DIR})
    execute_process(COMMAND ${TEST_APP}
                    RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 20)
    unset(ENV{SYNCHMESS_DIR})
  endif()
  message(STATUS "[${how}] exit status ${status}\n${out}${err}")
  if(NOT status EQUAL 1)
    message(FATAL_ERROR "[${how}] expected exit status 1, got '${status}'")
  endif()
  set(expected "cannot open ${DEVICE_DIR}/synchmess: No such file or directory -- is synchmess-cuse running\\?")
  if(NOT err MATCHES "${expected}")
    message(FATAL_ERROR "[${how}] stderr does not say: ${expected}")
  endif()
  if(NOT out MATCHES "devices in ${DEVICE_DIR}, test group synchmess-test-[0-9]+")
    message(FATAL_ERROR "[${how}] stdout does not name the device directory")
  endif()
endforeach()
