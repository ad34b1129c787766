// Set-up shared by the SingleInstance tests that run real processes
// (single_instance_test, single_instance_messaging_test): a fixture whose
// instances live in a fresh directory of the test's own, and a child process
// that holds an instance until the test lets it go.

#ifndef ONLYONE_TESTS_SINGLE_INSTANCE_TEST_UTIL_H_
#define ONLYONE_TESTS_SINGLE_INSTANCE_TEST_UTIL_H_

#include <string>

#include "gtest/gtest.h"
#include "onlyone/single_instance.h"
#include "tests/test_util.h"

namespace onlyone::testing {

// A fixture whose options_ put every instance (its lock file and its socket)
// in dir_, a fresh directory, so that tests never meet each other's
// instances nor the user's.
class InstanceDirectoryTest : public ::testing::Test {
 protected:
  // Who must be able to reach dir_.
  enum class Reach {
    // Under TEST_TMPDIR, which Bazel removes.
    kThisUser,
    // Under /tmp, mode 0755, removed by the fixture: for tests that switch
    // to `nobody`, and for socket paths short enough for sun_path.
    kOtherUsers,
  };

  explicit InstanceDirectoryTest(Reach reach = Reach::kThisUser);
  ~InstanceDirectoryTest() override;

  // The lock file and the socket of the instance `name` in dir_.
  std::string PathOf(const std::string& name) const;
  std::string SocketOf(const std::string& name) const;

  const Reach reach_;
  const std::string dir_;
  InstanceOptions options_;
};

// A child that acquires the instance `name`, sends on `ready` once it holds
// it, and releases it when the test sends on `release`. It exits 0 after a
// clean release, 2 if it could not acquire, 3 if the release failed.
Child HoldInstanceInChild(const std::string& name,
                          const InstanceOptions& options, Pipe& ready,
                          Pipe& release);

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_SINGLE_INSTANCE_TEST_UTIL_H_
