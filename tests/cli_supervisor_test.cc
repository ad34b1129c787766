// The command supervisor of `onlyone run` (cli/supervisor.h), run in a
// forked child of the test with real commands: exit status and signal
// pass-through, 126/127, process groups, signal forwarding, --max-runtime
// and --grace, and a lost lock (its lost() token cancelled) stopping the
// command.
//
// Synchronisation: the commands write to descriptor 8 (a pipe the test
// reads) when they are ready, and block reading descriptor 9 (a pipe whose
// write end the test holds). No sleeps.

#include "cli/supervisor.h"

#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <thread>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "onlyone/cancellation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace onlyone::cli {
namespace {

using ::onlyone::testing::Child;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::ReadFileOrEmpty;
using ::testing::HasSubstr;

// Whether `fd` reaches end of file (every writer gone) within `timeout`.
bool ReachesEndOfFile(int fd, absl::Duration timeout) {
  struct pollfd readable = {fd, POLLIN, 0};
  if (poll(&readable, 1, absl::ToInt64Milliseconds(timeout)) != 1) {
    return false;
  }
  char byte;
  return read(fd, &byte, 1) == 0;
}

// In the forked child: descriptor 8 becomes `ready` (if >= 0), 9 becomes
// `release` (if >= 0), 7 becomes `keep` (if >= 0, for the test's own code in
// the child), and every other descriptor above 2 is closed, so the test's
// pipe ends do not stay open in the supervisor.
void PrepareDescriptors(int ready, int release, int keep = -1) {
  const int staged_ready = ready >= 0 ? fcntl(ready, F_DUPFD, 100) : -1;
  const int staged_release = release >= 0 ? fcntl(release, F_DUPFD, 100) : -1;
  const int staged_keep = keep >= 0 ? fcntl(keep, F_DUPFD_CLOEXEC, 100) : -1;
  if (staged_ready >= 0) dup2(staged_ready, 8);
  if (staged_release >= 0) dup2(staged_release, 9);
  if (staged_keep >= 0) dup3(staged_keep, 7, O_CLOEXEC);
  for (int fd = 3; fd < 1024; ++fd) {
    if (fd == 8 && ready >= 0) continue;
    if (fd == 9 && release >= 0) continue;
    if (fd == 7 && keep >= 0) continue;
    close(fd);
  }
}

// In the forked child, before Supervise(): a thread, with every signal
// blocked (the supervisor's signalfd must see them all), that cancels
// `lost` when a byte arrives on descriptor 7: the lock is lost when the test
// says so.
void LoseTheLockOnAByteFromFd7(CancellationToken lost) {
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &saved);
  std::thread([lost]() mutable {
    char byte;
    if (read(7, &byte, 1) == 1) lost.Cancel();
  }).detach();
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

class CliSupervisorTest : public ::testing::Test {
 protected:
  // Forks a child that runs Supervise(options) with stderr in a file and
  // exits with its result.
  Child Start(const SuperviseOptions& options, int ready = -1,
              int release = -1,
              const std::function<void()>& before = nullptr, int keep = -1) {
    return Child::Fork([&]() -> int {
      const int err = open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                           0644);
      dup2(err, 2);
      const int in = open("/dev/null", O_RDONLY);
      dup2(in, 0);
      // SIGQUIT must not leave core files behind.
      struct rlimit no_core = {0, 0};
      setrlimit(RLIMIT_CORE, &no_core);
      PrepareDescriptors(ready, release, keep);
      if (before) before();
      return Supervise(options, std::cerr);
    });
  }

  int RunToEnd(const SuperviseOptions& options) {
    return Start(options).Wait();
  }

  static SuperviseOptions Shell(const std::string& script) {
    SuperviseOptions options;
    options.command = {"/bin/sh", "-c", script};
    options.environment = EnvironmentWith("ONLYONE_SUPERVISOR_TEST", "1");
    return options;
  }

  std::string err() const { return ReadFileOrEmpty(err_path_); }

  const std::string tmp_ = onlyone::testing::MakeTempDir();
  const std::string err_path_ = tmp_ + "/stderr";
};

