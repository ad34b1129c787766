// ScopedSemaphore with real processes: never more than N inside, a killed
// holder's permit freed at once, a blocked waiter woken promptly and using
// no CPU meanwhile, timed waits honoured, fork and exec as the core lock,
// portalocker's BoundedSemaphore both ways, disagreeing counts, holders in
// the refusal, bad arguments.

#include "onlyone/scoped_file_lock.h"
#include "onlyone/scoped_semaphore.h"

#include <dirent.h>
#include <sched.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::BlocksProcessSignals;
using ::onlyone::testing::Child;
using ::onlyone::testing::ForgetTestRunnerFiles;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::MapSharedCounters;
using ::onlyone::testing::OtherThreadsBlockedSignals;
using ::onlyone::testing::SharedCounters;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::ReadFileOrEmpty;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::testing::HasSubstr;

constexpr absl::Duration kPrompt = absl::Seconds(2);
constexpr char kPython[] = "/usr/bin/python3";

SemaphoreOptions TryOnce() {
  SemaphoreOptions options;
  options.timeout = absl::ZeroDuration();
  return options;
}

// A child named `name` (its /proc comm) that holds a permit from when it
// sends its slot on `ready` until the test sends on `release`.
Child HoldInChild(const std::string& path, int slots, Pipe& ready,
                  Pipe& release, const char* name = "sem-holder") {
  return Child::Fork([&, name] {
    prctl(PR_SET_NAME, name);
    absl::StatusOr<ScopedSemaphore> permit =
        ScopedSemaphore::Acquire(path, slots);
    if (!permit.ok()) return 2;
    ready.Send(static_cast<char>('0' + permit->slot()));
    release.Receive(absl::Hours(1));
    return permit->Release().ok() ? 0 : 3;
  });
}

// Two children that hold both permits of the 2-slot semaphore at `path`
// until the test lets them go.
class BothSlotsHeld {
 public:
  explicit BothSlotsHeld(const std::string& path)
      : first_(HoldInChild(path, 2, ready_[0], release_[0])),
        first_ready_(ready_[0].Receive() != '\0'),
        second_(HoldInChild(path, 2, ready_[1], release_[1])),
        second_ready_(ready_[1].Receive() != '\0') {}

  // Whether both hold their permit.
  bool ready() const { return first_ready_ && second_ready_; }
  pid_t first_pid() const { return first_.pid(); }
  // Lets the first one release its permit and exit.
  void ReleaseFirst() {
    if (!first_released_) release_[0].Send();
    first_released_ = true;
  }
  // Lets both go; whether both released their permit and exited 0.
  bool ReleaseBoth() {
    ReleaseFirst();
    release_[1].Send();
    const bool first_ok = first_.Wait() == 0;
    return second_.Wait() == 0 && first_ok;
  }

 private:
  Pipe ready_[2], release_[2];
  Child first_;
  bool first_ready_;
  Child second_;
  bool second_ready_;
  bool first_released_ = false;
};

// 0 acquired, 1 Unavailable, 2 anything else; from another process.
int TryFromAnotherProcess(const std::string& path, int slots) {
  Child child = Child::Fork([&] {
    absl::StatusOr<ScopedSemaphore> permit =
        ScopedSemaphore::Acquire(path, slots, TryOnce());
    if (permit.ok()) return 0;
    return absl::IsUnavailable(permit.status()) ? 1 : 2;
  });
  return child.Wait();
}

// CPU ticks (utime + stime of all threads) of process `pid`.
int64_t CpuTicks(pid_t pid) {
  const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  const size_t end_of_name = stat.rfind(')');
  if (end_of_name == std::string::npos) return -1;
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(end_of_name + 2), ' ');
  int64_t user, system;
  // Fields 14 and 15 of stat(5), counted from field 3 here.
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &user) ||
      !absl::SimpleAtoi(fields[12], &system)) {
    return -1;
  }
  return user + system;
}

// Voluntary plus involuntary context switches of every thread of `pid`.
int64_t ContextSwitches(pid_t pid) {
  int64_t total = 0;
  const std::string tasks = absl::StrCat("/proc/", pid, "/task");
  DIR* dir = opendir(tasks.c_str());
  if (dir == nullptr) return -1;
  while (struct dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    const std::string status =
        ReadFileOrEmpty(absl::StrCat(tasks, "/", entry->d_name, "/status"));
    for (absl::string_view line : absl::StrSplit(status, '\n')) {
      if (!absl::ConsumePrefix(&line, "voluntary_ctxt_switches:") &&
          !absl::ConsumePrefix(&line, "nonvoluntary_ctxt_switches:")) {
        continue;
      }
      int64_t count;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &count)) {
        total += count;
      }
    }
  }
  closedir(dir);
  return total;
}

