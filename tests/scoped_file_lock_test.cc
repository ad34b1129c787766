// Tests of ScopedFileLock with real processes: exclusion, modes, timeouts,
// crashes, fork/exec/daemon behaviour, threads, replaced lock files, refused
// file types and interoperation with flock(1).

#include "onlyone/scoped_file_lock.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/cancellation.h"
#include "onlyone/internal/posix_error.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::BecomeNobody;
using ::onlyone::testing::Child;
using ::onlyone::testing::ForgetTestRunnerFiles;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::MakeTempDirOtherUsersCanReach;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::RunShell;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::onlyone::testing::WaitForHolder;
using ::testing::HasSubstr;

LockOptions TryOnce(LockMode mode = LockMode::kExclusive) {
  LockOptions options;
  options.mode = mode;
  options.timeout = absl::ZeroDuration();
  return options;
}

// Whether another process could take the lock right now.
bool FreeForOtherProcess(const std::string& path,
                         LockMode mode = LockMode::kExclusive) {
  Child probe = Child::Fork([&] {
    return ScopedFileLock::Acquire(path, TryOnce(mode)).ok() ? 0 : 1;
  });
  return probe.Wait() == 0;
}

// A child that takes the lock, reports through `ready`, and holds it until
// `release` is written to (or closed).
Child HoldInChild(const std::string& path, Pipe& ready, Pipe& release,
                  LockOptions options = {}) {
  return Child::Fork([&path, &ready, &release, options] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path, options);
    if (!lock.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return lock->Release().ok() ? 0 : 3;
  });
}

ino_t InodeOf(const std::string& path) {
  struct stat file;
  return stat(path.c_str(), &file) == 0 ? file.st_ino : 0;
}

class ScopedFileLockTest : public ::testing::Test {
 protected:
  std::string dir_ = MakeTempDir();
  std::string path_ = dir_ + "/job.lock";
};

TEST_F(ScopedFileLockTest, TryOnceWhileAnotherProcessHoldsNamesPathAndPid) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  absl::StatusOr<ScopedFileLock> lock =
      ScopedFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr(path_));
  EXPECT_THAT(lock.status().message(),
              HasSubstr(absl::StrCat("is held by pid ", holder.pid())));

  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  EXPECT_TRUE(ScopedFileLock::Acquire(path_, TryOnce()).ok());
}

TEST_F(ScopedFileLockTest, ProcessesIncrementingACounterEndWithTheExactCount) {
  const std::string counter_path = dir_ + "/counter";
  std::ofstream(counter_path) << 0;
  constexpr int kProcesses = 4;
  constexpr int kIncrements = 500;
  std::vector<Child> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(Child::Fork([&] {
      for (int n = 0; n < kIncrements; ++n) {
        absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
        if (!lock.ok()) return 1;
        long value = 0;
        std::ifstream(counter_path) >> value;
        std::ofstream(counter_path, std::ios::trunc) << value + 1;
      }
      return 0;
    }));
  }
  for (Child& worker : workers) EXPECT_EQ(worker.Wait(), 0);
  long total = 0;
  std::ifstream(counter_path) >> total;
  EXPECT_EQ(total, kProcesses * kIncrements);
}

TEST_F(ScopedFileLockTest, SharedHoldersCoexistAndExcludeExclusive) {
  LockOptions shared;
  shared.mode = LockMode::kShared;
  Pipe ready, release;
  Child reader = HoldInChild(path_, ready, release, shared);
  ASSERT_EQ(ready.Receive(), '.');

  EXPECT_TRUE(FreeForOtherProcess(path_, LockMode::kShared));
  absl::StatusOr<ScopedFileLock> exclusive =
      ScopedFileLock::Acquire(path_, TryOnce());
  EXPECT_TRUE(absl::IsUnavailable(exclusive.status())) << exclusive.status();
  release.Send();
  ASSERT_EQ(reader.Wait(), 0);

  absl::StatusOr<ScopedFileLock> writer =
      ScopedFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(writer.ok()) << writer.status();
  EXPECT_FALSE(FreeForOtherProcess(path_, LockMode::kShared));
}

TEST_F(ScopedFileLockTest, TimeoutIsHonouredAndNotCutShort) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  LockOptions options;
  options.timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_, options);
  const absl::Duration waited = absl::Now() - start;

  ASSERT_TRUE(absl::IsDeadlineExceeded(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr(path_));
  EXPECT_THAT(lock.status().message(),
              HasSubstr(absl::StrCat("pid ", holder.pid())));
  EXPECT_GE(waited, absl::Milliseconds(300));
  EXPECT_LT(waited, absl::Seconds(3));
}