TEST_F(CliSupervisorTest, ExitStatusPassesThrough) {
  EXPECT_EQ(RunToEnd(Shell("exit 0")), 0);
  EXPECT_EQ(RunToEnd(Shell("exit 3")), 3);
  EXPECT_EQ(RunToEnd(Shell("exit 42")), 42);
  EXPECT_EQ(RunToEnd(Shell("exit 255")), 255);
}

TEST_F(CliSupervisorTest, DeathBySignalIs128PlusN) {
  EXPECT_EQ(RunToEnd(Shell("kill -USR1 $$")), 128 + SIGUSR1);
  EXPECT_EQ(RunToEnd(Shell("kill -KILL $$")), 128 + SIGKILL);
}

TEST_F(CliSupervisorTest, CommandNotFoundIs127) {
  SuperviseOptions options;
  options.command = {"onlyone-no-such-command-here"};
  options.environment = EnvironmentWith("PATH", "/usr/bin:/bin");
  EXPECT_EQ(RunToEnd(options), kExitNotFound);
  EXPECT_THAT(err(), HasSubstr("onlyone-no-such-command-here: command not "
                               "found"));

  options.command = {tmp_ + "/missing/program"};
  EXPECT_EQ(RunToEnd(options), kExitNotFound);
  EXPECT_THAT(err(), HasSubstr("/missing/program: no such file"));
}

TEST_F(CliSupervisorTest, NotExecutableIs126) {
  const std::string script = tmp_ + "/not-executable";
  const int fd = open(script.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "#!/bin/sh\nexit 0\n", 17), 17);
  close(fd);
  SuperviseOptions options;
  options.command = {script};
  EXPECT_EQ(RunToEnd(options), kExitCannotExecute);
  EXPECT_THAT(err(), HasSubstr("not-executable: cannot execute: Permission "
                               "denied"));

  options.command = {tmp_};  // a directory
  EXPECT_EQ(RunToEnd(options), kExitCannotExecute);
}

TEST_F(CliSupervisorTest, CommandGetsTheEnvironmentGiven) {
  EXPECT_EQ(RunToEnd(Shell("test \"$ONLYONE_SUPERVISOR_TEST\" = 1")), 0);
  // EnvironmentWith replaces an existing entry rather than adding a second.
  setenv("ONLYONE_SUPERVISOR_OLD", "old", 1);
  std::vector<std::string> environment =
      EnvironmentWith("ONLYONE_SUPERVISOR_OLD", "new");
  unsetenv("ONLYONE_SUPERVISOR_OLD");
  EXPECT_EQ(std::count_if(environment.begin(), environment.end(),
                          [](const std::string& entry) {
                            return entry.rfind("ONLYONE_SUPERVISOR_OLD=", 0) ==
                                   0;
                          }),
            1);
  EXPECT_NE(std::find(environment.begin(), environment.end(),
                      "ONLYONE_SUPERVISOR_OLD=new"),
            environment.end());
}

// Reads one line written by the command to descriptor 8.
std::string ReadLine(Pipe& pipe) {
  std::string line;
  for (;;) {
    const char byte = pipe.Receive(absl::Seconds(10));
    if (byte == '\0' || byte == '\n') return line;
    line += byte;
  }
}

TEST_F(CliSupervisorTest, CommandLeadsItsOwnProcessGroup) {
  Pipe ready;
  Pipe release;
  Child supervisor = Start(Shell("echo $$ >&8; exec cat <&9"),
                           ready.write_fd(), release.read_fd());
  pid_t command = 0;
  ASSERT_TRUE(absl::SimpleAtoi(ReadLine(ready), &command));
  EXPECT_EQ(getpgid(command), command);
  EXPECT_NE(getpgid(command), getpgid(supervisor.pid()));
  release.CloseWrite();
  EXPECT_EQ(supervisor.Wait(), 0);
}

class CliSupervisorSignalTest : public CliSupervisorTest,
                                public ::testing::WithParamInterface<int> {};

TEST_P(CliSupervisorSignalTest, ForwardsTheSignalToTheCommand) {
  const int signal_number = GetParam();
  Pipe ready;
  Pipe release;
  SuperviseOptions options = Shell("printf s >&8; exec cat <&9");
  options.verbose = true;
  Child supervisor = Start(options, ready.write_fd(), release.read_fd());
  ASSERT_EQ(ready.Receive(), 's');
  supervisor.Kill(signal_number);
  // cat dies of the forwarded signal; the supervisor itself survives it
  // and reports it.
  EXPECT_EQ(supervisor.Wait(), 128 + signal_number);
  EXPECT_THAT(err(), HasSubstr(absl::StrCat("forwarding SIG",
                                            sigabbrev_np(signal_number))));
}

