// onlyone and the Python lock libraries it replaces (py-filelock and
// portalocker, Debian's packages) exclude each other on the same file, both
// ways: all three use flock(2) on Linux.

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/scoped_file_lock.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::Pipe;
using ::testing::HasSubstr;

// Debian's interpreter, which has the libraries (another python3 on PATH
// may not).
constexpr char kPython[] = "/usr/bin/python3";

// Each script takes the lock file as argv[1]. "try" scripts exit 0 when
// they got the lock at once and 1 when it was held; "hold" scripts print
// "held" once they hold it and keep it until standard input closes.
constexpr char kFilelockTry[] = R"(
import sys, filelock
lock = filelock.FileLock(sys.argv[1])
try:
    lock.acquire(timeout=0)
except filelock.Timeout:
    sys.exit(1)
lock.release()
)";
constexpr char kFilelockHold[] = R"(
import sys, filelock
with filelock.FileLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
)";
constexpr char kPortalockerTry[] = R"(
import sys, portalocker
with open(sys.argv[1], "a") as f:
    try:
        portalocker.lock(f, portalocker.LOCK_EX | portalocker.LOCK_NB)
    except portalocker.exceptions.LockException:
        sys.exit(1)
    portalocker.unlock(f)
)";
constexpr char kPortalockerHold[] = R"(
import sys, portalocker
with open(sys.argv[1], "a") as f:
    portalocker.lock(f, portalocker.LOCK_EX)
    print("held", flush=True)
    sys.stdin.read()
)";

class PythonInteropTest : public ::testing::TestWithParam<
                              std::pair<const char*, const char*>> {
 protected:
  void SetUp() override {
    // tools/install-deps installs it with both libraries; a missing one is
    // a broken setup, not a reason to skip.
    ASSERT_EQ(access(kPython, X_OK), 0) << kPython << " missing";
  }

  // Runs a "try" script; returns its exit code.
  int RunTry() {
    Child python = Child::Fork([&] {
      execl(kPython, kPython, "-c", GetParam().first, path_.c_str(), nullptr);
      return 127;
    });
    return python.Wait();
  }

  std::string path_ = MakeTempDir() + "/shared.lock";
};

TEST_P(PythonInteropTest, OurLockExcludesThePythonLibrary) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(RunTry(), 1);
  ASSERT_TRUE(lock->Release().ok());
  EXPECT_EQ(RunTry(), 0);
}

TEST_P(PythonInteropTest, ThePythonLibraryExcludesUsAndIsNamed) {
  Pipe held, release;
  Child python = Child::Fork([&] {
    dup2(release.read_fd(), STDIN_FILENO);
    dup2(held.write_fd(), STDOUT_FILENO);
    execl(kPython, kPython, "-c", GetParam().second, path_.c_str(), nullptr);
    return 127;
  });
  ASSERT_EQ(held.Receive(), 'h');

  LockOptions try_once;
  try_once.timeout = absl::ZeroDuration();
  absl::StatusOr<ScopedFileLock> lock =
      ScopedFileLock::Acquire(path_, try_once);
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(),
              HasSubstr(absl::StrCat(path_, " is held by pid ", python.pid())));

  release.CloseWrite();
  EXPECT_EQ(python.Wait(), 0);
  EXPECT_TRUE(ScopedFileLock::Acquire(path_, try_once).ok());
}

INSTANTIATE_TEST_SUITE_P(
    Libraries, PythonInteropTest,
    ::testing::Values(std::make_pair(kFilelockTry, kFilelockHold),
                      std::make_pair(kPortalockerTry, kPortalockerHold)),
    [](const auto& info) {
      return info.index == 0 ? std::string("PyFilelock")
                             : std::string("Portalocker");
    });

}  // namespace
}  // namespace onlyone