// The timer that interrupts a wait fires every millisecond once the
// deadline passed or Cancel() came, until the wait ends; after that, no
// signal may reach the thread (it would cut the application's system calls
// short with EINTR). A 100 ms sleep in poll(2) shows it.
TEST_F(ScopedFileLockTest, NoTimerSignalReachesTheThreadAfterTheWait) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  LockOptions timed;
  timed.timeout = absl::Milliseconds(20);
  for (int i = 0; i < 2; ++i) {  // the second reuses the thread's timer
    absl::Status status = ScopedFileLock::Acquire(path_, timed).status();
    EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
    EXPECT_EQ(poll(nullptr, 0, 100), 0) << std::strerror(errno);
  }

  CancellationToken token;
  LockOptions cancellable;
  cancellable.cancellation = token;
  std::thread canceller([&] {
    ASSERT_TRUE(WaitForBlockedWaiters(path_));
    token.Cancel();
  });
  absl::Status cancelled = ScopedFileLock::Acquire(path_, cancellable).status();
  canceller.join();
  EXPECT_TRUE(absl::IsCancelled(cancelled)) << cancelled;
  EXPECT_EQ(poll(nullptr, 0, 100), 0) << std::strerror(errno);

  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

// How many POSIX timers this process has (/proc/self/timers lists them).
int CountTimers() {
  std::ifstream timers("/proc/self/timers");
  int count = 0;
  for (std::string line; std::getline(timers, line);) {
    if (line.rfind("ID:", 0) == 0) ++count;
  }
  return count;
}

// A thread keeps one timer for its waits; it goes when the thread ends, and
// a fork child makes its own.
TEST_F(ScopedFileLockTest, AThreadsWaitTimerGoesWithItAndIsNotInherited) {
  if (!std::ifstream("/proc/self/timers").good()) {
    GTEST_SKIP() << "no /proc/self/timers on this kernel";
  }
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  const int before = CountTimers();
  for (int i = 0; i < 5; ++i) {
    std::thread waiter([&] {
      LockOptions timed;
      timed.timeout = absl::Milliseconds(5);
      for (int wait = 0; wait < 2; ++wait) {
        EXPECT_TRUE(absl::IsDeadlineExceeded(
            ScopedFileLock::Acquire(path_, timed).status()));
      }
      EXPECT_EQ(CountTimers(), before + 1);  // one for both waits
    });
    waiter.join();
  }
  EXPECT_EQ(CountTimers(), before);
  // Nor does a fork child inherit the forking thread's timer (POSIX timers
  // are not inherited, and the child's own may get the same id): its timed
  // waits make their own, and time out.
  LockOptions timed;
  timed.timeout = absl::Milliseconds(20);
  ASSERT_TRUE(absl::IsDeadlineExceeded(
      ScopedFileLock::Acquire(path_, timed).status()));  // this thread's timer
  Child child = Child::Fork([&] {
    const absl::Time start = absl::Now();
    const absl::Status status = ScopedFileLock::Acquire(path_, timed).status();
    if (!absl::IsDeadlineExceeded(status)) return 1;
    if (absl::Now() - start > absl::Seconds(5)) return 2;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(ScopedFileLockTest, TimedWaitReturnsAsSoonAsTheHolderReleases) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  std::thread releaser([&] {
    ASSERT_TRUE(WaitForBlockedWaiters(path_));
    release.Send();
  });
  LockOptions options;
  options.timeout = absl::Seconds(30);
  const absl::Time start = absl::Now();
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_, options);
  releaser.join();
  EXPECT_TRUE(lock.ok()) << lock.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(ScopedFileLockTest, StatusWhenLockedDescribesTheFileAsLocked) {
  {
    std::ofstream(path_) << "12345";
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_EQ(lock->status_when_locked().st_ino, InodeOf(path_));
    EXPECT_EQ(lock->status_when_locked().st_nlink, 1u);
    EXPECT_EQ(lock->status_when_locked().st_size, 5);
  }
  // After a wait it shows what the previous holder left, not what the file
  // was when the wait began.
  Pipe ready, release;
  Child holder = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!lock.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    const std::string more(100, 'x');
    if (pwrite(lock->fd(), more.data(), more.size(), 5) != 100) return 3;
    return lock->Release().ok() ? 0 : 4;
  });
  ASSERT_EQ(ready.Receive(), '.');
  std::thread releaser([&] {
    ASSERT_TRUE(WaitForBlockedWaiters(path_));
    release.Send();
  });
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  releaser.join();
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ(holder.Wait(), 0);
  EXPECT_EQ(lock->status_when_locked().st_size, 105);
  // Moves carry it along.
  ScopedFileLock moved = *std::move(lock);
  EXPECT_EQ(moved.status_when_locked().st_size, 105);
}

TEST_F(ScopedFileLockTest, KilledHolderFreesTheLockForABlockedWaiterAtOnce) {
  Pipe ready, release, acquired;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  Child waiter = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!lock.ok()) return 1;
    acquired.Send();
    return 0;
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_));
  EXPECT_EQ(acquired.Receive(absl::Milliseconds(50)), '\0');  // still held

  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);
  EXPECT_EQ(acquired.Receive(absl::Seconds(5)), '.');
  EXPECT_EQ(waiter.Wait(), 0);
}