class ScopedSemaphoreTest : public ::testing::Test {
 protected:
  const std::string dir_ = MakeTempDir();
  const std::string path_ = dir_ + "/jobs";
};

TEST_F(ScopedSemaphoreTest, SlotFilesFollowPortalockersNaming) {
  EXPECT_EQ(ScopedSemaphore::SlotPath("/d/jobs", 0), "/d/jobs.00.lock");
  EXPECT_EQ(ScopedSemaphore::SlotPath("/d/jobs", 7), "/d/jobs.07.lock");
  EXPECT_EQ(ScopedSemaphore::SlotPath("/d/jobs", 12), "/d/jobs.12.lock");
  absl::StatusOr<ScopedSemaphore> permit = ScopedSemaphore::Acquire(path_, 3);
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(permit->slot(), 0);
  EXPECT_EQ(access((path_ + ".00.lock").c_str(), F_OK), 0);
  EXPECT_EQ(ReadFileOrEmpty(path_ + ".slots"), "3\n");
}

TEST_F(ScopedSemaphoreTest, NHoldersTakeDistinctSlotsAndTheNextIsRefused) {
  Pipe ready[3], release[3];
  const char* names[] = {"sem-holder-a", "sem-holder-b", "sem-holder-c"};
  std::vector<Child> holders;
  std::vector<char> slots_in_order;
  for (int i = 0; i < 3; ++i) {
    holders.push_back(HoldInChild(path_, 3, ready[i], release[i], names[i]));
    slots_in_order.push_back(ready[i].Receive());
  }
  std::vector<char> slots = slots_in_order;
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(std::string(slots.begin(), slots.end()), "012");

  absl::StatusOr<ScopedSemaphore> refused =
      ScopedSemaphore::Acquire(path_, 3, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  const std::string message(refused.status().message());
  EXPECT_THAT(message, HasSubstr(path_));
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(message, HasSubstr(absl::StrCat("pid ", holders[i].pid(), " (",
                                                names[i], ") started ")));
  }
  const std::vector<SemaphoreSlotHolder> visible =
      ScopedSemaphore::Holders(path_, 3);
  ASSERT_EQ(visible.size(), 3u);
  for (const SemaphoreSlotHolder& holder : visible) {
    ASSERT_TRUE(holder.started.has_value());
    EXPECT_LT(absl::Now() - *holder.started, absl::Minutes(1));
    EXPECT_EQ(holder.file, ScopedSemaphore::SlotPath(path_, holder.slot));
  }

  release[1].Send();
  EXPECT_EQ(holders[1].Wait(), 0);
  absl::StatusOr<ScopedSemaphore> freed =
      ScopedSemaphore::Acquire(path_, 3, TryOnce());
  ASSERT_TRUE(freed.ok()) << freed.status();
  EXPECT_EQ(freed->slot(), slots_in_order[1] - '0');
  release[0].Send();
  release[2].Send();
}

TEST_F(ScopedSemaphoreTest, OneThreadMayHoldSeveralPermits) {
  absl::StatusOr<ScopedSemaphore> first = ScopedSemaphore::Acquire(path_, 2);
  absl::StatusOr<ScopedSemaphore> second = ScopedSemaphore::Acquire(path_, 2);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(first->slot(), second->slot());
  absl::StatusOr<ScopedSemaphore> third =
      ScopedSemaphore::Acquire(path_, 2, TryOnce());
  EXPECT_TRUE(absl::IsUnavailable(third.status())) << third.status();
  EXPECT_EQ(TryFromAnotherProcess(path_, 2), 1);
}

