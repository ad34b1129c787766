// Tests that Cancel() wakes every kind of wait without polling: a thread
// blocked in poll(2) on a socket or an inotify descriptor (through a
// CancellationEventFd), and one blocked on a condition variable
// (WaitCancellable); and that a fork child's Cancel() of an inherited token
// neither hangs nor wakes the parent's waits. (A thread blocked in flock(2)
// is covered by scoped_file_lock_test and fork_torture_test.)
//
// Before cancelling, a test waits until the kernel shows the waiting thread
// asleep in the system call (/proc/self/task/TID/syscall), so that what is
// measured is the wake-up of a blocked waiter.

#include <poll.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "onlyone/cancellation.h"
#include "onlyone/internal/cancellation_state.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::ReadFileOrEmpty;

// How long a woken waiter may take to return: generous for a loaded machine,
// far below "never".
constexpr absl::Duration kPrompt = absl::Seconds(1);

// Waits until thread `tid` of this process sleeps in one of `syscalls`.
bool WaitUntilBlockedIn(pid_t tid, std::vector<long> syscalls) {
  const std::string path = absl::StrCat("/proc/self/task/", tid, "/syscall");
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    const std::string text = ReadFileOrEmpty(path);
    long number = -1;
    std::vector<std::string> fields = absl::StrSplit(text, ' ');
    if (!fields.empty() && absl::SimpleAtoi(fields[0], &number)) {
      for (long wanted : syscalls) {
        if (number == wanted) return true;
      }
    }
    std::this_thread::yield();
  }
  return false;
}

// Blocks in poll(2) on `fd` and the token's eventfd; returns what ended it.
struct PollOutcome {
  absl::Status status;
  absl::Time returned;
};

PollOutcome PollUntilCancelled(int fd, CancellationToken token,
                               std::atomic<pid_t>& tid) {
  absl::StatusOr<std::unique_ptr<internal::CancellationEventFd>> waker =
      internal::CancellationEventFd::Create(token.state());
  if (!waker.ok()) return {waker.status(), absl::Now()};
  struct pollfd fds[2] = {{fd, POLLIN, 0}, {(*waker)->fd(), POLLIN, 0}};
  tid = static_cast<pid_t>(syscall(SYS_gettid));
  int ready;
  do {
    ready = poll(fds, 2, -1);
  } while (ready < 0 && errno == EINTR);
  const absl::Time returned = absl::Now();
  if (ready < 0) return {absl::InternalError("poll failed"), returned};
  if (fds[1].revents & POLLIN) return {absl::CancelledError(""), returned};
  return {absl::OkStatus(), returned};
}

void ExpectPollWaiterWokenByCancel(int fd) {
  CancellationToken token;
  std::atomic<pid_t> tid{0};
  PollOutcome outcome;
  std::thread waiter([&] { outcome = PollUntilCancelled(fd, token, tid); });
  while (tid == 0) std::this_thread::yield();
  ASSERT_TRUE(WaitUntilBlockedIn(tid, {SYS_poll, SYS_ppoll}));
  const absl::Time cancelled = absl::Now();
  token.Cancel();
  waiter.join();
  EXPECT_TRUE(absl::IsCancelled(outcome.status)) << outcome.status;
  EXPECT_LT(outcome.returned - cancelled, kPrompt);
}