TEST_F(ScopedFileLockTest, ForkedChildNeitherOwnsNorReleasesParentsLock) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok()) << lock.status();
  Child child = Child::Fork([&] {
    if (lock->held()) return 1;
    if (lock->fd() != -1) return 2;
    if (!lock->Release().ok()) return 3;
    // The same lock, asked for again, is the parent's: the child waits like
    // any other process.
    if (!absl::IsUnavailable(
            ScopedFileLock::Acquire(path_, TryOnce()).status())) {
      return 4;
    }
    return 0;  // exiting runs no unlock either
  });
  EXPECT_EQ(child.Wait(), 0);
  EXPECT_TRUE(lock->held());
  EXPECT_FALSE(FreeForOtherProcess(path_));
}

TEST_F(ScopedFileLockTest, ForkedChildDoesNotKeepLockAliveAfterHolderDies) {
  Pipe ready, release;
  Pipe grandchild_alive;
  Child holder = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!lock.ok()) return 1;
    Child::Fork([&] {
      release.CloseWrite();  // so the test's CloseWrite() means end of file
      grandchild_alive.Send();
      release.Receive(absl::Hours(1));  // outlives the holder
      return 0;
    }).Detach();
    ready.Send();
    release.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_EQ(grandchild_alive.Receive(), '.');
  ASSERT_EQ(ready.Receive(), '.');
  EXPECT_FALSE(FreeForOtherProcess(path_));
  holder.Kill(SIGKILL);
  holder.Wait();
  EXPECT_TRUE(FreeForOtherProcess(path_));
  release.CloseWrite();  // lets the grandchild exit
}

TEST_F(ScopedFileLockTest, DaemonHandOffKeepsLockAfterParentExits) {
  Pipe daemon_report, stop_daemon;
  Child parent = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!lock.ok()) return 1;
    lock->HandOffOnFork();
    Child::Fork([&] {
      // The double fork of a daemon: hand it on once more.
      lock->HandOffOnFork();
      Child::Fork([&] {
        daemon_report.Send(lock->held() ? 'y' : 'n');
        // A worker forked by the daemon gets nothing: the hand-off is spent.
        Child worker = Child::Fork([&] { return lock->held() ? 1 : 0; });
        daemon_report.Send(worker.Wait() == 0 && lock->held() ? 'y' : 'n');
        stop_daemon.Receive(absl::Hours(1));
        return lock->Release().ok() ? 0 : 1;
      }).Detach();
      return lock->held() ? 2 : 0;
    }).Wait();
    // The parent's copy no longer owns the lock; its destructor only closes.
    return lock->held() ? 2 : 0;
  });
  EXPECT_EQ(parent.Wait(), 0);
  ASSERT_EQ(daemon_report.Receive(), 'y');
  ASSERT_EQ(daemon_report.Receive(), 'y');
  EXPECT_FALSE(FreeForOtherProcess(path_));
  stop_daemon.Send();
  // The daemon releases, then exits; a blocking acquire sees the release.
  LockOptions options;
  options.timeout = absl::Seconds(10);
  EXPECT_TRUE(ScopedFileLock::Acquire(path_, options).ok());
}

TEST_F(ScopedFileLockTest, HandedOffLockIsReleasedWhileTheParentLives) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok());
  lock->HandOffOnFork();
  Child heir = Child::Fork([&] {
    return lock->held() && lock->Release().ok() ? 0 : 1;
  });
  EXPECT_EQ(heir.Wait(), 0);
  // This process still has its descriptor open, but no longer owns the lock.
  EXPECT_FALSE(lock->held());
  EXPECT_TRUE(FreeForOtherProcess(path_));
}

TEST_F(ScopedFileLockTest, ChildForkedDuringAWaitDoesNotKeepTheLockAlive) {
  Pipe ready, release, forked, stop_child;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  Child waiter = Child::Fork([&] {
    // Another thread forks while this one waits for the lock.
    std::thread forker([&] {
      if (!WaitForBlockedWaiters(path_)) return;
      // The child reports once it runs, i.e. after the fork handlers ran.
      Child::Fork([&] {
        stop_child.CloseWrite();  // so the test's CloseWrite() means EOF
        forked.Send();
        stop_child.Receive(absl::Hours(1));
        return 0;
      }).Detach();
    });
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    forker.join();
    if (!lock.ok()) return 1;
    pause();  // killed while holding the lock
    return 0;
  });
  ASSERT_EQ(forked.Receive(), '.');
  release.Send();
  ASSERT_EQ(holder.Wait(), 0);
  ASSERT_TRUE(WaitForHolder(path_, waiter.pid()));
  waiter.Kill(SIGKILL);
  waiter.Wait();
  // The forked child still runs, but holds no copy of the lock.
  EXPECT_TRUE(FreeForOtherProcess(path_));
  stop_child.CloseWrite();
}

