// The soft lock's conformance suite (tests/backend_conformance.h) again, on a
// FUSE filesystem: bindfs mirrors TEST_TMPDIR at TEST_TMPDIR/fuse, and every
// resource lives under the mirror, so each link(2), rename(2) and inotify
// event goes through the FUSE daemon. The filesystems the soft lock is for
// (sshfs, s3fs, NFS) cannot be mounted here; bindfs is the FUSE one Debian
// has that can.
//
// Where FUSE is not available (no bindfs, no /dev/fuse, not allowed to
// mount), the suite does not run and the one test here, FuseIsMounted, is
// skipped with the reason. The mount is undone before the binary exits.

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "onlyone/flock_trust.h"
#include "onlyone/soft_lock_backend.h"
#include "tests/backend_conformance.h"
#include "tests/test_util.h"

namespace onlyone::testing {
namespace {

std::string& TmpDir() {
  static std::string* const dir = [] {
    const char* base = getenv("TEST_TMPDIR");
    return new std::string(base != nullptr ? base : "/tmp");
  }();
  return *dir;
}

std::string MountPoint() { return TmpDir() + "/fuse"; }

// Why the mount could not be made; empty once it is.
std::string& WhyNotMounted() {
  static std::string* const why = new std::string("not tried");
  return *why;
}

void Mount() { WhyNotMounted() = MountBindfs(TmpDir(), MountPoint()); }

void Unmount() {
  if (!WhyNotMounted().empty()) return;
  UnmountBindfs(MountPoint());
  WhyNotMounted() = "unmounted";
}

// A resource under the mirror: the test's own directory seen through FUSE.
std::string ThroughFuse(const std::string& dir, const std::string& name) {
  std::string relative = dir;
  if (absl::StartsWith(relative, TmpDir())) {
    relative = relative.substr(TmpDir().size());
  }
  return absl::StrCat(MountPoint(), relative, "/", name, ".lock");
}

TEST(SoftLockOnFuse, FuseIsMounted) {
  if (!WhyNotMounted().empty()) {
    GTEST_SKIP() << "FUSE not available, the soft lock suite did not run on "
                    "it: "
                 << WhyNotMounted();
  }
  // And it is the kind of filesystem the soft lock is for.
  absl::StatusOr<FlockTrust> trust = CheckFlockTrust(MountPoint());
  ASSERT_TRUE(trust.ok()) << trust.status();
  EXPECT_FALSE(trust->trusted);
  EXPECT_EQ(trust->filesystem_type, "fuse");
  EXPECT_TRUE(FlockTrustNeedsChecking(MountPoint() + "/not-yet.lock"));
}

INSTANTIATE_TEST_SUITE_P(
    SoftOnFuse, BackendConformanceTest,
    ::testing::Values(BackendUnderTest{
        "soft_on_bindfs",
        [] { return NewSoftFileLockBackend(); },
        ThroughFuse,
        /*shared_holders=*/false,
        /*fencing_tokens=*/false,
        /*freed_after_crash_within=*/absl::ZeroDuration(),
    }),
    BackendName);

}  // namespace
}  // namespace onlyone::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  onlyone::testing::Mount();
  if (!onlyone::testing::WhyNotMounted().empty()) {
    std::fprintf(stderr, "soft_lock_fuse_conformance_test: %s; only "
                 "FuseIsMounted runs (skipped)\n",
                 onlyone::testing::WhyNotMounted().c_str());
    ::testing::GTEST_FLAG(filter) = "SoftLockOnFuse.*";
  }
  const int result = RUN_ALL_TESTS();
  onlyone::testing::Unmount();
  return result;
}