TEST(CancellationTest, WakesAWaitInPollOnASocket) {
  int sockets[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  ExpectPollWaiterWokenByCancel(sockets[0]);
  close(sockets[0]);
  close(sockets[1]);
}

TEST(CancellationTest, WakesAWaitInPollOnInotify) {
  const int inotify = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  ASSERT_GE(inotify, 0);
  ASSERT_GE(inotify_add_watch(inotify, "/", IN_CLOSE_WRITE), 0);
  ExpectPollWaiterWokenByCancel(inotify);
  close(inotify);
}

TEST(CancellationTest, WakesAWaitOnAConditionVariable) {
  CancellationToken token;
  std::mutex mutex;
  std::condition_variable condition;
  std::atomic<pid_t> tid{0};
  absl::Status status;
  absl::Time returned;
  std::thread waiter([&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    std::unique_lock<std::mutex> lock(mutex);
    status = internal::WaitCancellable(
        lock, condition, [] { return false; }, absl::InfiniteFuture(),
        &token.state());
    returned = absl::Now();
  });
  while (tid == 0) std::this_thread::yield();
  ASSERT_TRUE(WaitUntilBlockedIn(tid, {SYS_futex}));
  const absl::Time cancelled = absl::Now();
  token.Cancel();
  waiter.join();
  EXPECT_TRUE(absl::IsCancelled(status)) << status;
  EXPECT_LT(returned - cancelled, kPrompt);
}

TEST(CancellationTest, AConditionWaitEndsWhenDoneOrAtItsDeadline) {
  CancellationToken token;
  std::mutex mutex;
  std::condition_variable condition;
  bool done = false;
  std::thread setter([&] {
    std::lock_guard<std::mutex> lock(mutex);
    done = true;
    condition.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mutex);
    EXPECT_TRUE(internal::WaitCancellable(
                    lock, condition, [&] { return done; },
                    absl::InfiniteFuture(), &token.state())
                    .ok());
  }
  setter.join();
  // Never done: the deadline ends it, not earlier.
  std::unique_lock<std::mutex> lock(mutex);
  const absl::Time start = absl::Now();
  absl::Status timed_out = internal::WaitCancellable(
      lock, condition, [] { return false; }, start + absl::Milliseconds(50),
      nullptr);
  EXPECT_TRUE(absl::IsDeadlineExceeded(timed_out)) << timed_out;
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
}

TEST(CancellationTest, AnAlreadyCancelledTokenEndsWaitsAtOnce) {
  CancellationToken token;
  token.Cancel();
  EXPECT_TRUE(absl::IsCancelled(
      internal::CancellationEventFd::Create(token.state()).status()));
  std::mutex mutex;
  std::condition_variable condition;
  std::unique_lock<std::mutex> lock(mutex);
  EXPECT_TRUE(absl::IsCancelled(internal::WaitCancellable(
      lock, condition, [] { return false; }, absl::InfiniteFuture(),
      &token.state())));
}

// A child that inherits a token whose parent waits on it in poll(2) may
// cancel and destroy its copy: that does not wake the parent (the eventfd
// is shared across fork), and nothing hangs.
TEST(CancellationTest, AForkChildsCancelDoesNotWakeTheParent) {
  std::optional<CancellationToken> token{CancellationToken()};
  int sockets[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  std::atomic<pid_t> tid{0};
  PollOutcome outcome;
  std::thread waiter(
      [&] { outcome = PollUntilCancelled(sockets[0], *token, tid); });
  while (tid == 0) std::this_thread::yield();
  ASSERT_TRUE(WaitUntilBlockedIn(tid, {SYS_poll, SYS_ppoll}));
  Child child = Child::Fork([&] {
    token->Cancel();
    if (!token->IsCancelled()) return 1;
    token.reset();
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
  EXPECT_FALSE(token->IsCancelled());
  // Still asleep in poll(2): the child did not write its eventfd.
  EXPECT_TRUE(WaitUntilBlockedIn(tid, {SYS_poll, SYS_ppoll}));
  struct pollfd probe = {sockets[0], POLLIN, 0};
  EXPECT_EQ(poll(&probe, 1, 0), 0);
  const char byte = 'x';
  ASSERT_EQ(write(sockets[1], &byte, 1), 1);  // ends the wait the usual way
  waiter.join();
  EXPECT_TRUE(outcome.status.ok()) << outcome.status;
  close(sockets[0]);
  close(sockets[1]);
}

}  // namespace
}  // namespace onlyone