// A child that takes the lock with `options`, starts a program that outlives
// it (cat reading `stop_program`, which reports on `ready` once exec'd, so
// the test goes on after the exec) and waits to be killed, as `onlyone run`
// would be.
Child HoldAndRunProgram(const std::string& path, LockOptions options,
                        Pipe& ready, Pipe& stop_program) {
  return Child::Fork([&path, options, &ready, &stop_program] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path, options);
    if (!lock.ok()) return 1;
    Child::Fork([&] {
      dup2(stop_program.read_fd(), STDIN_FILENO);
      dup2(ready.write_fd(), STDOUT_FILENO);
      execl("/bin/sh", "sh", "-c", "echo .; exec cat", nullptr);
      return 127;
    }).Detach();
    pause();
    return 0;
  });
}

TEST_F(ScopedFileLockTest, ExecdProgramInheritsNoLockByDefault) {
  Pipe ready, stop_program;
  Child holder = HoldAndRunProgram(path_, {}, ready, stop_program);
  ASSERT_EQ(ready.Receive(), '.');
  holder.Kill(SIGKILL);
  holder.Wait();
  // cat is still running, but holds no copy of the lock.
  EXPECT_TRUE(FreeForOtherProcess(path_));
  stop_program.CloseWrite();
}

TEST_F(ScopedFileLockTest, InheritableLockIsHeldByExecdProgramForItsLife) {
  Pipe ready, stop_program;
  LockOptions inheritable;
  inheritable.inheritable = true;
  Child holder = HoldAndRunProgram(path_, inheritable, ready, stop_program);
  ASSERT_EQ(ready.Receive(), '.');
  holder.Kill(SIGKILL);  // as if `onlyone run` were killed
  holder.Wait();
  EXPECT_FALSE(FreeForOtherProcess(path_));
  stop_program.CloseWrite();  // cat exits
  LockOptions options;
  options.timeout = absl::Seconds(10);
  EXPECT_TRUE(ScopedFileLock::Acquire(path_, options).ok());
}

// Run by re-executing this test binary: adopts the lock named by
// ONLYONE_TEST_ADOPT_PATH and reports on the descriptor ONLYONE_TEST_REPORT_FD.
TEST(ExecChild, AdoptInherited) {
  const char* path = std::getenv("ONLYONE_TEST_ADOPT_PATH");
  const char* report = std::getenv("ONLYONE_TEST_REPORT_FD");
  if (path == nullptr || report == nullptr) {
    GTEST_SKIP() << "only run re-executed by InheritedLockCanBeAdopted";
  }
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::AdoptInherited(path);
  // A second adoption of the same descriptor would make two owners.
  const bool adopted_once =
      absl::IsFailedPrecondition(ScopedFileLock::AdoptInherited(path).status());
  const bool held = lock.ok() && lock->held();
  // The parent still has the descriptor open; releasing must free the lock
  // all the same.
  const bool released = lock.ok() && lock->Release().ok() &&
                        FreeForOtherProcess(path);
  const char verdict = held && adopted_once && released ? 'y' : 'n';
  ASSERT_EQ(write(atoi(report), &verdict, 1), 1);
  ASSERT_TRUE(lock.ok()) << lock.status();
}

TEST_F(ScopedFileLockTest, InheritedLockCanBeAdoptedAfterExec) {
  LockOptions options;
  options.inheritable = true;
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_, options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  const std::string inherited = lock->InheritedLocksEnvValue();
  ASSERT_FALSE(inherited.empty());
  Pipe report;
  Child program = Child::Fork([&] {
    ForgetTestRunnerFiles();
    fcntl(report.write_fd(), F_SETFD, 0);
    setenv(kInheritedLocksEnvVar, inherited.c_str(), 1);
    setenv("ONLYONE_TEST_ADOPT_PATH", path_.c_str(), 1);
    setenv("ONLYONE_TEST_REPORT_FD", absl::StrCat(report.write_fd()).c_str(),
           1);
    execl("/proc/self/exe", "scoped_file_lock_test",
          "--gtest_filter=ExecChild.AdoptInherited", nullptr);
    return 127;
  });
  EXPECT_EQ(report.Receive(), 'y');
  EXPECT_EQ(program.Wait(), 0);
}

TEST_F(ScopedFileLockTest, AdoptWithoutInheritanceIsNotFound) {
  unsetenv(kInheritedLocksEnvVar);
  ASSERT_TRUE(ScopedFileLock::Acquire(path_).ok());
  absl::StatusOr<ScopedFileLock> adopted =
      ScopedFileLock::AdoptInherited(path_);
  EXPECT_TRUE(absl::IsNotFound(adopted.status())) << adopted.status();
  EXPECT_THAT(adopted.status().message(), HasSubstr(path_));
}

