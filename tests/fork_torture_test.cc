// fork() by one thread while other threads use locks and cancellation
// tokens: children never inherit a locked descriptor, and a child can always
// cancel and destroy the tokens it inherited.
//
// Each scenario runs in a process of its own (a fresh test-binary fork with
// its own threads), watched from the test: a hang anywhere, in a fork() or
// in a child, fails the test instead of stalling it. Every child forked by a
// scenario is waited for with a deadline too, so a hung child is counted.

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "onlyone/cancellation.h"
#include "onlyone/internal/cancellation_state.h"
#include "onlyone/scoped_file_lock.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::WaitForBlockedWaiters;

// How a child forked by a scenario ended.
struct ChildEnd {
  bool hung = false;  // not exited within the deadline; killed
  int exit_code = -1;
};

// Waits for child `pid` at most `deadline` (through a pidfd, no polling);
// kills it if it has not exited by then.
ChildEnd WaitWithin(pid_t pid, absl::Duration deadline) {
  ChildEnd end;
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    struct pollfd exited = {pidfd, POLLIN, 0};
    int ready;
    do {
      ready = poll(&exited, 1,
                   static_cast<int>(absl::ToInt64Milliseconds(deadline)));
    } while (ready < 0 && errno == EINTR);
    close(pidfd);
    if (ready == 0) {
      end.hung = true;
      kill(pid, SIGKILL);
    }
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!end.hung && WIFEXITED(status)) end.exit_code = WEXITSTATUS(status);
  return end;
}

// Runs `scenario` in a child process of its own (and process group), which
// reports a line of text; returns the line, or "" if the scenario did not
// finish within `deadline` (then its whole process group is killed).
std::string RunWatched(const std::function<std::string()>& scenario,
                       absl::Duration deadline) {
  Pipe report;
  Child child = Child::Fork([&] {
    setpgid(0, 0);
    report.CloseRead();
    std::string line = scenario() + "\n";
    if (write(report.write_fd(), line.data(), line.size()) !=
        static_cast<ssize_t>(line.size())) {
      return 1;
    }
    return 0;
  });
  setpgid(child.pid(), child.pid());  // also here: no race with the kill
  report.CloseWrite();
  std::string line = report.ReadAll(deadline);
  if (!absl::EndsWith(line, "\n")) {
    kill(-child.pid(), SIGKILL);
    return "";
  }
  EXPECT_EQ(child.Wait(), 0);
  return line;
}

// The number of this process's descriptors that hold a flock(2) lock: those
// whose /proc/self/fdinfo entry has a "lock:" line of kind FLOCK (the kernel
// lists there only the locks held through that open file description).
int DescriptorsHoldingFlockLocks() {
  DIR* fdinfo = opendir("/proc/self/fdinfo");
  if (fdinfo == nullptr) return -1;
  int holding = 0;
  while (const struct dirent* entry = readdir(fdinfo)) {
    if (entry->d_name[0] == '.') continue;
    const std::string path = absl::StrCat("/proc/self/fdinfo/", entry->d_name);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;  // the directory's own descriptor, say
    char text[4096];
    const ssize_t got = read(fd, text, sizeof text - 1);
    close(fd);
    if (got <= 0) continue;
    text[got] = '\0';
    for (const char* line = strstr(text, "lock:"); line != nullptr;
         line = strstr(line + 1, "lock:")) {
      const char* end = strchr(line, '\n');
      if (absl::StrContains(
              absl::string_view(line, end ? end - line : strlen(line)),
              "FLOCK")) {
        ++holding;
        break;
      }
    }
  }
  closedir(fdinfo);
  return holding;
}

LockOptions TryOnce() {
  LockOptions options;
  options.timeout = absl::ZeroDuration();
  return options;
}

// Threads that take and release locks for as long as they live: one tries
// once on an uncontended file, two take a second file with blocking waits
// (so one of them often waits in flock(2) while the other holds it).
class LockChurn {
 public:
  explicit LockChurn(const std::string& dir)
      : try_path_(dir + "/try.lock"), blocking_path_(dir + "/blocking.lock") {
    threads_.emplace_back([this] {
      while (!stop_) {
        absl::StatusOr<ScopedFileLock> lock =
            ScopedFileLock::Acquire(try_path_, TryOnce());
        if (lock.ok() && lock->Release().ok()) ++cycles_;
      }
    });
    for (int i = 0; i < 2; ++i) {
      threads_.emplace_back([this] {
        while (!stop_) {
          absl::StatusOr<ScopedFileLock> lock =
              ScopedFileLock::Acquire(blocking_path_);
          if (lock.ok() && lock->Release().ok()) ++cycles_;
        }
      });
    }
  }
  ~LockChurn() {
    stop_ = true;
    for (std::thread& thread : threads_) thread.join();
  }
  int cycles() const { return cycles_; }

