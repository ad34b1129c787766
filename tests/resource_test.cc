// Resource accounting: every acquisition, release, query and error path
// gives back what it took. The test counts this process's descriptors
// (/proc/self/fd), threads (/proc/self/task) and POSIX timers
// (/proc/self/timers) before and after 10^5 operations and after each error
// path, and checks the figures are back at the baseline; and it runs the
// library out of descriptors (RLIMIT_NOFILE, in a forked child) to see a
// clear status naming the path, no crash, nothing leaked, and a working lock
// once the limit is raised again.
//
// Contention comes from real processes (forked holders synchronised through
// pipes), made before the baseline so that their pipes are part of it.

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/cancellation.h"
#include "onlyone/scoped_file_lock.h"
#include "onlyone/single_instance.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::ReadFileOrEmpty;
using ::testing::HasSubstr;

// ThreadSanitizer's runtime starts a background thread of its own when it
// first needs one (after the first fork, say): threads are not compared in
// that build; descriptors and timers still are.
#if defined(__SANITIZE_THREAD__)
constexpr bool kCompareThreads = false;
#else
constexpr bool kCompareThreads = true;
#endif

struct Resources {
  int descriptors = 0;
  int threads = 0;
  int timers = 0;

  bool operator==(const Resources& other) const {
    return descriptors == other.descriptors &&
           (!kCompareThreads || threads == other.threads) &&
           timers == other.timers;
  }
};

std::ostream& operator<<(std::ostream& out, const Resources& resources) {
  return out << resources.descriptors << " descriptors, " << resources.threads
             << " threads, " << resources.timers << " POSIX timers";
}