// flock(2) on a descriptor that cannot take locks fails with EBADF, as it
// does on NFS for an exclusive lock on a read-only descriptor. Here the
// "inherited" descriptor is an O_PATH one: a status the caller can act on,
// naming the path and the filesystem, not an Internal error.
TEST_F(ScopedFileLockTest, FlockRefusedByTheFilesystemIsAFailedPrecondition) {
  ASSERT_TRUE(ScopedFileLock::Acquire(path_).ok());  // creates the file
  const int path_only = open(path_.c_str(), O_PATH | O_CLOEXEC);
  ASSERT_GE(path_only, 0);
  absl::Cleanup close_path_only = [path_only] { close(path_only); };
  struct stat file;
  ASSERT_EQ(fstat(path_only, &file), 0);
  setenv(kInheritedLocksEnvVar,
         absl::StrCat(path_only, ":", file.st_dev, ":", file.st_ino, ":s")
             .c_str(),
         1);
  absl::Cleanup forget_env = [] { unsetenv(kInheritedLocksEnvVar); };

  absl::StatusOr<ScopedFileLock> adopted =
      ScopedFileLock::AdoptInherited(path_);
  ASSERT_TRUE(absl::IsFailedPrecondition(adopted.status())) << adopted.status();
  EXPECT_THAT(adopted.status().message(),
              HasSubstr(absl::StrCat(path_, ": flock: Bad file descriptor "
                                            "(EBADF) on a filesystem of type ")));
  const std::string filesystem_type =
      internal::FilesystemTypeOfDevice(file.st_dev);
  ASSERT_FALSE(filesystem_type.empty());
  EXPECT_THAT(adopted.status().message(), HasSubstr(filesystem_type));
  EXPECT_THAT(adopted.status().message(),
              HasSubstr("may not support flock(2) locks"));
}

TEST_F(ScopedFileLockTest, TwoLockObjectsInOneProcessExcludeEachOther) {
  absl::StatusOr<ScopedFileLock> first = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(first.ok());
  std::thread other([&] {
    absl::StatusOr<ScopedFileLock> second =
        ScopedFileLock::Acquire(path_, TryOnce());
    EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
    EXPECT_THAT(second.status().message(), HasSubstr("this process"));
  });
  other.join();
}

TEST_F(ScopedFileLockTest, BlockedThreadGetsLockWhenAnotherThreadReleases) {
  absl::StatusOr<ScopedFileLock> first = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(first.ok());
  std::atomic<bool> acquired{false};
  std::thread waiter([&] {
    absl::StatusOr<ScopedFileLock> second = ScopedFileLock::Acquire(path_);
    acquired = second.ok();
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_));
  EXPECT_FALSE(acquired);
  ASSERT_TRUE(first->Release().ok());
  waiter.join();
  EXPECT_TRUE(acquired);
}

TEST_F(ScopedFileLockTest, ReacquiringOwnLockFailsInsteadOfDeadlocking) {
  absl::StatusOr<ScopedFileLock> first = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(first.ok());
  absl::StatusOr<ScopedFileLock> again = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(absl::IsFailedPrecondition(again.status())) << again.status();
  EXPECT_THAT(again.status().message(), HasSubstr(path_));
  EXPECT_THAT(again.status().message(), HasSubstr("would deadlock"));

  LockOptions shared;
  shared.mode = LockMode::kShared;
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ScopedFileLock::Acquire(path_, shared).status()));
}

TEST_F(ScopedFileLockTest, RecursiveLockCountsAcquisitions) {
  LockOptions recursive;
  recursive.recursive = true;
  absl::StatusOr<ScopedFileLock> outer =
      ScopedFileLock::Acquire(path_, recursive);
  ASSERT_TRUE(outer.ok());
  absl::StatusOr<ScopedFileLock> inner =
      ScopedFileLock::Acquire(path_, recursive);
  ASSERT_TRUE(inner.ok()) << inner.status();

  ASSERT_TRUE(inner->Release().ok());
  EXPECT_TRUE(inner->Release().ok());  // idempotent: no second count
  EXPECT_FALSE(FreeForOtherProcess(path_));
  ASSERT_TRUE(outer->Release().ok());
  EXPECT_TRUE(FreeForOtherProcess(path_));
}

TEST_F(ScopedFileLockTest, RecursiveSharedCannotBeUpgradedToExclusive) {
  LockOptions shared;
  shared.mode = LockMode::kShared;
  shared.recursive = true;
  absl::StatusOr<ScopedFileLock> reader = ScopedFileLock::Acquire(path_, shared);
  ASSERT_TRUE(reader.ok());
  LockOptions exclusive;
  exclusive.recursive = true;
  absl::StatusOr<ScopedFileLock> writer =
      ScopedFileLock::Acquire(path_, exclusive);
  EXPECT_TRUE(absl::IsFailedPrecondition(writer.status())) << writer.status();
}

// Whether a fresh open file description in this process can take the lock
// now (flock(2) locks of one process exclude each other too).
bool FreeForAnotherDescription(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool free = flock(fd, LOCK_EX | LOCK_NB) == 0;
  close(fd);
  return free;
}