INSTANTIATE_TEST_SUITE_P(Signals, CliSupervisorSignalTest,
                         ::testing::Values(SIGINT, SIGTERM, SIGHUP, SIGQUIT));

TEST_F(CliSupervisorTest, ForwardsToTheWholeProcessGroup) {
  Pipe ready;
  Pipe release;
  // A background grandchild holds descriptor 8 too: the pipe reaches end of
  // file only when both it and the shell are gone.
  Child supervisor = Start(
      Shell("cat <&9 & printf s >&8; wait"), ready.write_fd(),
      release.read_fd());
  ASSERT_EQ(ready.Receive(), 's');
  supervisor.Kill(SIGTERM);
  EXPECT_EQ(supervisor.Wait(), 128 + SIGTERM);
  // End of file (not a timeout): the grandchild got the signal as well.
  ready.CloseWrite();
  EXPECT_TRUE(ReachesEndOfFile(ready.read_fd(), absl::Seconds(10)));
}

TEST_F(CliSupervisorTest, MaxRuntimeSendsSigtermAndExits124) {
  Pipe release;
  SuperviseOptions options = Shell("exec cat <&9");
  options.max_runtime = absl::Milliseconds(200);
  const absl::Time start = absl::Now();
  Child supervisor = Start(options, -1, release.read_fd());
  EXPECT_EQ(supervisor.Wait(), kExitTimedOut);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_THAT(err(), HasSubstr("ran longer than 200ms (--max-runtime); "
                               "sending SIGTERM"));
  EXPECT_THAT(err(), ::testing::Not(HasSubstr("sending SIGKILL\n")));
}

TEST_F(CliSupervisorTest, CommandIgnoringSigtermGetsSigkillAfterGrace) {
  Pipe ready;
  Pipe release;
  SuperviseOptions options =
      Shell("trap '' TERM; printf s >&8; exec cat <&9");
  options.max_runtime = absl::Milliseconds(100);
  options.grace = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  Child supervisor = Start(options, ready.write_fd(), release.read_fd());
  ASSERT_EQ(ready.Receive(), 's');
  EXPECT_EQ(supervisor.Wait(), kExitTimedOut);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  EXPECT_THAT(err(), HasSubstr("still running 300ms after SIGTERM; sending "
                               "SIGKILL"));
}

TEST_F(CliSupervisorTest, LostLockSendsSigtermAndExits69) {
  Pipe ready;
  Pipe release;
  Pipe lose;
  SuperviseOptions options = Shell("printf s >&8; exec cat <&9");
  options.lock_lost = CancellationToken();
  options.lock_name = "/run/lock/job.lock";
  Child supervisor = Start(
      options, ready.write_fd(), release.read_fd(),
      [&] { LoseTheLockOnAByteFromFd7(*options.lock_lost); }, lose.read_fd());
  ASSERT_EQ(ready.Receive(), 's');
  lose.Send();
  // cat is still blocked reading 9 (the test holds its write end): only the
  // SIGTERM ends it.
  EXPECT_EQ(supervisor.Wait(), kExitLockLost);
  EXPECT_THAT(err(), HasSubstr("onlyone: lost the lock /run/lock/job.lock "
                               "while /bin/sh -c 'printf s >&8; exec cat "
                               "<&9' ran; sending SIGTERM, SIGKILL in 5s "
                               "(--grace)\n"));
  EXPECT_THAT(err(), ::testing::Not(HasSubstr("sending SIGKILL\n")));
}