TEST_F(ScopedSemaphoreTest, NeverMoreThanNInsideUnderContention) {
  SharedCounters* shared = MapSharedCounters();
  ASSERT_NE(shared, nullptr);
  constexpr int kSlots = 3, kProcesses = 7, kSections = 150;
  std::vector<Child> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(Child::Fork([&] {
      for (int section = 0; section < kSections; ++section) {
        absl::StatusOr<ScopedSemaphore> permit =
            ScopedSemaphore::Acquire(path_, kSlots);
        if (!permit.ok()) return 2;
        shared->Enter();
        // The first section stays until a second process is inside too, so
        // that a semaphore admitting one at a time fails below however the
        // scheduler runs the processes (bounded, for such a semaphore).
        const absl::Time overlap_deadline = absl::Now() + absl::Seconds(10);
        while (section == 0 && shared->most_inside.load() < 2 &&
               absl::Now() < overlap_deadline) {
          sched_yield();
        }
        // Stay inside a little so that later sections overlap.
        for (int spin = 0; spin < 20000; ++spin) {
          std::atomic_signal_fence(std::memory_order_seq_cst);
        }
        shared->Leave();
        if (!permit->Release().ok()) return 3;
      }
      return 0;
    }));
  }
  for (Child& worker : workers) EXPECT_EQ(worker.Wait(), 0);
  EXPECT_LE(shared->most_inside.load(), kSlots);
  EXPECT_GE(shared->most_inside.load(), 2) << "never more than one inside: "
                                               "not a counting semaphore";
  munmap(shared, sizeof(SharedCounters));
}

TEST_F(ScopedSemaphoreTest, AKilledHolderWakesABlockedWaiterAtOnce) {
  Pipe ready[2], release[2];
  Child first = HoldInChild(path_, 2, ready[0], release[0]);
  const char killed_slot = ready[0].Receive();
  Child second = HoldInChild(path_, 2, ready[1], release[1]);
  ASSERT_NE(ready[1].Receive(), '\0');
  absl::StatusOr<ScopedSemaphore> permit = absl::UnknownError("not yet");
  absl::Time returned;
  std::thread waiter([&] {
    permit = ScopedSemaphore::Acquire(path_, 2);
    returned = absl::Now();
  });
  // Blocked in the kernel on both slots.
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".00.lock"));
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".01.lock"));
  const absl::Time killed = absl::Now();
  first.Kill(SIGKILL);
  waiter.join();
  EXPECT_EQ(first.Wait(), 128 + SIGKILL);
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(permit->slot(), killed_slot - '0');
  EXPECT_LT(returned - killed, kPrompt);
  release[1].Send();
  EXPECT_EQ(second.Wait(), 0);
}

// The waiter runs in its own process so that its CPU time and context
// switches are its own; it reports how long after the release it returned.
TEST_F(ScopedSemaphoreTest, ABlockedWaiterUsesNoCpuAndWakesPromptly) {
  BothSlotsHeld held(path_);
  ASSERT_TRUE(held.ready());
  Pipe woken;
  Child waiter = Child::Fork([&] {
    SemaphoreOptions options;
    options.timeout = absl::Seconds(60);  // the timed path, timer included
    absl::StatusOr<ScopedSemaphore> permit =
        ScopedSemaphore::Acquire(path_, 2, options);
    const int64_t now = absl::ToUnixMicros(absl::Now());
    if (!permit.ok()) return 2;
    return write(woken.write_fd(), &now, sizeof now) == sizeof now ? 0 : 3;
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".00.lock"));
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".01.lock"));
  const int64_t cpu_before = CpuTicks(waiter.pid());
  const int64_t switches_before = ContextSwitches(waiter.pid());
  // The measured interval, not a synchronisation.
  absl::SleepFor(absl::Seconds(1));
  const int64_t cpu_after = CpuTicks(waiter.pid());
  const int64_t switches_after = ContextSwitches(waiter.pid());
  ASSERT_GE(cpu_before, 0);
  ASSERT_GE(switches_before, 0);
  EXPECT_LE(cpu_after - cpu_before, 1) << "CPU ticks while blocked";
  // ThreadSanitizer's runtime thread in the waiter wakes up on its own.
#if !defined(__SANITIZE_THREAD__)
  EXPECT_LE(switches_after - switches_before, 2)
      << "context switches while blocked: the waiter polls";
#endif

  const int64_t released = absl::ToUnixMicros(absl::Now());
  held.ReleaseFirst();
  int64_t returned = 0;
  ASSERT_EQ(read(woken.read_fd(), &returned, sizeof returned),
            static_cast<ssize_t>(sizeof returned));
  EXPECT_EQ(waiter.Wait(), 0);
  // portalocker's poll interval is 250 ms; a woken waiter takes far less.
  EXPECT_LT(returned - released, 100000) << "microseconds to wake";
  EXPECT_TRUE(held.ReleaseBoth());
}

