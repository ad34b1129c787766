// End-to-end tests of what `onlyone run` tells a terminal while it waits for
// a lock (--wait, --on-conflict wait): one line when the wait starts, naming
// whom it waits for (with --slots, each slot's holder), and one when it has
// the lock; nothing when stderr is not a terminal, with --quiet, or when
// there was no wait.
//
// The terminal is a pseudo-terminal (openpty(3)) whose slave is onlyone's
// stderr. What onlyone wrote is read from the master up to a marker the
// test writes through the slave after onlyone has exited, so "nothing" is
// checked without waiting for a time to pass. Holders are `onlyone run`
// processes whose command blocks reading a pipe the test holds, as in
// cli_run_test.cc. No sleeps.

#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli_test_util.h"
#include "tests/redis_server.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::OnlyonePath;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::ScopedTestRoot;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::testing::MatchesRegex;

constexpr char kHold[] = "printf s >&8; exec cat <&9";
constexpr char kMarker[] = "@@end of onlyone's output@@";

// A pseudo-terminal in raw mode (no "\r" added to newlines).
class Terminal {
 public:
  Terminal() {
    EXPECT_EQ(openpty(&master_, &slave_, nullptr, nullptr, nullptr), 0);
    struct termios mode;
    EXPECT_EQ(tcgetattr(slave_, &mode), 0);
    cfmakeraw(&mode);
    EXPECT_EQ(tcsetattr(slave_, TCSANOW, &mode), 0);
    fcntl(master_, F_SETFD, FD_CLOEXEC);
    fcntl(slave_, F_SETFD, FD_CLOEXEC);
  }
  ~Terminal() {
    close(master_);
    close(slave_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  int slave() const { return slave_; }

  // Reads what was written to the terminal until `lines` newlines have
  // arrived (at most 10 seconds); returns it.
  std::string ReadLines(int lines) {
    std::string text;
    while (lines > 0) {
      const char c = ReadByte();
      if (c == '\0') break;
      text += c;
      if (c == '\n') --lines;
    }
    return text;
  }

  // Writes the marker through the slave and returns everything written to
  // the terminal before it. Call once every writer has exited.
  std::string ReadToEnd() {
    const std::string marker = absl::StrCat(kMarker, "\n");
    EXPECT_EQ(write(slave_, marker.data(), marker.size()),
              static_cast<ssize_t>(marker.size()));
    std::string text;
    while (!absl::EndsWith(text, marker)) {
      const char c = ReadByte();
      if (c == '\0') {
        ADD_FAILURE() << "no marker after: " << text;
        return text;
      }
      text += c;
    }
    text.resize(text.size() - marker.size());
    return text;
  }

 private:
  char ReadByte() {
    struct pollfd readable = {master_, POLLIN, 0};
    if (poll(&readable, 1, 10000) != 1) return '\0';
    char c;
    return read(master_, &c, 1) == 1 ? c : '\0';
  }

  int master_ = -1;
  int slave_ = -1;
};

class CliWaitNoticeTest : public ::testing::Test {
 protected:
  // `onlyone run --name nightly -- sh -c kHold`, running under the lock.
  std::unique_ptr<Process> StartHolder() {
    std::unique_ptr<Process> holder = Process::StartOnlyone(
        {"run", "--name", "nightly", "--", "sh", "-c", kHold},
        {{8, ready_.write_fd()}, {9, release_.read_fd()}});
    EXPECT_EQ(ready_.Receive(), 's') << holder->err();
    return holder;
  }

  // onlyone with `args`, its stderr on the terminal (stdin and stdout
  // /dev/null).
  Child StartOnTerminal(const std::vector<std::string>& args) {
    return Child::Fork([&]() -> int {
      const int null = open("/dev/null", O_RDWR);
      if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 ||
          dup2(terminal_.slave(), 2) < 0) {
        return 121;
      }
      onlyone::testing::ForgetTestRunnerFiles();
      std::vector<std::string> argv = {OnlyonePath()};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> pointers;
      for (std::string& arg : argv) pointers.push_back(arg.data());
      pointers.push_back(nullptr);
      execv(pointers[0], pointers.data());
      return 122;
    });
  }

  const ScopedTestRoot root_;
  const std::string lock_ = root_.UserDirectory() + "/nightly.lock";
  Terminal terminal_;
  Pipe ready_;
  Pipe release_;
};

TEST_F(CliWaitNoticeTest, OneLineWhenTheWaitStartsAndOneWhenTheLockIsTaken) {
  std::unique_ptr<Process> holder = StartHolder();
  Child waiter =
      StartOnTerminal({"run", "--name", "nightly", "--wait", "60s", "--",
                       "true"});
  // Said as the wait starts, before the holder lets go.
  EXPECT_THAT(terminal_.ReadLines(1),
              MatchesRegex(absl::StrCat(
                  "onlyone: waiting for nightly, held by pid ", holder->pid(),
                  " \\(sh -c 'printf s >&8; exec cat <&9'\\) since "
                  "[0-9][0-9]:[0-9][0-9]:[0-9][0-9] \\(giving up after "
                  "1m\\)\n")));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter.Wait(), 0);
  EXPECT_THAT(terminal_.ReadToEnd(),
              MatchesRegex("onlyone: took nightly after waiting "
                           "[0-9.]+(us|ms|s)\n"));
}