 private:
  const std::string try_path_;
  const std::string blocking_path_;
  std::atomic<bool> stop_{false};
  std::atomic<int> cycles_{0};
  std::vector<std::thread> threads_;
};

TEST(ForkTortureTest, ChildrenNeverInheritALockedDescriptor) {
  const std::string dir = MakeTempDir();
  constexpr int kForks = 2000, kMinForks = 200;
  const std::string report = RunWatched(
      [&] {
        const int before = DescriptorsHoldingFlockLocks();
        int forks = 0, holding = 0, hung = 0, failed = 0, cycles;
        {
          LockChurn churn(dir);
          // Fork only once every thread is going.
          while (churn.cycles() < 100) std::this_thread::yield();
          cycles = churn.cycles();
          const absl::Time give_up = absl::Now() + absl::Seconds(8);
          // At least kMinForks whatever the machine's load (a sanitizer
          // build forks slowly), then more while time allows.
          for (; forks < kForks && (forks < kMinForks || absl::Now() < give_up);
               ++forks) {
            fflush(nullptr);
            const pid_t pid = fork();
            if (pid == 0) _exit(DescriptorsHoldingFlockLocks() == 0 ? 0 : 1);
            const ChildEnd end = WaitWithin(pid, absl::Seconds(2));
            if (end.hung) {
              ++hung;
            } else if (end.exit_code == 1) {
              ++holding;
            } else if (end.exit_code != 0) {
              ++failed;
            }
          }
          cycles = churn.cycles() - cycles;  // those during the forks
        }
        return absl::StrFormat(
            "before=%d forks=%d holding=%d hung=%d failed=%d cycles=%d",
            before, forks, holding, hung, failed, cycles);
      },
      absl::Seconds(90));
  ASSERT_FALSE(report.empty()) << "the scenario hung (a fork() deadlocked?)";
  int before, forks, holding, hung, failed, cycles;
  ASSERT_EQ(sscanf(report.c_str(),
                   "before=%d forks=%d holding=%d hung=%d failed=%d cycles=%d",
                   &before, &forks, &holding, &hung, &failed, &cycles),
            6)
      << report;
  ASSERT_EQ(before, 0) << "the test process already held a lock: " << report;
  EXPECT_GE(forks, kMinForks) << report;
  EXPECT_GT(cycles, forks) << "the lock threads barely ran: " << report;
  EXPECT_EQ(hung, 0) << report;
  EXPECT_EQ(failed, 0) << report;
  EXPECT_EQ(holding, 0) << holding << " of " << forks
                        << " children held a locked descriptor: " << report;
}

// What a child forked by the cancellation scenario found wrong: bits of its
// exit code, so that one finding does not hide the next.
enum CancelChildFailure {
  kTimerSetupFailed = 1,
  kFiredAParentTimer = 2,
  kNotCancelled = 4,
};

constexpr int kChildTimers = 64;

