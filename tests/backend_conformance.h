// The conformance suite of the LockBackend seam (lib/lock_backend.h): one
// GoogleTest suite, parameterised over backends, that every backend must
// pass. It checks the contract stated at the top of lib/lock_backend.h with
// real processes: try, timed, blocking and cancelled acquisitions and their
// status codes, exclusion across processes with an exact counter, a holder
// killed with SIGKILL, a fork child that never releases the parent's lock,
// idempotent Release(), release on destruction, messages that name the
// resource, fencing tokens and the lost-lock token.
//
// A backend joins by instantiating the suite in a test file of its own:
//
//   INSTANTIATE_TEST_SUITE_P(
//       File, BackendConformanceTest,
//       ::testing::Values(BackendUnderTest{
//           "file",
//           [] { return onlyone::NewFileLockBackend(); },
//           [](const std::string& dir, const std::string& name) {
//             return dir + "/" + name + ".lock";
//           },
//           /*shared_holders=*/true, /*fencing_tokens=*/false,
//           /*freed_after_crash_within=*/absl::Seconds(1)}),
//       BackendName);
//
// The factory is called in every process that acquires (after fork()), so a
// backend that holds connections never shares one across processes.

#ifndef ONLYONE_TESTS_BACKEND_CONFORMANCE_H_
#define ONLYONE_TESTS_BACKEND_CONFORMANCE_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "onlyone/lock_backend.h"

namespace onlyone::testing {

struct BackendUnderTest {
  std::string name;
  std::function<std::unique_ptr<LockBackend>()> make;
  // The resource called `name` for a test whose private directory is `dir`.
  std::function<std::string(const std::string& dir, const std::string& name)>
      resource;
  bool shared_holders = false;
  bool fencing_tokens = false;
  // How soon after its holder is SIGKILLed a lock is free again: at once for
  // kernel locks, a lease for lease-based ones.
  absl::Duration freed_after_crash_within = absl::Seconds(1);
};

// For INSTANTIATE_TEST_SUITE_P's name generator.
std::string BackendName(
    const ::testing::TestParamInfo<BackendUnderTest>& info);

class BackendConformanceTest
    : public ::testing::TestWithParam<BackendUnderTest> {
 protected:
  BackendConformanceTest();

  // A backend made by the factory, in this process.
  std::unique_ptr<LockBackend> Backend() const { return GetParam().make(); }
  std::string Resource(const std::string& name) const {
    return GetParam().resource(dir_, name);
  }

  const std::string dir_;
};

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_BACKEND_CONFORMANCE_H_