TEST_F(CliWaitNoticeTest, AWaitForAPermitNamesEachSlotsHolder) {
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--name", "gpu", "--slots", "1", "--", "sh", "-c", kHold},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's') << holder->err();
  Child waiter = StartOnTerminal({"run", "--name", "gpu", "--slots", "1",
                                  "--wait", "60s", "--", "true"});
  EXPECT_THAT(terminal_.ReadLines(1),
              MatchesRegex(absl::StrCat(
                  "onlyone: waiting for a permit of gpu, held by slot 0: pid ",
                  holder->pid(),
                  " \\((sh|cat)\\), started [-0-9]+ [0-9:]+ \\([^)]*\\) "
                  "\\(giving up after 1m\\)\n")));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter.Wait(), 0);
  EXPECT_THAT(terminal_.ReadToEnd(),
              MatchesRegex("onlyone: took a permit of gpu after waiting "
                           "[0-9.]+(us|ms|s)\n"));
}

// A --redis wait names the lease's holder (its host and pid), as the other
// kinds of lock do.
TEST_F(CliWaitNoticeTest, AWaitForARedisLeaseNamesItsHolder) {
  absl::StatusOr<std::unique_ptr<testing::RedisServer>> server =
      testing::RedisServer::Start();
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string url = (*server)->unix_url();
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--redis", url, "--name", "fleet", "--", "sh", "-c", kHold},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's') << holder->err();
  Child waiter = StartOnTerminal({"run", "--redis", url, "--name", "fleet",
                                  "--wait", "60s", "--", "true"});
  EXPECT_THAT(terminal_.ReadLines(1),
              MatchesRegex(absl::StrCat("onlyone: waiting for fleet, held by "
                                        "pid ",
                                        holder->pid(), " on host .*\n")));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter.Wait(), 0);
  EXPECT_THAT(terminal_.ReadToEnd(),
              MatchesRegex("onlyone: took fleet after waiting "
                           "[0-9.]+(us|ms|s)\n"));
}

TEST_F(CliWaitNoticeTest, OnConflictWaitSaysSoToo) {
  std::unique_ptr<Process> holder = StartHolder();
  Child waiter = StartOnTerminal(
      {"run", "--name", "nightly", "--on-conflict", "wait", "--", "true"});
  EXPECT_THAT(terminal_.ReadLines(1),
              MatchesRegex(absl::StrCat(
                  "onlyone: waiting for nightly, held by pid ", holder->pid(),
                  " \\(sh -c 'printf s >&8; exec cat <&9'\\) since "
                  "[0-9:]+\n")));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter.Wait(), 0);
  EXPECT_THAT(terminal_.ReadToEnd(),
              MatchesRegex("onlyone: took nightly after waiting [0-9.]+m?s\n"));
}

TEST_F(CliWaitNoticeTest, NothingWithQuiet) {
  std::unique_ptr<Process> holder = StartHolder();
  Child waiter = StartOnTerminal(
      {"run", "--name", "nightly", "--wait", "60s", "--quiet", "--", "true"});
  ASSERT_TRUE(WaitForBlockedWaiters(lock_));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter.Wait(), 0);
  EXPECT_EQ(terminal_.ReadToEnd(), "");
}

TEST_F(CliWaitNoticeTest, NothingWhenTheLockIsFree) {
  Child waiter =
      StartOnTerminal({"run", "--name", "nightly", "--wait", "60s", "--",
                       "true"});
  EXPECT_EQ(waiter.Wait(), 0);
  EXPECT_EQ(terminal_.ReadToEnd(), "");
}

TEST_F(CliWaitNoticeTest, NothingWhenStderrIsNotATerminal) {
  std::unique_ptr<Process> holder = StartHolder();
  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"run", "--name", "nightly", "--wait", "60s", "--", "true"});
  ASSERT_TRUE(WaitForBlockedWaiters(lock_)) << waiter->err();
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter->Wait(), 0);
  EXPECT_EQ(waiter->err(), "");
}

TEST_F(CliWaitNoticeTest, AWaitThatRunsOutSaysSoOnce) {
  std::unique_ptr<Process> holder = StartHolder();
  Child waiter = StartOnTerminal(
      {"run", "--name", "nightly", "--wait", "200ms", "--", "true"});
  EXPECT_EQ(waiter.Wait(), 75);
  const std::string said = terminal_.ReadToEnd();
  EXPECT_THAT(said, MatchesRegex("onlyone: waiting for nightly, held by pid "
                                 "[0-9]+ [^\n]*\\(giving up after 200ms\\)\n"
                                 "onlyone: nightly is already running [^\n]*; "
                                 "gave up after waiting [^\n]*\n"));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

}  // namespace
}  // namespace onlyone