TEST_F(ScopedSemaphoreTest, TimedWaitsEndInDeadlineExceededNeverSooner) {
  BothSlotsHeld held(path_);
  ASSERT_TRUE(held.ready());
  // Two waiters: one races for the slots, the other queues on the gate.
  const absl::Duration timeouts[] = {absl::Milliseconds(300),
                                     absl::Milliseconds(500)};
  absl::Status statuses[2];
  absl::Duration waited[2];
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([&, i] {
      SemaphoreOptions options;
      options.timeout = timeouts[i];
      const absl::Time start = absl::Now();
      statuses[i] = ScopedSemaphore::Acquire(path_, 2, options).status();
      waited[i] = absl::Now() - start;
    });
  }
  for (std::thread& waiter : waiters) waiter.join();
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(absl::IsDeadlineExceeded(statuses[i])) << statuses[i];
    EXPECT_THAT(std::string(statuses[i].message()), HasSubstr(path_));
    EXPECT_THAT(std::string(statuses[i].message()),
                HasSubstr(absl::StrCat("pid ", held.first_pid())));
    EXPECT_GE(waited[i], timeouts[i]);
    EXPECT_LT(waited[i], timeouts[i] + kPrompt);
  }
  EXPECT_TRUE(held.ReleaseBoth());
}

// A timeout spent before the wait on the gate (or, with one slot, on the
// slot) began turns that wait into a try; its refusal is the timeout's
// DeadlineExceeded, not a try's Unavailable.
TEST_F(ScopedSemaphoreTest, ATimeoutSpentBeforeTheGateIsDeadlineExceeded) {
  BothSlotsHeld held(path_);
  ASSERT_TRUE(held.ready());
  const std::string one_slot = dir_ + "/single";
  Pipe single_ready, single_release;
  Child single = HoldInChild(one_slot, 1, single_ready, single_release);
  ASSERT_NE(single_ready.Receive(), '\0');
  // The gate is held by this process, but not by the thread that waits.
  absl::StatusOr<ScopedFileLock> gate =
      ScopedFileLock::Acquire(path_ + ".gate.lock");
  ASSERT_TRUE(gate.ok()) << gate.status();
  SemaphoreOptions options;
  options.timeout = absl::Nanoseconds(1);
  absl::Status statuses[2];
  std::thread waiter([&] {
    statuses[0] = ScopedSemaphore::Acquire(path_, 2, options).status();
    statuses[1] = ScopedSemaphore::Acquire(one_slot, 1, options).status();
  });
  waiter.join();
  for (const absl::Status& status : statuses) {
    EXPECT_TRUE(absl::IsDeadlineExceeded(status)) << status;
  }
  EXPECT_THAT(std::string(statuses[0].message()), HasSubstr(path_));
  EXPECT_THAT(std::string(statuses[1].message()), HasSubstr(one_slot));
  EXPECT_TRUE(held.ReleaseBoth());
  single_release.Send();
  EXPECT_EQ(single.Wait(), 0);
}

TEST_F(ScopedSemaphoreTest, CancelEndsAWaitOnTheSlotsAndOnTheGate) {
  BothSlotsHeld held(path_);
  ASSERT_TRUE(held.ready());
  CancellationToken stop;
  absl::Status statuses[2];
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i) {
    waiters.emplace_back([&, i] {
      SemaphoreOptions options;
      options.cancellation = stop;
      statuses[i] = ScopedSemaphore::Acquire(path_, 2, options).status();
    });
  }
  // The racer holds the gate (so it exists) once it blocks on the slots.
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".01.lock"));
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".gate.lock"));
  const absl::Time cancelled = absl::Now();
  stop.Cancel();
  for (std::thread& waiter : waiters) waiter.join();
  EXPECT_LT(absl::Now() - cancelled, kPrompt);
  for (const absl::Status& status : statuses) {
    EXPECT_TRUE(absl::IsCancelled(status)) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(path_));
  }
  EXPECT_TRUE(held.ReleaseBoth());
}