// A recursive acquisition racing the release of the outer one on the
// thread it was moved to: whichever wins, the acquisition that returns OK
// holds the lock. (Finding the entry and counting it were two steps: a
// release in between freed the entry, and the "counted" acquisition held
// nothing.) The race window is a few instructions wide, so this sweeps the
// releaser's start across it many times; it cannot force a loss.
TEST_F(ScopedFileLockTest, RecursiveAcquireRacingAMovedLocksReleaseHoldsIt) {
  LockOptions recursive;
  recursive.recursive = true;
  std::optional<ScopedFileLock> handed;  // guarded by the `turn` protocol
  std::atomic<int> turn{0};  // 1: released may start; 2: it has released
  std::atomic<int> delay{0};
  std::atomic<bool> stop{false};
  std::thread releaser([&] {
    for (;;) {
      while (turn.load() != 1) {
        if (stop) return;
      }
      for (int spin = delay.load(); spin > 0; --spin) {
        std::atomic_signal_fence(std::memory_order_seq_cst);
      }
      handed->Release().IgnoreError();
      handed.reset();
      turn = 2;
    }
  });
  int rounds = 0, unheld = 0, failed = 0;
  const absl::Time give_up = absl::Now() + absl::Seconds(2);
  for (; rounds < 20000 && absl::Now() < give_up; ++rounds) {
    absl::StatusOr<ScopedFileLock> outer =
        ScopedFileLock::Acquire(path_, recursive);
    if (!outer.ok()) {
      ++failed;
      break;
    }
    handed.emplace(*std::move(outer));
    delay = rounds % 4000;
    turn = 1;
    absl::StatusOr<ScopedFileLock> inner =
        ScopedFileLock::Acquire(path_, recursive);
    while (turn.load() != 2) {
    }
    turn = 0;
    if (!inner.ok()) {
      ++failed;
      break;
    }
    if (FreeForAnotherDescription(path_)) {
      ++unheld;
      // Its entry was freed: leak the object rather than release through it.
      static_cast<void>(new ScopedFileLock(*std::move(inner)));
      break;
    }
    if (!inner->Release().ok()) ++failed;
  }
  stop = true;
  releaser.join();
  EXPECT_EQ(unheld, 0) << "after " << rounds << " rounds";
  EXPECT_EQ(failed, 0) << "after " << rounds << " rounds";
}

TEST_F(ScopedFileLockTest, MovedLockStillReleasesOnce) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok());
  ScopedFileLock moved = *std::move(lock);
  EXPECT_FALSE(lock->held());
  EXPECT_TRUE(moved.held());
  EXPECT_FALSE(FreeForOtherProcess(path_));
  ASSERT_TRUE(moved.Release().ok());
  EXPECT_TRUE(FreeForOtherProcess(path_));
}

TEST_F(ScopedFileLockTest, WaiterRetakesLockWhenFileIsRemovedWhileWaiting) {
  absl::StatusOr<ScopedFileLock> holder = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(holder.ok());
  Pipe waiter_inode, stop_waiter;
  Child waiter = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!lock.ok()) return 1;
    struct stat held;
    fstat(lock->fd(), &held);
    const std::string inode = absl::StrCat(held.st_ino, "\n");
    write(waiter_inode.write_fd(), inode.data(), inode.size());
    stop_waiter.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_));
  ASSERT_EQ(unlink(path_.c_str()), 0);
  ASSERT_TRUE(holder->Release().ok());

  std::string reported;
  for (char c; (c = waiter_inode.Receive()) != '\n' && c != '\0';) reported += c;
  ASSERT_FALSE(reported.empty());
  const ino_t new_inode = InodeOf(path_);
  EXPECT_NE(new_inode, 0u);
  // The new file may reuse the old inode number once the waiter closed the
  // old one; what matters is that the waiter holds the file the path names.
  EXPECT_EQ(reported, absl::StrCat(new_inode));
  EXPECT_FALSE(FreeForOtherProcess(path_));  // the waiter excludes others
  stop_waiter.Send();
  EXPECT_EQ(waiter.Wait(), 0);
}

TEST_F(ScopedFileLockTest, WaiterRetakesLockWhenFileIsReplacedWhileWaiting) {
  absl::StatusOr<ScopedFileLock> holder = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(holder.ok());
  Pipe acquired, stop_waiter;
  Child waiter = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!lock.ok()) return 1;
    acquired.Send();
    stop_waiter.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_));
  const std::string replacement = dir_ + "/replacement";
  std::ofstream(replacement) << "";
  ASSERT_EQ(rename(replacement.c_str(), path_.c_str()), 0);
  ASSERT_TRUE(holder->Release().ok());

  ASSERT_EQ(acquired.Receive(), '.');
  EXPECT_FALSE(FreeForOtherProcess(path_));
  stop_waiter.Send();
  EXPECT_EQ(waiter.Wait(), 0);
}

