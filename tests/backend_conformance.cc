#include "tests/backend_conformance.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "tests/test_util.h"

namespace onlyone::testing {
namespace {

using ::testing::HasSubstr;

// How long a woken waiter may take to return: generous for a loaded machine,
// far below "never".
constexpr absl::Duration kPrompt = absl::Seconds(2);

AcquireOptions TryOnce(LockMode mode = LockMode::kExclusive) {
  AcquireOptions options;
  options.mode = mode;
  options.timeout = absl::ZeroDuration();
  return options;
}

// What a try from another process finds: 0 acquired, 1 Unavailable, 2 any
// other status.
int TryFromAnotherProcess(const BackendUnderTest& backend,
                          const std::string& resource,
                          LockMode mode = LockMode::kExclusive) {
  Child child = Child::Fork([&] {
    absl::StatusOr<std::unique_ptr<HeldLock>> lock =
        backend.make()->Acquire(resource, TryOnce(mode));
    if (lock.ok()) return 0;
    return absl::IsUnavailable(lock.status()) ? 1 : 2;
  });
  return child.Wait();
}

// A child that holds `resource` from when it sends on `ready` until the test
// sends on `release`; exits 0 after a clean release.
Child HoldInChild(const BackendUnderTest& backend, const std::string& resource,
                  Pipe& ready, Pipe& release,
                  LockMode mode = LockMode::kExclusive) {
  return Child::Fork([&, mode] {
    AcquireOptions options;
    options.mode = mode;
    absl::StatusOr<std::unique_ptr<HeldLock>> lock =
        backend.make()->Acquire(resource, options);
    if (!lock.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return (*lock)->Release().ok() ? 0 : 3;
  });
}

TEST_P(BackendConformanceTest, TryingAHeldLockIsUnavailableAndNamesIt) {
  const std::string resource = Resource("held");
  Pipe ready, release;
  Child holder = HoldInChild(GetParam(), resource, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      Backend()->Acquire(resource, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr(resource));
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  lock = Backend()->Acquire(resource, TryOnce());
  EXPECT_TRUE(lock.ok()) << lock.status();
}

TEST_P(BackendConformanceTest, ATimedWaitEndsInDeadlineExceededNeverSooner) {
  const std::string resource = Resource("timed");
  Pipe ready, release;
  Child holder = HoldInChild(GetParam(), resource, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  AcquireOptions options;
  options.timeout = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      Backend()->Acquire(resource, options);
  const absl::Duration waited = absl::Now() - start;
  ASSERT_TRUE(absl::IsDeadlineExceeded(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr(resource));
  EXPECT_GE(waited, absl::Milliseconds(200));
  EXPECT_LT(waited, absl::Milliseconds(200) + kPrompt);
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_P(BackendConformanceTest, ABlockedAcquireReturnsOnlyOnceTheHolderLetsGo) {
  const std::string resource = Resource("blocking");
  Pipe ready, release;
  Child holder = HoldInChild(GetParam(), resource, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  std::atomic<bool> released{false};
  std::atomic<bool> acquired_before_release{false};
  absl::Status status;
  std::thread waiter([&] {
    absl::StatusOr<std::unique_ptr<HeldLock>> lock =
        Backend()->Acquire(resource, AcquireOptions());
    acquired_before_release = !released;
    status = lock.status();
  });
  released = true;
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  waiter.join();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(acquired_before_release);
}

TEST_P(BackendConformanceTest, CancelEndsABlockedAcquirePromptly) {
  const std::string resource = Resource("cancelled");
  Pipe ready, release;
  Child holder = HoldInChild(GetParam(), resource, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  CancellationToken stop;
  absl::Status status;
  absl::Time returned;
  std::thread waiter([&] {
    AcquireOptions options;
    options.cancellation = stop;
    status = Backend()->Acquire(resource, options).status();
    returned = absl::Now();
  });
  const absl::Time cancelled = absl::Now();
  stop.Cancel();
  waiter.join();
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(resource));
  EXPECT_LT(returned - cancelled, kPrompt);
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_P(BackendConformanceTest, ProcessesExcludeEachOtherExactly) {
  const std::string resource = Resource("counter");
  const std::string counter = dir_ + "/count";
  SharedCounters* shared = MapSharedCounters();
  ASSERT_NE(shared, nullptr);
  constexpr int kProcesses = 4;
  constexpr int kSections = 250;
  std::vector<Child> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(Child::Fork([&] {
      std::unique_ptr<LockBackend> backend = GetParam().make();
      for (int section = 0; section < kSections; ++section) {
        absl::StatusOr<std::unique_ptr<HeldLock>> lock =
            backend->Acquire(resource, AcquireOptions());
        if (!lock.ok()) return 2;
        shared->Enter();
        // Read, add one, write back: lost updates if two were inside.
        const int fd = open(counter.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return 3;
        int value = 0;
        if (pread(fd, &value, sizeof value, 0) < 0) return 4;
        ++value;
        if (pwrite(fd, &value, sizeof value, 0) != sizeof value) return 5;
        close(fd);
        shared->Leave();
        if (!(*lock)->Release().ok()) return 6;
      }
      return 0;
    }));
  }
  for (Child& worker : workers) EXPECT_EQ(worker.Wait(), 0);
  EXPECT_EQ(shared->most_inside.load(), 1);
  int value = 0;
  const int fd = open(counter.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pread(fd, &value, sizeof value, 0),
            static_cast<ssize_t>(sizeof value));
  close(fd);
  EXPECT_EQ(value, kProcesses * kSections);
  munmap(shared, sizeof(SharedCounters));
}

TEST_P(BackendConformanceTest, AKilledHolderFreesTheLock) {
  const std::string resource = Resource("killed");
  Pipe ready, release;
  Child holder = HoldInChild(GetParam(), resource, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);
  const absl::Time killed = absl::Now();
  AcquireOptions options;
  options.timeout = GetParam().freed_after_crash_within + kPrompt;
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      Backend()->Acquire(resource, options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_LT(absl::Now() - killed, GetParam().freed_after_crash_within + kPrompt);
}

TEST_P(BackendConformanceTest, AForkChildNeverReleasesTheParentsLock) {
  const std::string resource = Resource("forked");
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      Backend()->Acquire(resource, AcquireOptions());
  ASSERT_TRUE(lock.ok()) << lock.status();
  Child child = Child::Fork([&] {
    if ((*lock)->held()) return 1;
    if (!(*lock)->Release().ok()) return 2;
    lock->reset();
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
  EXPECT_TRUE((*lock)->held());
  EXPECT_EQ(TryFromAnotherProcess(GetParam(), resource), 1);
  ASSERT_TRUE((*lock)->Release().ok());
  EXPECT_EQ(TryFromAnotherProcess(GetParam(), resource), 0);
}

TEST_P(BackendConformanceTest, ReleaseIsIdempotentAndDestructionReleases) {
  const std::string resource = Resource("released");
  {
    absl::StatusOr<std::unique_ptr<HeldLock>> lock =
        Backend()->Acquire(resource, AcquireOptions());
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_TRUE((*lock)->held());
    EXPECT_EQ((*lock)->name(), resource);
    EXPECT_EQ(TryFromAnotherProcess(GetParam(), resource), 1);
    EXPECT_TRUE((*lock)->Release().ok());
    EXPECT_FALSE((*lock)->held());
    EXPECT_TRUE((*lock)->Release().ok()) << "a second Release() is OK";
    EXPECT_EQ(TryFromAnotherProcess(GetParam(), resource), 0);
  }
  {
    absl::StatusOr<std::unique_ptr<HeldLock>> lock =
        Backend()->Acquire(resource, AcquireOptions());
    ASSERT_TRUE(lock.ok()) << lock.status();
  }  // destroyed without Release()
  EXPECT_EQ(TryFromAnotherProcess(GetParam(), resource), 0);
}

TEST_P(BackendConformanceTest, SharedHoldersOrInvalidArgument) {
  const std::string resource = Resource("shared");
  if (!GetParam().shared_holders) {
    EXPECT_TRUE(absl::IsInvalidArgument(
        Backend()->Acquire(resource, TryOnce(LockMode::kShared)).status()));
    return;
  }
  Pipe ready, release;
  Child reader =
      HoldInChild(GetParam(), resource, ready, release, LockMode::kShared);
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<std::unique_ptr<HeldLock>> shared =
      Backend()->Acquire(resource, TryOnce(LockMode::kShared));
  EXPECT_TRUE(shared.ok()) << shared.status();
  EXPECT_EQ(TryFromAnotherProcess(GetParam(), resource), 1);
  release.Send();
  EXPECT_EQ(reader.Wait(), 0);
}

TEST_P(BackendConformanceTest, FencingTokensIncreaseAcrossHoldersOrAreZero) {
  const std::string resource = Resource("fenced");
  uint64_t previous = 0;
  for (int round = 0; round < 4; ++round) {
    // Alternately here and in another process.
    Pipe token;
    uint64_t current = 0;
    if (round % 2 == 0) {
      absl::StatusOr<std::unique_ptr<HeldLock>> lock =
          Backend()->Acquire(resource, AcquireOptions());
      ASSERT_TRUE(lock.ok()) << lock.status();
      current = (*lock)->fencing_token();
    } else {
      Child child = Child::Fork([&] {
        absl::StatusOr<std::unique_ptr<HeldLock>> lock =
            GetParam().make()->Acquire(resource, AcquireOptions());
        if (!lock.ok()) return 2;
        const uint64_t value = (*lock)->fencing_token();
        return write(token.write_fd(), &value, sizeof value) == sizeof value
                   ? 0
                   : 3;
      });
      ASSERT_EQ(child.Wait(), 0);
      ASSERT_EQ(read(token.read_fd(), &current, sizeof current),
                static_cast<ssize_t>(sizeof current));
    }
    if (GetParam().fencing_tokens) {
      EXPECT_GT(current, previous) << "round " << round;
    } else {
      EXPECT_EQ(current, 0u);
    }
    previous = current;
  }
}

TEST_P(BackendConformanceTest, AHeldLockIsNotLost) {
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      Backend()->Acquire(Resource("kept"), AcquireOptions());
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_FALSE((*lock)->lost().IsCancelled());
  EXPECT_TRUE((*lock)->held());
}

}  // namespace

std::string BackendName(
    const ::testing::TestParamInfo<BackendUnderTest>& info) {
  return info.param.name;
}

BackendConformanceTest::BackendConformanceTest() : dir_(MakeTempDir()) {}

}  // namespace onlyone::testing