// The threads that wait on the slots take no process signal: a SIGCHLD one
// of them took would be discarded (`onlyone run --slots` would miss its
// command's exit), a SIGTERM would end the process unforwarded.
TEST_F(ScopedSemaphoreTest, TheSlotThreadsTakeNoProcessSignals) {
  BothSlotsHeld held(path_);
  ASSERT_TRUE(held.ready());
  CancellationToken stop;
  std::atomic<pid_t> caller{0};
  std::thread waiter([&] {
    caller = gettid();
    SemaphoreOptions options;
    options.cancellation = stop;
    EXPECT_TRUE(
        absl::IsCancelled(ScopedSemaphore::Acquire(path_, 2, options).status()));
  });
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".00.lock"));
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".01.lock"));
  int slot_threads = 0;
  for (const auto& [tid, mask] : OtherThreadsBlockedSignals()) {
    if (tid == caller) continue;  // the application's thread
    ++slot_threads;
    EXPECT_TRUE(BlocksProcessSignals(mask))
        << "thread " << tid << " blocks " << absl::StrFormat("%016x", mask);
  }
  EXPECT_GE(slot_threads, 2);
  stop.Cancel();
  waiter.join();
  EXPECT_TRUE(held.ReleaseBoth());
}

TEST_F(ScopedSemaphoreTest, AForkChildsCopyIsNotHeldAndFreesNothing) {
  absl::StatusOr<ScopedSemaphore> permit = ScopedSemaphore::Acquire(path_, 1);
  ASSERT_TRUE(permit.ok()) << permit.status();
  Child child = Child::Fork([&] {
    if (permit->held()) return 1;
    if (!permit->Release().ok()) return 2;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
  EXPECT_TRUE(permit->held());
  EXPECT_EQ(TryFromAnotherProcess(path_, 1), 1);
  ASSERT_TRUE(permit->Release().ok());
  EXPECT_EQ(permit->slot(), -1);
  EXPECT_TRUE(permit->Release().ok());
  EXPECT_EQ(TryFromAnotherProcess(path_, 1), 0);
}

// Run by re-executing this test binary: adopts the permit of
// ONLYONE_TEST_SEMAPHORE and reports its slot on ONLYONE_TEST_REPORT_FD.
TEST(ExecChild, AdoptPermit) {
  const char* path = std::getenv("ONLYONE_TEST_SEMAPHORE");
  const char* report = std::getenv("ONLYONE_TEST_REPORT_FD");
  if (path == nullptr || report == nullptr) {
    GTEST_SKIP() << "only run re-executed by APermitIsInheritedAcrossExec";
  }
  absl::StatusOr<ScopedSemaphore> permit =
      ScopedSemaphore::AdoptInherited(path, 2);
  const char slot =
      permit.ok() && permit->held() ? static_cast<char>('0' + permit->slot())
                                    : 'n';
  ASSERT_EQ(write(atoi(report), &slot, 1), 1);
  // Hold it until told to go (standard input closes).
  char byte;
  while (read(0, &byte, 1) > 0) {
  }
  ASSERT_TRUE(permit.ok()) << permit.status();
}

// The exec'd program holds the permit for its whole life, even after the
// process that took it is gone.
TEST_F(ScopedSemaphoreTest, APermitIsInheritedAcrossExec) {
  Pipe report, stdin_of_program, taken;
  Child taker = Child::Fork([&] {
    SemaphoreOptions options;
    options.inheritable = true;
    absl::StatusOr<ScopedSemaphore> permit =
        ScopedSemaphore::Acquire(path_, 2, options);
    if (!permit.ok()) return 2;
    const std::string inherited = permit->slot_lock()->InheritedLocksEnvValue();
    if (inherited.empty()) return 3;
    taken.Send(static_cast<char>('0' + permit->slot()));
    Child program = Child::Fork([&] {
      ForgetTestRunnerFiles();
      dup2(stdin_of_program.read_fd(), 0);
      fcntl(report.write_fd(), F_SETFD, 0);
      setenv(kInheritedLocksEnvVar, inherited.c_str(), 1);
      setenv("ONLYONE_TEST_SEMAPHORE", path_.c_str(), 1);
      setenv("ONLYONE_TEST_REPORT_FD", absl::StrCat(report.write_fd()).c_str(),
             1);
      execl("/proc/self/exe", "scoped_semaphore_test",
            "--gtest_filter=ExecChild.AdoptPermit", nullptr);
      return 127;
    });
    program.Detach();
    return 0;  // exits without releasing: the program keeps the permit
  });
  const char slot = taken.Receive();
  EXPECT_EQ(taker.Wait(), 0);
  EXPECT_EQ(report.Receive(), slot);
  // One of two slots is still held by the program; the other is free.
  absl::StatusOr<ScopedSemaphore> other =
      ScopedSemaphore::Acquire(path_, 2, TryOnce());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->slot(), slot - '0');
  EXPECT_EQ(TryFromAnotherProcess(path_, 2), 1);
  stdin_of_program.CloseWrite();  // the program exits
  report.CloseWrite();
  EXPECT_EQ(report.ReadAll(), "");  // every holder of the write end is gone
  SemaphoreOptions wait;
  wait.timeout = kPrompt;
  EXPECT_TRUE(ScopedSemaphore::Acquire(path_, 2, wait).ok());
}

TEST_F(ScopedSemaphoreTest, DisagreeingSlotCountsAreRefusedNamingBoth) {
  absl::StatusOr<ScopedSemaphore> permit = ScopedSemaphore::Acquire(path_, 4);
  ASSERT_TRUE(permit.ok()) << permit.status();
  Child other = Child::Fork([&] {
    absl::StatusOr<ScopedSemaphore> six = ScopedSemaphore::Acquire(path_, 6);
    if (!absl::IsFailedPrecondition(six.status())) return 1;
    const std::string message(six.status().message());
    if (message.find(path_ + ".slots") == std::string::npos ||
        message.find("6") == std::string::npos ||
        message.find("says 4") == std::string::npos) {
      return 2;
    }
    return ScopedSemaphore::Acquire(path_, 4).ok() ? 0 : 3;
  });
  EXPECT_EQ(other.Wait(), 0);
  // The same thread that already checked 4 is refused 6 too.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      ScopedSemaphore::Acquire(path_, 6).status()));
  EXPECT_EQ(ReadFileOrEmpty(path_ + ".slots"), "4\n");
}

TEST_F(ScopedSemaphoreTest, BadArgumentsAreInvalidOrNotFoundNamingThePath) {
  for (int slots : {0, -1, kMaxSemaphoreSlots + 1}) {
    absl::Status status = ScopedSemaphore::Acquire(path_, slots).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << slots << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(path_));
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ScopedSemaphore::Acquire("", 2).status()));
  for (const std::string& bad : {dir_ + "/", dir_ + "/.", dir_ + "/.."}) {
    absl::Status status = ScopedSemaphore::Acquire(bad, 2).status();
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << bad << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(bad));
  }
  EXPECT_TRUE(absl::IsInvalidArgument(
      ScopedSemaphore::Acquire(std::string("a\0b", 3), 2).status()));
  SemaphoreOptions negative;
  negative.timeout = -absl::Seconds(1);
  EXPECT_TRUE(absl::IsInvalidArgument(
      ScopedSemaphore::Acquire(path_, 2, negative).status()));

  const std::string missing = dir_ + "/no/such/dir/jobs";
  absl::Status status = ScopedSemaphore::Acquire(missing, 2).status();
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(missing));

  // A slot file that is a directory.
  ASSERT_EQ(mkdir((dir_ + "/odd.00.lock").c_str(), 0755), 0);
  status = ScopedSemaphore::Acquire(dir_ + "/odd", 1).status();
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir_ + "/odd"));
}