TEST_F(ScopedFileLockTest, SymlinkIsRefusedAndItsTargetUntouched) {
  const std::string target = dir_ + "/precious";
  std::ofstream(target) << "keep me";
  struct stat before;
  ASSERT_EQ(stat(target.c_str(), &before), 0);
  ASSERT_EQ(symlink(target.c_str(), path_.c_str()), 0);

  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr(path_));
  EXPECT_THAT(lock.status().message(), HasSubstr("symbolic link"));

  struct stat after;
  ASSERT_EQ(stat(target.c_str(), &after), 0);
  EXPECT_EQ(after.st_size, before.st_size);
  EXPECT_EQ(after.st_mode, before.st_mode);
  std::string content;
  std::getline(std::ifstream(target), content);
  EXPECT_EQ(content, "keep me");
}

TEST_F(ScopedFileLockTest, DanglingSymlinkIsRefusedAndCreatesNothing) {
  const std::string target = dir_ + "/not-there";
  ASSERT_EQ(symlink(target.c_str(), path_.c_str()), 0);
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  EXPECT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
  EXPECT_NE(access(target.c_str(), F_OK), 0);
}

TEST_F(ScopedFileLockTest, FifoIsRefusedWithoutHanging) {
  ASSERT_EQ(mkfifo(path_.c_str(), 0600), 0);
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr(path_));
  EXPECT_THAT(lock.status().message(), HasSubstr("FIFO"));
}

TEST_F(ScopedFileLockTest, DirectoryIsRefused) {
  ASSERT_EQ(mkdir(path_.c_str(), 0700), 0);
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr("directory"));
}

TEST_F(ScopedFileLockTest, DeviceIsRefused) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire("/dev/null");
  ASSERT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr("/dev/null"));
  EXPECT_THAT(lock.status().message(), HasSubstr("character device"));
}

TEST_F(ScopedFileLockTest, MissingDirectoryIsNotFound) {
  const std::string path = dir_ + "/no/such/dir/x.lock";
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path);
  ASSERT_TRUE(absl::IsNotFound(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(), HasSubstr(path));
}

TEST_F(ScopedFileLockTest, BadArgumentsAreInvalid) {
  EXPECT_TRUE(absl::IsInvalidArgument(ScopedFileLock::Acquire("").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      ScopedFileLock::Acquire(std::string("a\0b", 3)).status()));
  LockOptions negative;
  negative.timeout = absl::Seconds(-1);
  EXPECT_TRUE(
      absl::IsInvalidArgument(ScopedFileLock::Acquire(path_, negative).status()));
  LockOptions bad_mode;
  bad_mode.file_mode = 0100000;
  EXPECT_TRUE(
      absl::IsInvalidArgument(ScopedFileLock::Acquire(path_, bad_mode).status()));
}

// Cross-user cases run in a directory under /tmp that `nobody` can reach.
class CrossUserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  }
  ~CrossUserTest() override { RunShell(absl::StrCat("rm -rf '", dir_, "'")); }

  std::string dir_ = MakeTempDirOtherUsersCanReach();
  std::string path_ = dir_ + "/shared.lock";
};

TEST_F(CrossUserTest, PermissionDeniedNamesThePath) {
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    // Root's 0755 directory: nobody may not create a lock file in it.
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
    if (!absl::IsPermissionDenied(lock.status())) return 1;
    if (lock.status().message().find(path_) == absl::string_view::npos) {
      return 2;
    }
    return 0;
  });
  EXPECT_EQ(nobody.Wait(), 0);
}

TEST_F(CrossUserTest, LockFileCreatedByOneUserIsLockableByAnother) {
  absl::StatusOr<ScopedFileLock> root_lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(root_lock.ok());
  Pipe ready, release;
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    // Refused while root holds it, then granted: the same lock for both.
    if (!absl::IsUnavailable(
            ScopedFileLock::Acquire(path_, TryOnce()).status())) {
      return 1;
    }
    ready.Send();
    release.Receive(absl::Hours(1));
    return ScopedFileLock::Acquire(path_, TryOnce()).ok() ? 0 : 2;
  });
  ASSERT_EQ(ready.Receive(), '.');
  ASSERT_TRUE(root_lock->Release().ok());
  release.Send();
  EXPECT_EQ(nobody.Wait(), 0);
}

TEST_F(ScopedFileLockTest, NewFileGetsTheDocumentedModeDespiteUmask) {
  const mode_t old_umask = umask(077);
  absl::Cleanup restore = [old_umask] { umask(old_umask); };
  ASSERT_TRUE(ScopedFileLock::Acquire(path_).ok());
  struct stat file;
  ASSERT_EQ(stat(path_.c_str(), &file), 0);
  EXPECT_EQ(file.st_mode & 07777, kDefaultLockFileMode);

  LockOptions custom;
  custom.file_mode = 0600;
  const std::string other = dir_ + "/other.lock";
  ASSERT_TRUE(ScopedFileLock::Acquire(other, custom).ok());
  ASSERT_EQ(stat(other.c_str(), &file), 0);
  EXPECT_EQ(file.st_mode & 07777, 0600u);
}

