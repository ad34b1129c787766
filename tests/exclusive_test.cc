// Tests of RunExclusive and Exclusive: return types, exclusion across
// threads and processes, and that fn does not run without the lock.

#include "onlyone/exclusive.h"

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::MakeTempDir;
using ::testing::HasSubstr;

class ExclusiveTest : public ::testing::Test {
 protected:
  std::string dir_ = MakeTempDir();
  std::string path_ = dir_ + "/exclusive.lock";
};

int Add(int a, int b) { return a + b; }

TEST_F(ExclusiveTest, ReturnsTheFunctionsValue) {
  absl::StatusOr<int> sum = RunExclusive(path_, {}, Add, 2, 3);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 5);
}

TEST_F(ExclusiveTest, VoidFunctionGivesAStatus) {
  bool ran = false;
  absl::Status status = RunExclusive(path_, {}, [&] { ran = true; });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(ran);
}

TEST_F(ExclusiveTest, StatusAndStatusOrResultsPassThroughUnwrapped) {
  absl::Status failed = RunExclusive(
      path_, {}, [] { return absl::DataLossError("bad input"); });
  EXPECT_TRUE(absl::IsDataLoss(failed));
  absl::StatusOr<std::string> named = RunExclusive(
      path_, {}, []() -> absl::StatusOr<std::string> { return "ok"; });
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(*named, "ok");
}

TEST_F(ExclusiveTest, FunctionRunsUnderTheLock) {
  absl::StatusOr<bool> excluded = RunExclusive(path_, {}, [&] {
    Child probe = Child::Fork([&] {
      LockOptions try_once;
      try_once.timeout = absl::ZeroDuration();
      return absl::IsUnavailable(
                 ScopedFileLock::Acquire(path_, try_once).status())
                 ? 0
                 : 1;
    });
    return probe.Wait() == 0;
  });
  ASSERT_TRUE(excluded.ok());
  EXPECT_TRUE(*excluded);
  // Released afterwards.
  EXPECT_TRUE(ScopedFileLock::Acquire(path_).ok());
}

TEST_F(ExclusiveTest, FunctionDoesNotRunWhenTheLockIsUnavailable) {
  absl::StatusOr<ScopedFileLock> held = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(held.ok());
  bool ran = false;
  std::thread other([&] {
    LockOptions try_once;
    try_once.timeout = absl::ZeroDuration();
    absl::Status status = RunExclusive(path_, try_once, [&] { ran = true; });
    EXPECT_TRUE(absl::IsUnavailable(status)) << status;
    EXPECT_THAT(status.message(), HasSubstr(path_));
  });
  other.join();
  EXPECT_FALSE(ran);
}

TEST_F(ExclusiveTest, ExclusiveCallableSerialisesThreadsAndProcesses) {
  const std::string counter = dir_ + "/counter";
  std::ofstream(counter) << 0;
  auto increment = Exclusive(path_, {}, [&counter](int times) {
    for (int i = 0; i < times; ++i) {
      long value = 0;
      std::ifstream(counter) >> value;
      std::ofstream(counter, std::ios::trunc) << value + 1;
    }
  });
  constexpr int kPerCall = 50;
  std::vector<Child> processes;
  for (int p = 0; p < 2; ++p) {
    processes.push_back(Child::Fork([&] {
      for (int call = 0; call < 20; ++call) {
        if (!increment(kPerCall).ok()) return 1;
      }
      return 0;
    }));
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int call = 0; call < 20; ++call) {
        EXPECT_TRUE(increment(kPerCall).ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (Child& process : processes) EXPECT_EQ(process.Wait(), 0);
  long total = 0;
  std::ifstream(counter) >> total;
  EXPECT_EQ(total, 4 * 20 * kPerCall);
}

TEST_F(ExclusiveTest, FileBackendExcludesScopedFileLockOnTheSamePath) {
  std::unique_ptr<LockBackend> files = NewFileLockBackend();
  absl::StatusOr<std::unique_ptr<HeldLock>> held = files->Acquire(path_, {});
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_TRUE((*held)->held());
  EXPECT_EQ((*held)->name(), path_);
  Child probe = Child::Fork([&] {
    LockOptions try_once;
    try_once.timeout = absl::ZeroDuration();
    return ScopedFileLock::Acquire(path_, try_once).ok() ? 1 : 0;
  });
  EXPECT_EQ(probe.Wait(), 0);
  ASSERT_TRUE((*held)->Release().ok());
  EXPECT_FALSE((*held)->held());
  EXPECT_TRUE((*held)->Release().ok());
}

TEST_F(ExclusiveTest, RunExclusiveThroughABackend) {
  std::unique_ptr<LockBackend> files = NewFileLockBackend();
  absl::StatusOr<int> sum = RunExclusive(*files, path_, {}, Add, 40, 2);
  ASSERT_TRUE(sum.ok()) << sum.status();
  EXPECT_EQ(*sum, 42);

  absl::StatusOr<ScopedFileLock> held = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(held.ok());
  std::thread other([&] {
    LockOptions try_once;
    try_once.timeout = absl::ZeroDuration();
    absl::StatusOr<int> refused = RunExclusive(*files, path_, try_once, Add, 1, 1);
    EXPECT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  });
  other.join();
}

}  // namespace
}  // namespace onlyone