// Entries of a /proc directory, not counting "." and "..".
int CountEntries(const char* path) {
  DIR* directory = opendir(path);
  if (directory == nullptr) return -1;
  int count = 0;
  while (struct dirent* entry = readdir(directory)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(directory);
  return count;
}

Resources Count() {
  Resources resources;
  // The directory stream's own descriptor is listed too.
  resources.descriptors = CountEntries("/proc/self/fd") - 1;
  resources.threads = CountEntries("/proc/self/task");
  for (absl::string_view line :
       absl::StrSplit(ReadFileOrEmpty("/proc/self/timers"), '\n')) {
    if (absl::StartsWith(line, "ID:")) ++resources.timers;
  }
  return resources;
}

class ResourceTest : public ::testing::Test {
 protected:
  ResourceTest() : dir_(MakeTempDir()) {
    options_.directory = dir_;
    free_path_ = dir_ + "/plain-free.lock";
    held_path_ = dir_ + "/plain-held.lock";
  }

  // A child holding a plain lock on held_path_ and another holding the
  // instance "held", until the test ends.
  void StartHolders() {
    plain_holder_.emplace(Child::Fork([this] {
      absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(held_path_);
      if (!lock.ok()) return 2;
      plain_ready_.Send();
      release_.Receive(absl::Hours(1));
      return 0;
    }));
    instance_holder_.emplace(Child::Fork([this] {
      absl::StatusOr<SingleInstance> instance =
          SingleInstance::Acquire("held", options_);
      if (!instance.ok()) {
        fprintf(stderr, "holder: %s\n", instance.status().ToString().c_str());
        return 2;
      }
      instance_ready_.Send();
      release_.Receive(absl::Hours(1));
      return 0;
    }));
    ASSERT_EQ(plain_ready_.Receive(), '.');
    ASSERT_EQ(instance_ready_.Receive(), '.');
  }

  void TearDown() override {
    release_.Send();
    release_.Send();
    if (plain_holder_.has_value()) {
      EXPECT_EQ(plain_holder_->Wait(), 0);
    }
    if (instance_holder_.has_value()) {
      EXPECT_EQ(instance_holder_->Wait(), 0);
    }
  }

  const std::string dir_;
  InstanceOptions options_;
  std::string free_path_;
  std::string held_path_;
  Pipe plain_ready_, instance_ready_, release_;
  std::optional<Child> plain_holder_, instance_holder_;
};

// One uncontended operation of kind `i % 5` (4: holder queries, which need
// the holders of StartHolders()); a fatal failure if it did not behave.
void Operate(int i, const std::string& free_path, const std::string& held_path,
             const InstanceOptions& options) {
  switch (i % 5) {
    case 0: {
      LockOptions try_once;
      try_once.timeout = absl::ZeroDuration();
      absl::StatusOr<ScopedFileLock> lock =
          ScopedFileLock::Acquire(free_path, try_once);
      ASSERT_TRUE(lock.ok()) << lock.status();
      ASSERT_TRUE(lock->Release().ok());
      break;
    }
    case 1: {
      LockOptions timed;
      timed.timeout = absl::Seconds(10);
      absl::StatusOr<ScopedFileLock> lock =
          ScopedFileLock::Acquire(free_path, timed);
      ASSERT_TRUE(lock.ok()) << lock.status();
      ASSERT_TRUE(lock->Release().ok());
      break;
    }
    case 2: {
      LockOptions cancellable;
      cancellable.cancellation = CancellationToken();
      absl::StatusOr<ScopedFileLock> lock =
          ScopedFileLock::Acquire(free_path, cancellable);
      ASSERT_TRUE(lock.ok()) << lock.status();
      ASSERT_TRUE(lock->Release().ok());
      break;
    }
    case 3: {
      absl::StatusOr<SingleInstance> instance =
          SingleInstance::Acquire("free", options);
      ASSERT_TRUE(instance.ok()) << instance.status();
      ASSERT_TRUE(instance->Release().ok());
      break;
    }
    case 4: {
      absl::StatusOr<std::optional<InstanceInfo>> named =
          SingleInstance::Holder("held", options);
      ASSERT_TRUE(named.ok() && named->has_value()) << named.status();
      absl::StatusOr<std::optional<InstanceInfo>> plain =
          SingleInstance::HolderAtPath(held_path);
      ASSERT_TRUE(plain.ok() && plain->has_value()) << plain.status();
      break;
    }
  }
}

TEST_F(ResourceTest, AHundredThousandOperationsAndEveryErrorPathLeakNothing) {
  StartHolders();
  const std::string missing = dir_ + "/no-such-directory/x.lock";
  const std::string symlink_path = dir_ + "/link.lock";
  ASSERT_EQ(symlink(free_path_.c_str(), symlink_path.c_str()), 0);

  // Warm-up: the first timed wait picks its signal, the first SingleInstance
  // caches this process's identity; those are kept for the process's life.
  for (int i = 0; i < 5; ++i) Operate(i, free_path_, held_path_, options_);
  {
    LockOptions timed;
    timed.timeout = absl::Milliseconds(1);
    ASSERT_TRUE(absl::IsDeadlineExceeded(
        ScopedFileLock::Acquire(held_path_, timed).status()));
  }
  const Resources baseline = Count();
  ASSERT_GT(baseline.descriptors, 0);
  ASSERT_GT(baseline.threads, 0);

  for (int i = 0; i < 100000; ++i) {
    Operate(i, free_path_, held_path_, options_);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_EQ(Count(), baseline) << "after 10^5 acquisitions and queries";

  struct ErrorPath {
    const char* what;
    std::function<absl::Status()> run;
    absl::StatusCode code;
  };
  const std::vector<ErrorPath> error_paths = {
      {"missing directory",
       [&] { return ScopedFileLock::Acquire(missing).status(); },
       absl::StatusCode::kNotFound},
      {"symlink",
       [&] { return ScopedFileLock::Acquire(symlink_path).status(); },
       absl::StatusCode::kInvalidArgument},
      {"conflict on a try",
       [&] {
         LockOptions try_once;
         try_once.timeout = absl::ZeroDuration();
         return ScopedFileLock::Acquire(held_path_, try_once).status();
       },
       absl::StatusCode::kUnavailable},
      {"timeout",
       [&] {
         LockOptions timed;
         timed.timeout = absl::Milliseconds(1);
         return ScopedFileLock::Acquire(held_path_, timed).status();
       },
       absl::StatusCode::kDeadlineExceeded},
      {"cancellation by another thread, before or during the wait",
       [&] {
         LockOptions cancellable;
         CancellationToken token;
         cancellable.cancellation = token;
         std::thread canceller([token]() mutable { token.Cancel(); });
         absl::Status status =
             ScopedFileLock::Acquire(held_path_, cancellable).status();
         canceller.join();
         return status;
       },
       absl::StatusCode::kCancelled},
      {"instance conflict",
       [&] { return SingleInstance::Acquire("held", options_).status(); },
       absl::StatusCode::kUnavailable},
      {"instance wait timeout",
       [&] {
         InstanceOptions waiting = options_;
         waiting.on_conflict = ConflictPolicy::kWait;
         waiting.wait_timeout = absl::Milliseconds(1);
         return SingleInstance::Acquire("held", waiting).status();
       },
       absl::StatusCode::kDeadlineExceeded},
      {"instance in a missing directory",
       [&] {
         InstanceOptions elsewhere = options_;
         elsewhere.directory = dir_ + "/no-such-directory";
         return SingleInstance::Acquire("x", elsewhere).status();
       },
       absl::StatusCode::kNotFound},
      {"instance at a symlink",
       [&] { return SingleInstance::AcquireAtPath(symlink_path).status(); },
       absl::StatusCode::kInvalidArgument},
  };
  for (const ErrorPath& path : error_paths) {
    SCOPED_TRACE(path.what);
    for (int i = 0; i < 200; ++i) {
      const absl::Status status = path.run();
      ASSERT_EQ(status.code(), path.code) << status;
    }
    EXPECT_EQ(Count(), baseline) << "after 200 times: " << path.what;
  }
}

// In a child whose descriptor limit is used up, every way in fails with a
// status that names the path and says why, and nothing stays open; with
// the limit raised again the same calls work.
TEST_F(ResourceTest, OutOfDescriptorsIsAClearStatusAndRecovers) {
  StartHolders();
  Pipe report;
  Child child = Child::Fork([&]() -> int {
    auto say = [&](const std::string& text) {
      const std::string line = text + "\n";
      return write(report.write_fd(), line.data(), line.size()) > 0;
    };
    // Warm-up as above, then the baseline.
    for (int i = 0; i < 4; ++i) Operate(i, free_path_, held_path_, options_);
    const Resources before = Count();
    struct rlimit old_limit;
    if (getrlimit(RLIMIT_NOFILE, &old_limit) != 0) return 10;
    struct rlimit low = old_limit;
    low.rlim_cur = static_cast<rlim_t>(before.descriptors + 8);
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) return 11;
    std::vector<int> filler;
    for (;;) {
      const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      filler.push_back(fd);
    }
    if (errno != EMFILE) return 12;

    int failures = 0;
    auto expect_exhausted = [&](const char* what, const absl::Status& status,
                                const std::string& names) {
      say(absl::StrCat(what, ": ", status.ToString()));
      if (status.ok() || !absl::StrContains(status.message(), names) ||
          !absl::StrContains(status.message(), "Too many open files")) {
        ++failures;
        say(absl::StrCat("  ^ expected a status naming ", names,
                         " and the reason"));
      }
    };
    expect_exhausted("try", ScopedFileLock::Acquire(free_path_).status(),
                     free_path_);
    LockOptions timed;
    timed.timeout = absl::Seconds(1);
    expect_exhausted("timed",
                     ScopedFileLock::Acquire(free_path_, timed).status(),
                     free_path_);
    expect_exhausted("instance",
                     SingleInstance::Acquire("free", options_).status(), dir_);
    expect_exhausted("instance at path",
                     SingleInstance::AcquireAtPath(free_path_).status(),
                     free_path_);
    // A query cannot open the lock file either; it must say so (or answer),
    // not crash.
    absl::StatusOr<std::optional<InstanceInfo>> holder =
        SingleInstance::HolderAtPath(held_path_);
    say(absl::StrCat("holder: ",
                     holder.ok() ? "answered" : holder.status().ToString()));
    if (!holder.ok() &&
        !absl::StrContains(holder.status().message(), held_path_)) {
      ++failures;
    }

    for (int fd : filler) close(fd);
    if (setrlimit(RLIMIT_NOFILE, &old_limit) != 0) return 13;
    const Resources after = Count();
    if (!(after == before)) {
      std::ostringstream text;
      text << "leaked: before " << before << ", after " << after;
      say(text.str());
      ++failures;
    }
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(free_path_);
    if (!lock.ok() || !lock->Release().ok()) {
      say("the lock does not work after raising the limit");
      ++failures;
    }
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("free", options_);
    if (!instance.ok() || !instance->Release().ok()) {
      say("the instance does not work after raising the limit");
      ++failures;
    }
    return failures;
  });
  const int code = child.Wait();
  report.CloseWrite();
  const std::string said = report.ReadAll();
  std::cout << said;
  EXPECT_EQ(code, 0) << said;
}

}  // namespace
}  // namespace onlyone
