#include "tests/single_instance_test_util.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace onlyone::testing {

InstanceDirectoryTest::InstanceDirectoryTest(Reach reach)
    : reach_(reach),
      dir_(reach == Reach::kOtherUsers ? MakeTempDirOtherUsersCanReach()
                                       : MakeTempDir()) {
  options_.directory = dir_;
}

InstanceDirectoryTest::~InstanceDirectoryTest() {
  // Bazel cleans TEST_TMPDIR, but nothing cleans /tmp.
  if (reach_ == Reach::kOtherUsers) {
    RunShell(absl::StrCat("rm -rf '", dir_, "'"));
  }
}

std::string InstanceDirectoryTest::PathOf(const std::string& name) const {
  return absl::StrCat(dir_, "/", name, ".lock");
}

std::string InstanceDirectoryTest::SocketOf(const std::string& name) const {
  return absl::StrCat(dir_, "/", name, ".sock");
}

Child HoldInstanceInChild(const std::string& name,
                          const InstanceOptions& options, Pipe& ready,
                          Pipe& release) {
  return Child::Fork([&, options] {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire(name, options);
    if (!instance.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return instance->Release().ok() ? 0 : 3;
  });
}

}  // namespace onlyone::testing