TEST_F(ScopedFileLockTest, ReleaseNeverDeletesOrTruncatesTheLockFile) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok());
  ASSERT_EQ(pwrite(lock->fd(), "record", 6, 0), 6);
  ASSERT_TRUE(lock->Release().ok());
  struct stat file;
  ASSERT_EQ(stat(path_.c_str(), &file), 0);
  EXPECT_EQ(file.st_size, 6);
  ASSERT_TRUE(ScopedFileLock::Acquire(path_).ok());
  ASSERT_EQ(stat(path_.c_str(), &file), 0);
  EXPECT_EQ(file.st_size, 6);
}

TEST_F(ScopedFileLockTest, FlockCommandIsExcludedByOurLock) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok());
  EXPECT_EQ(RunShell(absl::StrCat("flock -n '", path_, "' true")), 1);
  ASSERT_TRUE(lock->Release().ok());
  EXPECT_EQ(RunShell(absl::StrCat("flock -n '", path_, "' true")), 0);
}

TEST_F(ScopedFileLockTest, FlockCommandExcludesUsAndIsNamedAsHolder) {
  Pipe ready, release;
  Child flock_command = Child::Fork([&] {
    dup2(release.read_fd(), STDIN_FILENO);
    dup2(ready.write_fd(), STDOUT_FILENO);
    // flock(1) takes the lock, then runs the shell, which reports and waits.
    execlp("flock", "flock", path_.c_str(), "sh", "-c", "echo .; cat",
           nullptr);
    return 127;
  });
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<ScopedFileLock> lock =
      ScopedFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(lock.status().message(),
              HasSubstr(absl::StrCat("pid ", flock_command.pid(), " (flock)")));
  release.CloseWrite();
  EXPECT_EQ(flock_command.Wait(), 0);
  EXPECT_TRUE(ScopedFileLock::Acquire(path_, TryOnce()).ok());
}

TEST_F(ScopedFileLockTest, CancelWakesABlockedWaiter) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  CancellationToken stop;
  absl::Status result;
  std::thread waiter([&] {
    LockOptions options;
    options.cancellation = stop;
    result = ScopedFileLock::Acquire(path_, options).status();
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_));
  stop.Cancel();
  waiter.join();
  EXPECT_TRUE(absl::IsCancelled(result)) << result;
  EXPECT_THAT(result.message(), HasSubstr(path_));
  release.Send();
}

TEST_F(ScopedFileLockTest, CancelledTokenFailsAContendedAcquireAtOnce) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  CancellationToken stop;
  stop.Cancel();
  LockOptions options;
  options.cancellation = stop;
  EXPECT_TRUE(
      absl::IsCancelled(ScopedFileLock::Acquire(path_, options).status()));
  release.Send();
}

TEST_F(ScopedFileLockTest, TimedWaitWorksInAThreadThatBlocksAllSignals) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  absl::Status result;
  bool mask_restored = false;
  std::thread waiter([&] {
    sigset_t all, before, after;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    pthread_sigmask(SIG_BLOCK, nullptr, &before);
    LockOptions options;
    options.timeout = absl::Milliseconds(100);
    result = ScopedFileLock::Acquire(path_, options).status();
    pthread_sigmask(SIG_BLOCK, nullptr, &after);
    mask_restored = true;
    for (int signal_number = 1; signal_number < SIGRTMAX; ++signal_number) {
      if (sigismember(&before, signal_number) !=
          sigismember(&after, signal_number)) {
        mask_restored = false;
      }
    }
  });
  waiter.join();
  EXPECT_TRUE(absl::IsDeadlineExceeded(result)) << result;
  EXPECT_TRUE(mask_restored);
  release.Send();
}

TEST_F(ScopedFileLockTest, TimedWaitLeavesNoSignalBehindAndKeepsHandlers) {
  static std::atomic<int> usr1_count{0};
  struct sigaction handler {};
  handler.sa_handler = [](int) { ++usr1_count; };
  ASSERT_EQ(sigaction(SIGUSR1, &handler, nullptr), 0);

  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  LockOptions options;
  options.timeout = absl::Milliseconds(50);
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      ScopedFileLock::Acquire(path_, options).status()));

  sigset_t pending;
  sigpending(&pending);
  for (int signal_number = SIGRTMIN; signal_number <= SIGRTMAX;
       ++signal_number) {
    EXPECT_FALSE(sigismember(&pending, signal_number)) << signal_number;
  }
  // A read that would block must not be interrupted by a late timer signal.
  Pipe idle;
  EXPECT_EQ(idle.Receive(absl::Milliseconds(30)), '\0');
  struct sigaction current {};
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &current), 0);
  EXPECT_EQ(current.sa_handler, handler.sa_handler);
  raise(SIGUSR1);
  EXPECT_EQ(usr1_count, 1);
  release.Send();
}

}  // namespace
}  // namespace onlyone