// --- portalocker's BoundedSemaphore (Debian's python3-portalocker) ---

// argv: N, NAME, DIRECTORY, timeout. Writes the slot file it got to fd 3
// (portalocker 2.2.1 prints debug lines on standard output), then holds it
// until standard input closes; exits 1 when every slot was taken.
constexpr char kPortalockerHold[] = R"(
import os, sys, portalocker
s = portalocker.BoundedSemaphore(int(sys.argv[1]), name=sys.argv[2],
                                 directory=sys.argv[3],
                                 timeout=float(sys.argv[4]))
try:
    lock = s.acquire()
except portalocker.exceptions.AlreadyLocked:
    sys.exit(1)
os.write(3, (os.path.basename(s.lock.filename) + "\n").encode())
sys.stdin.read()
s.release()
)";

class PortalockerTest : public ScopedSemaphoreTest {
 protected:
  void SetUp() override {
    ASSERT_EQ(access(kPython, X_OK), 0) << kPython << " missing";
  }

  // A portalocker process; what it writes to fd 3 comes out of `got`, and
  // closing `hold`'s write end makes it release and exit.
  Child Portalocker(int slots, double timeout, Pipe& got, Pipe& hold) {
    return Child::Fork([&, slots, timeout] {
      ForgetTestRunnerFiles();
      dup2(hold.read_fd(), 0);
      dup2(got.write_fd(), 3);
      const int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
      dup2(null, 1);
      const std::string count = absl::StrCat(slots);
      const std::string wait = absl::StrCat(timeout);
      execl(kPython, kPython, "-c", kPortalockerHold, count.c_str(), "jobs",
            dir_.c_str(), wait.c_str(), nullptr);
      return 127;
    });
  }