TEST(ForkTortureTest, ChildCancelsAndDestroysInheritedTokensWithoutHanging) {
  const std::string dir = MakeTempDir();
  const std::string held_path = dir + "/held.lock";
  constexpr int kForks = 300;
  const std::string report = RunWatched(
      [&] {
        // A holder, so that the waiter below blocks with its timer
        // registered in `waited_on`.
        Pipe holder_ready, release_holder;
        Child holder = Child::Fork([&] {
          absl::StatusOr<ScopedFileLock> lock =
              ScopedFileLock::Acquire(held_path);
          if (!lock.ok()) return 1;
          holder_ready.Send();
          release_holder.Receive(absl::Hours(1));
          return 0;
        });
        if (holder_ready.Receive() != '.') return std::string("no holder");

        CancellationToken waited_on;
        std::atomic<bool> waiter_cancelled{false};
        std::thread waiter([&] {
          LockOptions options;
          options.cancellation = waited_on;
          waiter_cancelled =
              absl::IsCancelled(ScopedFileLock::Acquire(held_path, options)
                                    .status());
        });
        if (!WaitForBlockedWaiters(held_path)) return std::string("no waiter");

        // Owned here alone, so that a child that resets it destroys it.
        std::optional<CancellationToken> hammered{CancellationToken()};
        internal::CancellationState& hammered_state = hammered->state();
        std::atomic<bool> stop{false};
        std::atomic<int> hammer_ops{0};
        std::vector<std::thread> hammers;
        // Wakers registered and unregistered all the time, as waits come
        // and go.
        for (int hammer = 0; hammer < 2; ++hammer) {
          hammers.emplace_back([&] {
            struct IdleWaker final : internal::CancellationWaker {
              void Wake() override {}
            } waker;
            while (!stop) {
              if (hammered_state.Register(&waker)) {
                hammered_state.Unregister(&waker);
              }
              ++hammer_ops;
            }
          });
        }
        // Makes, cancels and destroys tokens: the registry of live states
        // changes all the time.
        hammers.emplace_back([&] {
          while (!stop) {
            CancellationToken passing;
            passing.Cancel();
            ++hammer_ops;
          }
        });
        while (hammer_ops < 1000) std::this_thread::yield();

        int forks = 0, hung = 0, fired = 0, not_cancelled = 0, failed = 0;
        for (; forks < kForks && hung < 3; ++forks) {
          fflush(nullptr);
          const pid_t pid = fork();
          if (pid == 0) {
            // POSIX timers are not inherited; the child's ids start afresh
            // and so may equal those the parent registered in `waited_on`.
            timer_t timers[kChildTimers];
            struct sigevent none {};
            none.sigev_notify = SIGEV_NONE;
            for (timer_t& timer : timers) {
              if (timer_create(CLOCK_MONOTONIC, &none, &timer) != 0) {
                _exit(kTimerSetupFailed);
              }
            }
            int failures = 0;
            waited_on.Cancel();
            for (timer_t timer : timers) {
              struct itimerspec left {};
              timer_gettime(timer, &left);
              if (left.it_value.tv_sec != 0 || left.it_value.tv_nsec != 0) {
                failures |= kFiredAParentTimer;
              }
            }
            hammered->Cancel();
            if (!hammered->IsCancelled() || !waited_on.IsCancelled()) {
              failures |= kNotCancelled;
            }
            hammered.reset();  // destroys the state
            {
              CancellationToken fresh;
              fresh.Cancel();
            }
            _exit(failures);
          }
          const ChildEnd end = WaitWithin(pid, absl::Seconds(2));
          if (end.hung) {
            ++hung;
          } else if (end.exit_code < 0 || end.exit_code & kTimerSetupFailed) {
            ++failed;
          } else {
            fired += (end.exit_code & kFiredAParentTimer) != 0;
            not_cancelled += (end.exit_code & kNotCancelled) != 0;
          }
        }
        stop = true;
        for (std::thread& hammer : hammers) hammer.join();

        // The children's Cancel() left this process's token alone, and the
        // parent's own Cancel() still reaches its registered waiter.
        const bool parent_still_waiting =
            !waited_on.IsCancelled() && WaitForBlockedWaiters(held_path);
        waited_on.Cancel();
        waiter.join();
        release_holder.Send();
        holder.Wait();
        return absl::StrFormat(
            "forks=%d hung=%d fired=%d not_cancelled=%d failed=%d "
            "parent_still_waiting=%d waiter_cancelled=%d",
            forks, hung, fired, not_cancelled, failed, parent_still_waiting,
            waiter_cancelled.load());
      },
      absl::Seconds(30));
  ASSERT_FALSE(report.empty()) << "the scenario hung (a fork() deadlocked?)";
  int forks, hung, fired, not_cancelled, failed, parent_still_waiting,
      waiter_cancelled;
  ASSERT_EQ(sscanf(report.c_str(),
                   "forks=%d hung=%d fired=%d not_cancelled=%d failed=%d "
                   "parent_still_waiting=%d waiter_cancelled=%d",
                   &forks, &hung, &fired, &not_cancelled, &failed,
                   &parent_still_waiting, &waiter_cancelled),
            7)
      << report;
  EXPECT_EQ(hung, 0) << hung << " of " << forks
                     << " children hung in Cancel() or a destructor: "
                     << report;
  EXPECT_EQ(fired, 0) << fired << " of " << forks
                      << " children's Cancel() fired a timer id registered "
                         "in the parent: "
                      << report;
  EXPECT_EQ(not_cancelled, 0) << report;
  EXPECT_EQ(failed, 0) << report;
  EXPECT_EQ(parent_still_waiting, 1) << report;
  EXPECT_EQ(waiter_cancelled, 1) << report;
}

}  // namespace
}  // namespace onlyone
