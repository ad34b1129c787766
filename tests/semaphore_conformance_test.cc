// The counting semaphore with one slot passes the LockBackend conformance
// suite (tests/backend_conformance.h): it is then an exclusive lock.

#include <string>

#include "gtest/gtest.h"
#include "onlyone/semaphore_backend.h"
#include "tests/backend_conformance.h"

namespace onlyone::testing {
namespace {

INSTANTIATE_TEST_SUITE_P(
    Semaphore, BackendConformanceTest,
    ::testing::Values(BackendUnderTest{
        "semaphore",
        [] { return NewSemaphoreBackend(/*slots=*/1); },
        [](const std::string& dir, const std::string& name) {
          return dir + "/" + name;
        },
        /*shared_holders=*/false,
        /*fencing_tokens=*/false,
        /*freed_after_crash_within=*/absl::ZeroDuration(),
    }),
    BackendName);

}  // namespace
}  // namespace onlyone::testing