  // One line from a portalocker process ("" at end of file).
  static std::string Line(Pipe& got) {
    std::string line;
    for (char c; (c = got.Receive(absl::Seconds(20))) != '\0' && c != '\n';) {
      line += c;
    }
    return line;
  }
};

TEST_F(PortalockerTest, OnlyonePermitsLimitPortalocker) {
  absl::StatusOr<ScopedSemaphore> a = ScopedSemaphore::Acquire(path_, 2);
  absl::StatusOr<ScopedSemaphore> b = ScopedSemaphore::Acquire(path_, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  {
    Pipe got, hold;
    Child python = Portalocker(2, 0, got, hold);
    got.CloseWrite();
    EXPECT_EQ(python.Wait(), 1) << "portalocker got a third permit";
  }
  const int freed = a->slot();
  ASSERT_TRUE(a->Release().ok());
  Pipe got, hold;
  Child python = Portalocker(2, 0, got, hold);
  got.CloseWrite();
  EXPECT_EQ(Line(got), absl::StrFormat("jobs.%02d.lock", freed));
  EXPECT_EQ(TryFromAnotherProcess(path_, 2), 1);
  hold.CloseWrite();
  EXPECT_EQ(python.Wait(), 0);
}

TEST_F(PortalockerTest, PortalockerPermitsLimitOnlyoneAndItsReleaseWakesUs) {
  Pipe got[2], hold[2];
  std::vector<Child> pythons;
  std::vector<std::string> files;
  for (int i = 0; i < 2; ++i) {
    pythons.push_back(Portalocker(2, 0, got[i], hold[i]));
    got[i].CloseWrite();
    files.push_back(Line(got[i]));
  }
  EXPECT_NE(files[0], files[1]);
  absl::StatusOr<ScopedSemaphore> refused =
      ScopedSemaphore::Acquire(path_, 2, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat("pid ", pythons[0].pid(), " (python3)")));

  absl::StatusOr<ScopedSemaphore> permit = absl::UnknownError("not yet");
  std::thread waiter([&] { permit = ScopedSemaphore::Acquire(path_, 2); });
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".00.lock"));
  ASSERT_TRUE(WaitForBlockedWaiters(path_ + ".01.lock"));
  hold[1].CloseWrite();
  waiter.join();
  ASSERT_TRUE(permit.ok()) << permit.status();
  EXPECT_EQ(absl::StrFormat("jobs.%02d.lock", permit->slot()), files[1]);
  EXPECT_EQ(pythons[1].Wait(), 0);
  hold[0].CloseWrite();
  EXPECT_EQ(pythons[0].Wait(), 0);
}

// portalocker reads no slot-count record: a portalocker caller with a
// larger count is named in our refusal.
TEST_F(PortalockerTest, ALargerCountInUseIsNamedInTheRefusal) {
  absl::StatusOr<ScopedSemaphore> a = ScopedSemaphore::Acquire(path_, 2);
  absl::StatusOr<ScopedSemaphore> b = ScopedSemaphore::Acquire(path_, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  Pipe got, hold;
  Child python = Portalocker(3, 0, got, hold);
  got.CloseWrite();
  ASSERT_EQ(Line(got), "jobs.02.lock");
  absl::StatusOr<ScopedSemaphore> refused =
      ScopedSemaphore::Acquire(path_, 2, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat("beyond 2 are held (a caller uses a "
                                     "larger count): slot 2: pid ",
                                     python.pid())));
  hold.CloseWrite();
  EXPECT_EQ(python.Wait(), 0);
}

}  // namespace
}  // namespace onlyone