TEST_F(CliSupervisorTest, CommandIgnoringSigtermIsKilledAfterGraceOnALostLock) {
  Pipe ready;
  Pipe release;
  Pipe lose;
  SuperviseOptions options =
      Shell("trap '' TERM; printf s >&8; exec cat <&9");
  options.lock_lost = CancellationToken();
  options.lock_name = "job";
  options.grace = absl::Milliseconds(300);
  // A time limit that has not struck: the loss decides the exit code.
  options.max_runtime = absl::Hours(1);
  Child supervisor = Start(
      options, ready.write_fd(), release.read_fd(),
      [&] { LoseTheLockOnAByteFromFd7(*options.lock_lost); }, lose.read_fd());
  ASSERT_EQ(ready.Receive(), 's');
  const absl::Time lost_at = absl::Now();
  lose.Send();
  EXPECT_EQ(supervisor.Wait(), kExitLockLost);
  EXPECT_GE(absl::Now() - lost_at, absl::Milliseconds(300));
  EXPECT_THAT(err(), HasSubstr("still running 300ms after SIGTERM; sending "
                               "SIGKILL"));
}

TEST_F(CliSupervisorTest, LockLostBeforeTheStartNeverStartsTheCommand) {
  Pipe ready;
  SuperviseOptions options = Shell("printf s >&8");
  options.lock_lost = CancellationToken();
  options.lock_lost->Cancel();
  options.lock_name = "job";
  EXPECT_EQ(Start(options, ready.write_fd()).Wait(), kExitLockLost);
  ready.CloseWrite();
  EXPECT_EQ(ready.ReadAll(), "");
  EXPECT_THAT(err(), HasSubstr("onlyone: lost the lock job before "));
}

TEST_F(CliSupervisorTest, ALockThatIsNotLostChangesNothing) {
  SuperviseOptions options = Shell("exit 7");
  options.lock_lost = CancellationToken();
  options.lock_name = "job";
  EXPECT_EQ(RunToEnd(options), 7);
  EXPECT_EQ(err(), "");
}

TEST_F(CliSupervisorTest, QuietSaysNothingAtTheLimit) {
  Pipe release;
  SuperviseOptions options = Shell("exec cat <&9");
  options.max_runtime = absl::Milliseconds(50);
  options.quiet = true;
  EXPECT_EQ(Start(options, -1, release.read_fd()).Wait(), kExitTimedOut);
  EXPECT_EQ(err(), "");
}

TEST_F(CliSupervisorTest, CommandEndingBeforeTheLimitKeepsItsStatus) {
  SuperviseOptions options = Shell("exit 7");
  options.max_runtime = absl::Hours(1);
  EXPECT_EQ(RunToEnd(options), 7);
}

TEST_F(CliSupervisorTest, IgnoredSigchldDoesNotLoseTheStatus) {
  Child supervisor = Start(Shell("exit 9"), -1, -1,
                           [] { signal(SIGCHLD, SIG_IGN); });
  EXPECT_EQ(supervisor.Wait(), 9);
}

TEST_F(CliSupervisorTest, InATerminalsForegroundCommandStaysInTheGroup) {
  Pipe ready;
  Pipe release;
  SuperviseOptions options = Shell("echo $$ >&8; exec cat <&9");
  // The child makes a pseudo-terminal its controlling terminal, so it is
  // in the terminal's foreground, as an interactive `onlyone run` is.
  Child supervisor = Start(options, ready.write_fd(), release.read_fd(), [] {
    setsid();
    const int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) _exit(90);
    const int terminal = open(ptsname(master), O_RDWR);
    if (terminal < 0 || ioctl(terminal, TIOCSCTTY, 0) != 0) _exit(91);
    dup2(terminal, 0);
    // `master` stays open in the supervisor: closing it would hang the
    // terminal up.
  });
  pid_t command = 0;
  ASSERT_TRUE(absl::SimpleAtoi(ReadLine(ready), &command));
  EXPECT_EQ(getpgid(command), supervisor.pid());
  // A signal sent by a process (not by the terminal) is still forwarded.
  supervisor.Kill(SIGTERM);
  EXPECT_EQ(supervisor.Wait(), 128 + SIGTERM);
}

TEST(CliShellJoinTest, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(ShellJoin({"backup", "--dir=/a/b", "x,y@z:1"}),
            "backup --dir=/a/b x,y@z:1");
  EXPECT_EQ(ShellJoin({"echo", "a b", "it's", ""}),
            "echo 'a b' 'it'\\''s' ''");
  EXPECT_EQ(ShellJoin({"printf", "a\nb"}), "printf 'a'$'\\n''b'");
}

}  // namespace
}  // namespace onlyone::cli
