// The kernel file-lock backend passes the LockBackend conformance suite
// (tests/backend_conformance.h).

#include <string>

#include "gtest/gtest.h"
#include "onlyone/lock_backend.h"
#include "tests/backend_conformance.h"

namespace onlyone::testing {
namespace {

INSTANTIATE_TEST_SUITE_P(
    File, BackendConformanceTest,
    ::testing::Values(BackendUnderTest{
        "file",
        [] { return NewFileLockBackend(); },
        [](const std::string& dir, const std::string& name) {
          return dir + "/" + name + ".lock";
        },
        /*shared_holders=*/true,
        /*fencing_tokens=*/false,
        /*freed_after_crash_within=*/absl::ZeroDuration(),
    }),
    BackendName);

}  // namespace
}  // namespace onlyone::testing
