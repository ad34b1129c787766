// End-to-end tests of `onlyone run`, through the built binary with real
// processes: COMMAND run in onlyone's place (its pid recorded, the lock held
// across its own forks, signal mask and dispositions as onlyone got them),
// conflicts and their message, --conflict-exit-code, --wait, --on-conflict
// replace (reaching a command that ignores SIGTERM), --shared, exit status
// and signal pass-through, the supervisor of --max-runtime (signal
// forwarding, the lock outliving a SIGKILLed onlyone, --grace),
// interoperation with flock(1) and its spellings, usage errors (a stray word
// before "--", "did you mean") and help.
//
// The guarded commands are shell one-liners that write to descriptor 8 (a
// pipe the test reads) once they run under the lock, and block reading
// descriptor 9 (a pipe whose write end the test holds) until the test lets
// them go. No sleeps.

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "cli/exit_codes.h"
#include "onlyone/scoped_file_lock.h"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::LockedElsewhere;
using ::onlyone::testing::PassFd;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::Result;
using ::onlyone::testing::RunOnlyone;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::testing::ContainsRegex;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;
using ::testing::StartsWith;

// A sanitizer build (tools/test --config=asan|tsan): its runtime, a shared
// library, loads libstdc++.so into every instrumented program.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerRuntimeLoadsLibstdcxx = true;
#else
constexpr bool kSanitizerRuntimeLoadsLibstdcxx = false;
#endif

// Runs until the test closes descriptor 9; says "s" on 8 once running.
constexpr char kHold[] = "printf s >&8; exec cat <&9";

// Whether `fd` reaches end of file (every writer gone) within 10 seconds.
bool ReachesEndOfFile(int fd) {
  struct pollfd readable = {fd, POLLIN, 0};
  if (poll(&readable, 1, 10000) != 1) return false;
  char byte;
  return read(fd, &byte, 1) == 0;
}

// Whether the /proc/PID/status text has `signal_number` in its set `field`
// ("SigBlk").
bool HasSignal(const std::string& status, const std::string& field,
               int signal_number) {
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, field + ":\t")) continue;
    uint64_t set;
    return absl::SimpleHexAtoi(line, &set) &&
           (set >> (signal_number - 1) & 1) != 0;
  }
  return false;
}

// Copies what the test sends on 9 to 8, once it has been exec'd: the test
// knows cat runs (and not the shell before its exec) when its byte comes
// back (ExpectEcho()).
constexpr char kEcho[] = "exec cat <&9 >&8";

// Sends a byte to a command running kEcho (or a cat copying 9 to 8) and
// waits for it to come back.
void ExpectEcho(Pipe& to_command, Pipe& from_command) {
  to_command.Send('x');
  EXPECT_EQ(from_command.Receive(), 'x');
}

// Reads a line of digits (a pid a command wrote) from `pipe`.
std::string ReadPid(Pipe& pipe) {
  std::string pid;
  for (char c = pipe.Receive(); c >= '0' && c <= '9'; c = pipe.Receive()) {
    pid += c;
  }
  return pid;
}

// How a refusal names a holder that inherited the lock from `taker_pid`,
// which has exited: in the initial pid namespace the kernel still names the
// taker; in a pid namespace (a container, Bazel's sandbox) it hides it, and
// the owner record the taker left is what says so.
::testing::Matcher<std::string> NamesInheritor(const std::string& command,
                                               pid_t taker_pid) {
  return ::testing::AnyOf(
      HasSubstr(absl::StrCat(" (", command, ", inherited from pid ",
                             taker_pid, ", which no longer holds it)")),
      HasSubstr(absl::StrCat(" (", command, ", its owner record names pid ",
                             taker_pid,
                             ", which is not running, or is another process "
                             "now (start time differs))")));
}

class CliRunTest : public ::testing::Test {
 protected:
  // Starts `onlyone run FLAGS -- sh -c kHold` and waits until the command
  // runs under the lock.
  std::unique_ptr<Process> StartHolder(std::vector<std::string> flags,
                                       const std::vector<std::string>& env =
                                           {}) {
    flags.insert(flags.begin(), "run");
    flags.insert(flags.end(), {"--", "sh", "-c", kHold});
    std::unique_ptr<Process> holder = Process::StartOnlyone(
        flags, {{8, ready_.write_fd()}, {9, release_.read_fd()}}, env);
    EXPECT_EQ(ready_.Receive(), 's') << holder->err();
    return holder;
  }

  const std::string dir_ = onlyone::testing::MakeTempDir();
  const std::string lock_ = dir_ + "/job.lock";
  Pipe ready_;
  Pipe release_;
};

TEST_F(CliRunTest, RunsTheCommandUnderTheLock) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  EXPECT_TRUE(LockedElsewhere(lock_));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(holder->err(), "");
  EXPECT_FALSE(LockedElsewhere(lock_));
}

TEST_F(CliRunTest, CommandRunsInOnlyonesPlaceHoldingTheLockForItsLife) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  // The process started as onlyone is the command now (sh, which is about
  // to exec cat): no supervisor, and the kernel lists this very pid as
  // holding the lock.
  EXPECT_THAT(onlyone::testing::ReadFileOrEmpty(
                  absl::StrCat("/proc/", holder->pid(), "/comm")),
              ::testing::AnyOf("sh\n", "cat\n"));
  EXPECT_TRUE(onlyone::testing::WaitForHolder(lock_, holder->pid()));
  // The record names it, and is believed: same pid, same start time.
  Result status = RunOnlyone({"status", "--lock", lock_});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr(absl::StrCat("held by pid ",
                                                 holder->pid(), "\n")));
  EXPECT_THAT(status.out, HasSubstr("sh -c 'printf s >&8; exec cat <&9'"));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_FALSE(LockedElsewhere(lock_));
}

TEST_F(CliRunTest, LockStaysHeldAcrossTheCommandsOwnForks) {
  // sh starts cat in the background, says cat's pid, and exits at once: cat
  // keeps the lock it inherited.
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--lock", lock_, "--", "sh", "-c", "cat <&9 >&8 & echo $! >&8"},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  const std::string cat_pid = ReadPid(ready_);
  ASSERT_FALSE(cat_pid.empty()) << holder->err();
  ExpectEcho(release_, ready_);
  const pid_t sh_pid = holder->pid();
  EXPECT_EQ(holder->Wait(), 0) << holder->err();
  EXPECT_TRUE(LockedElsewhere(lock_));
  // The refusal names cat, which holds the lock now, not the pid that took
  // it and has exited.
  Result refused = RunOnlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  EXPECT_THAT(refused.err, MatchesRegex("onlyone: [^\n]*\n"));
  EXPECT_THAT(refused.err, StartsWith(absl::StrCat("onlyone: ", lock_,
                                                   " is held by pid ",
                                                   cat_pid, " (cat, ")));
  EXPECT_THAT(refused.err, NamesInheritor("cat", sh_pid));
  ready_.CloseWrite();
  release_.CloseWrite();  // cat ends
  EXPECT_TRUE(ReachesEndOfFile(ready_.read_fd()));
  EXPECT_EQ(onlyone::testing::RunShell("flock -w 10 " + lock_ + " true"), 0);
}

TEST_F(CliRunTest, CommandGetsTheSignalMaskAndIgnoredSignalsOnlyoneGot) {
  // The launcher blocks SIGUSR2 and ignores SIGUSR1 (both are inherited
  // across exec); onlyone waits for the lock (a timed wait, which uses a
  // signal of its own) and then runs grep, which shows what it got. It must
  // be what grep run directly by the same launcher gets.
  const std::string show = "grep -E '^Sig(Blk|Ign):' /proc/self/status";
  std::unique_ptr<Process> flock = Process::Start(
      {"/usr/bin/flock", lock_, "sh", "-c", kHold},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's');
  sigset_t block, saved;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &block, &saved), 0);
  std::unique_ptr<Process> direct =
      Process::Start({"/bin/sh", "-c", "trap '' USR1; exec " + show});
  std::unique_ptr<Process> run = Process::Start(
      {"/bin/sh", "-c",
       absl::StrCat("trap '' USR1; exec ", onlyone::testing::OnlyonePath(),
                    " run --lock ", lock_, " --wait 60s -- ", show)});
  ASSERT_EQ(pthread_sigmask(SIG_SETMASK, &saved, nullptr), 0);
  ASSERT_TRUE(WaitForBlockedWaiters(lock_)) << run->err();
  release_.CloseWrite();
  EXPECT_EQ(flock->Wait(), 0);
  EXPECT_EQ(direct->Wait(), 0) << direct->err();
  EXPECT_EQ(run->Wait(), 0) << run->err();
  EXPECT_TRUE(HasSignal(direct->out(), "SigBlk", SIGUSR2)) << direct->out();
  EXPECT_TRUE(HasSignal(direct->out(), "SigIgn", SIGUSR1)) << direct->out();
  EXPECT_EQ(run->out(), direct->out());
}

TEST_F(CliRunTest, TheSupervisorIsLinkedStatically) {
  // Start-up cost: libstdc++ is linked in statically (see //:onlyone).
  // --max-runtime keeps onlyone running beside the command.
  std::unique_ptr<Process> holder =
      StartHolder({"--lock", lock_, "--max-runtime", "1h"});
  const std::string maps = onlyone::testing::ReadFileOrEmpty(
      absl::StrCat("/proc/", holder->pid(), "/maps"));
  EXPECT_THAT(maps, HasSubstr("/libc.so"));
  if (!kSanitizerRuntimeLoadsLibstdcxx) {
    EXPECT_THAT(maps, Not(HasSubstr("libstdc++")));
  }
  EXPECT_EQ(onlyone::testing::ReadFileOrEmpty(
                absl::StrCat("/proc/", holder->pid(), "/comm")),
            "onlyone\n");
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, ConflictExits75WithOneLineNamingTheHolder) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  Result second = RunOnlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(second.code, 75);
  // One line: the lock, the holder's pid, since when, its command.
  EXPECT_THAT(second.err, MatchesRegex("onlyone: [^\n]*\n"));
  EXPECT_THAT(second.err, HasSubstr(lock_));
  EXPECT_THAT(second.err, HasSubstr(absl::StrCat("pid ", holder->pid())));
  EXPECT_THAT(second.err, ContainsRegex("20[0-9][0-9]-[0-9][0-9]-[0-9][0-9] "
                                        "[0-9][0-9]:[0-9][0-9]"));
  EXPECT_THAT(second.err, HasSubstr("sh -c"));
  EXPECT_THAT(second.err, HasSubstr("exec cat"));
  EXPECT_EQ(second.out, "");
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, ConflictExitCodeChangesTheCode) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  Result three = RunOnlyone(
      {"run", "--lock", lock_, "--conflict-exit-code", "3", "--", "true"});
  EXPECT_EQ(three.code, 3);
  EXPECT_THAT(three.err, HasSubstr(absl::StrCat("pid ", holder->pid())));

  // 0: a quiet skip for cron, silent unless --verbose.
  Result skip = RunOnlyone(
      {"run", "--lock", lock_, "--conflict-exit-code=0", "--", "true"});
  EXPECT_EQ(skip.code, 0);
  EXPECT_EQ(skip.err, "");
  Result told = RunOnlyone({"run", "--lock", lock_, "--conflict-exit-code=0",
                            "--verbose", "--", "true"});
  EXPECT_EQ(told.code, 0);
  EXPECT_THAT(told.err, HasSubstr(absl::StrCat("pid ", holder->pid())));

  Result quiet = RunOnlyone({"run", "--lock", lock_, "--quiet", "--", "true"});
  EXPECT_EQ(quiet.code, 75);
  EXPECT_EQ(quiet.err, "");
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, WaitRunsTheCommandOnceTheHolderReleases) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  Pipe ran;
  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"run", "--lock", lock_, "--wait", "60s", "--", "sh", "-c",
       "printf r >&8"},
      {{8, ran.write_fd()}});
  // The waiter is blocked in the kernel on the lock (not polling).
  ASSERT_TRUE(WaitForBlockedWaiters(lock_)) << waiter->err();
  EXPECT_EQ(ran.Receive(absl::ZeroDuration()), '\0');  // not yet
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(ran.Receive(), 'r');
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
}

TEST_F(CliRunTest, OnConflictWaitWaitsWithoutLimit) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"run", "--lock", lock_, "--on-conflict", "wait", "--", "true"});
  ASSERT_TRUE(WaitForBlockedWaiters(lock_)) << waiter->err();
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
}

TEST_F(CliRunTest, WaitGivesUpAfterItsDuration) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  const absl::Time start = absl::Now();
  Result late =
      RunOnlyone({"run", "--lock", lock_, "--wait", "300ms", "--", "true"});
  EXPECT_EQ(late.code, 75);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_THAT(late.err, HasSubstr(lock_));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, ReplaceStopsTheHolderAndRuns) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  Pipe ran;
  Result replacer = RunOnlyone({"run", "--lock", lock_, "--on-conflict",
                                "replace", "--grace", "10s", "--", "sh", "-c",
                                "printf r >&8"},
                               {{8, ran.write_fd()}});
  EXPECT_EQ(replacer.code, 0) << replacer.err;
  EXPECT_EQ(ran.Receive(), 'r');
  // The holder's onlyone got SIGTERM and forwarded it: cat died of it.
  EXPECT_EQ(holder->Wait(), 128 + SIGTERM);
}

TEST_F(CliRunTest, ReplaceReachesACommandThatIgnoresSigterm) {
  // In onlyone's place, the command is the recorded holder: SIGTERM is
  // ignored, and the SIGKILL after --grace reaches the command itself.
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--lock", lock_, "--", "sh", "-c",
       "trap '' TERM; printf s >&8; exec cat <&9"},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's') << holder->err();
  Pipe ran;
  Result replacer = RunOnlyone({"run", "--lock", lock_, "--on-conflict",
                                "replace", "--grace", "300ms", "--", "sh",
                                "-c", "printf r >&8"},
                               {{8, ran.write_fd()}});
  EXPECT_EQ(replacer.code, 0) << replacer.err;
  EXPECT_EQ(ran.Receive(), 'r');
  EXPECT_EQ(holder->Wait(), 128 + SIGKILL);
}

TEST_F(CliRunTest, ReplaceThatLeavesTheLockHeldSaysWhyInOneSentence) {
  // Under the supervisor (--max-runtime), the recorded holder is onlyone:
  // SIGKILL reaches it, and the command, which ignores SIGTERM, keeps the
  // lock it inherited. The replacer gives up naming the command.
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--lock", lock_, "--max-runtime", "1h", "--", "sh", "-c",
       absl::StrCat("trap '' TERM; echo $$ >&8; ", kEcho)},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  const std::string command_pid = ReadPid(ready_);
  ASSERT_FALSE(command_pid.empty()) << holder->err();
  ExpectEcho(release_, ready_);
  const pid_t supervisor_pid = holder->pid();
  Result replacer = RunOnlyone({"run", "--lock", lock_, "--on-conflict",
                                "replace", "--grace", "200ms", "--", "true"});
  EXPECT_EQ(replacer.code, 75);
  // Not reaped until now, the supervisor was a zombie that the kernel still
  // named as the lock's taker.
  EXPECT_EQ(replacer.err,
            absl::StrCat("onlyone: ", lock_, " is held by pid ", command_pid,
                         " (cat, inherited from pid ", supervisor_pid,
                         ", which no longer holds it); not replacing it: "
                         "stopped pid ",
                         supervisor_pid,
                         ", but processes it left running keep the lock it "
                         "passed on to them, and only a process that an "
                         "owner record names is signalled\n"));
  EXPECT_EQ(holder->Wait(), 128 + SIGKILL);
  // Asked again, it names the same process, and stops nothing.
  Result again = RunOnlyone(
      {"run", "--lock", lock_, "--on-conflict", "replace", "--", "true"});
  EXPECT_EQ(again.code, 75);
  EXPECT_THAT(again.err, MatchesRegex("onlyone: [^\n]*\n"));
  EXPECT_THAT(again.err, StartsWith(absl::StrCat("onlyone: ", lock_,
                                                 " is held by pid ",
                                                 command_pid, " (cat, ")));
  EXPECT_THAT(again.err, NamesInheritor("cat", supervisor_pid));
  EXPECT_THAT(again.err, HasSubstr("; not replacing it: "));
  EXPECT_TRUE(LockedElsewhere(lock_));
  ready_.CloseWrite();
  release_.CloseWrite();
  EXPECT_TRUE(ReachesEndOfFile(ready_.read_fd()));
}

TEST_F(CliRunTest, ReplaceRefusedIsAConflict) {
  // flock(1) writes no owner record: its pid cannot be verified as the
  // holder, so it is never signalled.
  std::unique_ptr<Process> flock = Process::Start(
      {"/usr/bin/flock", lock_, "sh", "-c", kHold},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's');
  Result refused = RunOnlyone(
      {"run", "--lock", lock_, "--on-conflict", "replace", "--", "true"});
  EXPECT_EQ(refused.code, 75);
  EXPECT_THAT(refused.err, HasSubstr(absl::StrCat("pid ", flock->pid())));
  EXPECT_THAT(refused.err, HasSubstr("not replacing it"));
  release_.CloseWrite();
  EXPECT_EQ(flock->Wait(), 0);
}

TEST_F(CliRunTest, ExitStatusPassesThrough) {
  EXPECT_EQ(RunOnlyone({"run", "--lock", lock_, "--", "sh", "-c", "exit 42"})
                .code,
            42);
  EXPECT_EQ(RunOnlyone({"run", "--lock", lock_, "--", "false"}).code, 1);
  // Without "--": the command starts at the first argument that is not a
  // flag, and its own flags are its own.
  EXPECT_EQ(
      RunOnlyone({"run", "--lock", lock_, "sh", "-c", "exit 5", "--help"})
          .code,
      5);
}

TEST_F(CliRunTest, DeathBySignalIs128PlusN) {
  EXPECT_EQ(
      RunOnlyone({"run", "--lock", lock_, "--", "sh", "-c", "kill -USR2 $$"})
          .code,
      128 + SIGUSR2);
}

TEST_F(CliRunTest, CommandNotFoundAndNotExecutable) {
  Result missing =
      RunOnlyone({"run", "--lock", lock_, "--", "onlyone-no-such-program"});
  EXPECT_EQ(missing.code, 127);
  EXPECT_THAT(missing.err,
              HasSubstr("onlyone-no-such-program: command not found"));
  Result directory = RunOnlyone({"run", "--lock", lock_, "--", dir_});
  EXPECT_EQ(directory.code, 126);
  EXPECT_THAT(directory.err, HasSubstr("cannot execute"));
  // Neither left the lock held.
  EXPECT_FALSE(LockedElsewhere(lock_));
}

TEST_F(CliRunTest, ACommandThatCannotRunIsFoundOutBeforeTakingTheLock) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  // 127, not 75: the lock is never taken for a command that is not there.
  Result missing =
      RunOnlyone({"run", "--lock", lock_, "--", "onlyone-no-such-program"});
  EXPECT_EQ(missing.code, 127);
  EXPECT_EQ(missing.err,
            "onlyone: onlyone-no-such-program: command not found\n");
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, AnExecThatFailsAfterTheLockIsTakenExits126AndFreesIt) {
  // Executable, but not a program the kernel can run: found, then exec(2)
  // fails with ENOEXEC once the lock is held; exiting releases it.
  const std::string garbage = dir_ + "/garbage";
  {
    const int fd = open(garbage.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "\x7f" "ELF-not-really", 15), 15);
    close(fd);
  }
  Result result = RunOnlyone({"run", "--lock", lock_, "--", garbage});
  EXPECT_EQ(result.code, 126);
  EXPECT_EQ(result.err,
            absl::StrCat("onlyone: ", garbage,
                         ": cannot execute: Exec format error\n"));
  EXPECT_FALSE(LockedElsewhere(lock_));
}

class CliRunSignalTest : public CliRunTest,
                         public ::testing::WithParamInterface<int> {};

TEST_P(CliRunSignalTest, SignalReachesTheCommandInOnlyonesPlace) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  holder->Kill(GetParam());
  // onlyone is cat now: cat dies of the signal, its own status.
  EXPECT_EQ(holder->Wait(), 128 + GetParam()) << holder->err();
  EXPECT_FALSE(LockedElsewhere(lock_));
}

TEST_P(CliRunSignalTest, SupervisorForwardsTheSignalToTheCommand) {
  std::unique_ptr<Process> holder =
      StartHolder({"--lock", lock_, "--max-runtime", "1h"});
  holder->Kill(GetParam());
  // onlyone survives the signal, forwards it; cat dies of it; the status
  // passes through.
  EXPECT_EQ(holder->Wait(), 128 + GetParam()) << holder->err();
  ready_.CloseWrite();
  EXPECT_TRUE(ReachesEndOfFile(ready_.read_fd()));  // cat is gone
  EXPECT_FALSE(LockedElsewhere(lock_));
}

INSTANTIATE_TEST_SUITE_P(Signals, CliRunSignalTest,
                         ::testing::Values(SIGINT, SIGTERM, SIGHUP, SIGQUIT));

TEST_F(CliRunTest, LockOutlivesAKilledSupervisorUntilTheCommandEnds) {
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--lock", lock_, "--max-runtime", "1h", "--", "sh", "-c", kEcho},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ExpectEcho(release_, ready_);
  const pid_t supervisor_pid = holder->pid();
  holder->Kill(SIGKILL);
  EXPECT_EQ(holder->Wait(), 128 + SIGKILL);
  // cat still runs, and holds the lock it inherited.
  EXPECT_TRUE(LockedElsewhere(lock_));
  EXPECT_EQ(onlyone::testing::RunShell("flock -n " + lock_ + " true"), 1);
  Result refused = RunOnlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  EXPECT_THAT(refused.err, NamesInheritor("cat", supervisor_pid));
  ready_.CloseWrite();
  release_.CloseWrite();  // cat ends
  EXPECT_TRUE(ReachesEndOfFile(ready_.read_fd()));
  // The kernel drops cat's lock as cat's exit completes, just after the
  // pipe's end of file: wait for it in the kernel (flock -w), not by
  // polling.
  EXPECT_EQ(onlyone::testing::RunShell("flock -w 10 " + lock_ + " true"), 0);
}

TEST_F(CliRunTest, CommandFindsTheInheritedLockInItsEnvironment) {
  Pipe report;
  Result result = RunOnlyone(
      {"run", "--lock", lock_, "--", "sh", "-c",
       "printf '%s\\n' \"$ONLYONE_INHERITED_LOCKS\" >&8"},
      {{8, report.write_fd()}});
  ASSERT_EQ(result.code, 0) << result.err;
  report.CloseWrite();
  const std::string value = report.ReadAll();
  struct stat file;
  ASSERT_EQ(stat(lock_.c_str(), &file), 0);
  // FD:DEVICE:INODE:x
  EXPECT_THAT(value, MatchesRegex(absl::StrCat("[0-9]+:", file.st_dev, ":",
                                               file.st_ino, ":x\n")));
}

// Re-executed by CommandCanAdoptTheInheritedLock as the guarded command:
// adopts the lock with ScopedFileLock::AdoptInherited and reports 'y' on
// descriptor 8.
TEST(CliExecChild, AdoptInherited) {
  const char* path = std::getenv("ONLYONE_CLI_TEST_ADOPT_PATH");
  if (path == nullptr) GTEST_SKIP() << "only run as onlyone's command";
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::AdoptInherited(path);
  const char verdict = lock.ok() && lock->held() ? 'y' : 'n';
  ASSERT_EQ(write(8, &verdict, 1), 1);
  ASSERT_TRUE(lock.ok()) << lock.status();
}

TEST_F(CliRunTest, CommandCanAdoptTheInheritedLock) {
  const std::string self = onlyone::testing::TestBinaryPath();
  ASSERT_FALSE(self.empty());
  Pipe report;
  Result result = RunOnlyone(
      {"run", "--lock", lock_, "--", self,
       "--gtest_filter=CliExecChild.AdoptInherited"},
      {{8, report.write_fd()}}, {"ONLYONE_CLI_TEST_ADOPT_PATH=" + lock_});
  EXPECT_EQ(report.Receive(), 'y');
  EXPECT_EQ(result.code, 0) << result.out << result.err;
}

TEST_F(CliRunTest, MaxRuntimeStopsTheCommandAndExits124) {
  const absl::Time start = absl::Now();
  Result result = RunOnlyone({"run", "--lock", lock_, "--max-runtime",
                              "200ms", "--", "sh", "-c", "exec cat <&9"},
                             {{9, release_.read_fd()}});
  EXPECT_EQ(result.code, 124);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_THAT(result.err, HasSubstr("ran longer than 200ms (--max-runtime)"));
  EXPECT_FALSE(LockedElsewhere(lock_));
}

TEST_F(CliRunTest, CommandIgnoringSigtermIsKilledAfterGrace) {
  const absl::Time start = absl::Now();
  Result result = RunOnlyone(
      {"run", "--lock", lock_, "--max-runtime", "0.1", "--grace", "300ms",
       "--", "sh", "-c", "trap '' TERM; printf s >&8; exec cat <&9"},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  EXPECT_EQ(ready_.Receive(absl::ZeroDuration()), 's');
  EXPECT_EQ(result.code, 124);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(400));
  EXPECT_THAT(result.err, HasSubstr("sending SIGKILL"));
  // cat died of SIGKILL: the pipe it wrote to is closed.
  ready_.CloseWrite();
  EXPECT_TRUE(ReachesEndOfFile(ready_.read_fd()));
}

TEST_F(CliRunTest, FlockCannotTakeALockHeldByOnlyone) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  EXPECT_EQ(onlyone::testing::RunShell("flock -n " + lock_ + " true"), 1);
  EXPECT_EQ(onlyone::testing::RunShell("flock -n -s " + lock_ + " true"), 1);
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(onlyone::testing::RunShell("flock -n " + lock_ + " true"), 0);
}

TEST_F(CliRunTest, OnlyoneCannotTakeALockHeldByFlock) {
  std::unique_ptr<Process> flock = Process::Start(
      {"/usr/bin/flock", lock_, "sh", "-c", kHold},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's');
  Result refused = RunOnlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  // flock(1) writes no owner record; the kernel names its pid, /proc its
  // command line.
  EXPECT_EQ(refused.err,
            absl::StrCat("onlyone: ", lock_, " is held by pid ", flock->pid(),
                         " (/usr/bin/flock ", lock_, " sh -c ", kHold,
                         ", no owner record)\n"));
  Result shared =
      RunOnlyone({"run", "--lock", lock_, "--shared", "--", "true"});
  EXPECT_EQ(shared.code, 75);
  release_.CloseWrite();
  EXPECT_EQ(flock->Wait(), 0);
  EXPECT_EQ(RunOnlyone({"run", "--lock", lock_, "--", "true"}).code, 0);
}

TEST_F(CliRunTest, SharedHoldersRunTogetherAndExcludeExclusive) {
  std::unique_ptr<Process> first = StartHolder({"--lock", lock_, "--shared"});
  // A second shared holder runs alongside, and so does flock -s.
  EXPECT_EQ(
      RunOnlyone({"run", "--lock", lock_, "--shared", "--", "true"}).code, 0);
  EXPECT_EQ(onlyone::testing::RunShell("flock -n -s " + lock_ + " true"), 0);
  // An exclusive one is refused, by onlyone and by flock.
  Result exclusive = RunOnlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(exclusive.code, 75);
  EXPECT_THAT(exclusive.err, HasSubstr(absl::StrCat("pid ", first->pid())));
  EXPECT_EQ(onlyone::testing::RunShell("flock -n " + lock_ + " true"), 1);
  release_.CloseWrite();
  EXPECT_EQ(first->Wait(), 0);
}

TEST_F(CliRunTest, SharedIsRefusedWhileExclusiveIsHeld) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  Result shared =
      RunOnlyone({"run", "--lock", lock_, "--shared", "--", "true"});
  EXPECT_EQ(shared.code, 75);
  EXPECT_THAT(shared.err, HasSubstr(absl::StrCat("pid ", holder->pid())));
  EXPECT_THAT(shared.err, HasSubstr("exec cat"));  // from the owner record
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, NamedLocksLiveInTheUserScopeDirectory) {
  const onlyone::testing::ScopedTestRoot root;
  const std::vector<std::string> env = {};
  std::unique_ptr<Process> holder = StartHolder({"--name", "nightly"}, env);
  EXPECT_TRUE(LockedElsewhere(root.UserDirectory() + "/nightly.lock"));
  Result second =
      RunOnlyone({"run", "--name", "nightly", "--", "true"}, {}, env);
  EXPECT_EQ(second.code, 75);
  EXPECT_THAT(second.err, HasSubstr("nightly"));
  EXPECT_THAT(second.err, HasSubstr(absl::StrCat("pid ", holder->pid())));
  // Another name is another lock.
  EXPECT_EQ(RunOnlyone({"run", "--name", "daily", "--", "true"}, {}, env).code,
            0);
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, WithoutNameTheCommandsBaseNameIsTheName) {
  const onlyone::testing::ScopedTestRoot root;
  const std::vector<std::string> env = {};
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--", "/bin/sh", "-c", kHold},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}}, env);
  ASSERT_EQ(ready_.Receive(), 's') << holder->err();
  EXPECT_TRUE(LockedElsewhere(root.UserDirectory() + "/sh.lock"));
  EXPECT_EQ(RunOnlyone({"run", "--", "sh", "-c", "true"}, {}, env).code, 75);
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliRunTest, VerboseSaysWhatHappens) {
  Result in_place =
      RunOnlyone({"run", "--lock", lock_, "--verbose", "--", "sh", "-c",
                  "exit 3"});
  EXPECT_EQ(in_place.code, 3);
  EXPECT_THAT(in_place.err, HasSubstr("holding " + lock_));
  EXPECT_THAT(in_place.err, HasSubstr("running sh -c 'exit 3' in place of "
                                      "onlyone, as pid "));
  Result supervised =
      RunOnlyone({"run", "--lock", lock_, "--verbose", "--max-runtime", "1h",
                  "--", "sh", "-c", "exit 3"});
  EXPECT_EQ(supervised.code, 3);
  EXPECT_THAT(supervised.err, HasSubstr("holding " + lock_));
  EXPECT_THAT(supervised.err, HasSubstr("exited with status 3"));
}

TEST_F(CliRunTest, FlockSpellingsMeanWhatTheyMeanToFlock) {
  std::unique_ptr<Process> holder = StartHolder({"--lock", lock_});
  // -n: fail at once; -E N: the conflict's exit code, also attached.
  EXPECT_EQ(RunOnlyone({"run", "-n", "--lock", lock_, "--", "true"}).code,
            75);
  EXPECT_EQ(
      RunOnlyone({"run", "-n", "-E", "3", "--lock", lock_, "--", "true"}).code,
      3);
  EXPECT_EQ(RunOnlyone({"run", "-E3", "--lock", lock_, "--", "true"}).code, 3);
  // -w SECONDS: wait that long (fractions too), also attached.
  const absl::Time start = absl::Now();
  Result late = RunOnlyone({"run", "-w", "0.2", "--lock", lock_, "--", "true"});
  EXPECT_EQ(late.code, 75);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_THAT(late.err, HasSubstr("gave up after waiting 200ms"));
  EXPECT_EQ(RunOnlyone({"run", "-w0", "--lock", lock_, "--", "true"}).code,
            75);
  // -s: shared, refused by the exclusive holder.
  EXPECT_EQ(RunOnlyone({"run", "-s", "--lock", lock_, "--", "true"}).code, 75);
  Pipe ran;
  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"run", "-w", "60", "--lock", lock_, "--", "sh", "-c", "printf r >&8"},
      {{8, ran.write_fd()}});
  ASSERT_TRUE(WaitForBlockedWaiters(lock_)) << waiter->err();
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(ran.Receive(), 'r');
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
}

TEST_F(CliRunTest, FlockSharedAndExclusiveSpellings) {
  std::unique_ptr<Process> shared = StartHolder({"--lock", lock_, "-s"});
  EXPECT_EQ(RunOnlyone({"run", "-s", "--lock", lock_, "--", "true"}).code, 0);
  // -x and -e: exclusive (the default), refused beside a shared holder;
  // the last of -s and -x wins, as a repeated flag does.
  EXPECT_EQ(RunOnlyone({"run", "-x", "--lock", lock_, "--", "true"}).code, 75);
  EXPECT_EQ(RunOnlyone({"run", "-e", "--lock", lock_, "--", "true"}).code, 75);
  EXPECT_EQ(
      RunOnlyone({"run", "-s", "-x", "--lock", lock_, "--", "true"}).code, 75);
  EXPECT_EQ(
      RunOnlyone({"run", "-x", "-s", "--lock", lock_, "--", "true"}).code, 0);
  release_.CloseWrite();
  EXPECT_EQ(shared->Wait(), 0);
}

TEST_F(CliRunTest, AWordBeforeDoubleDashIsNeverRun) {
  // "minutes" is not taken for COMMAND (it would exit 127): usage error.
  Pipe ran;
  Result result = RunOnlyone({"run", "--wait", "10", "minutes", "--lock",
                              lock_, "--", "sh", "-c", "printf r >&8"},
                             {{8, ran.write_fd()}});
  EXPECT_EQ(result.code, 64);
  EXPECT_THAT(result.err,
              StartsWith("onlyone run: stray \"minutes\" before \"--\": it "
                         "is neither a flag nor a flag's value (--wait took "
                         "\"10\" as its value); COMMAND goes after \"--\"\n"));
  ran.CloseWrite();
  EXPECT_EQ(ran.ReadAll(), "");
  struct stat ignored;
  EXPECT_NE(stat(lock_.c_str(), &ignored), 0);  // nothing was locked
}

struct UsageCase {
  std::vector<std::string> args;
  std::string message;
};

class CliUsageTest : public ::testing::TestWithParam<UsageCase> {};

TEST_P(CliUsageTest, Exits64WithAMessage) {
  Result result = RunOnlyone(GetParam().args);
  EXPECT_EQ(result.code, 64) << result.err;
  EXPECT_THAT(result.err, HasSubstr(GetParam().message));
  EXPECT_THAT(result.err, HasSubstr("--help"));
  EXPECT_EQ(result.out, "");
}

INSTANTIATE_TEST_SUITE_P(
    BadCommandLines, CliUsageTest,
    ::testing::Values(
        UsageCase{{}, "missing command"},
        UsageCase{{"launch"}, "unknown command \"launch\""},
        UsageCase{{"--lock", "x", "run"}, "expected a command"},
        UsageCase{{"run", "--bogus", "--", "true"},
                  "onlyone run: unknown flag \"--bogus\""},
        UsageCase{{"run", "--lock", "/tmp/x.lock"}, "missing COMMAND"},
        UsageCase{{"run", "--lock", "/tmp/x.lock", "--"}, "missing COMMAND"},
        UsageCase{{"run", "--name", "a/b", "--", "true"},
                  "--name: instance name \"a/b\" has character '/' at "
                  "position 2"},
        UsageCase{{"run", "--name", "..", "--", "true"},
                  "instance name \"..\" is not allowed"},
        UsageCase{{"run", "--name", std::string(201, 'n'), "--", "true"},
                  "the limit is 200"},
        UsageCase{{"run", "--name", "", "--", "true"},
                  "instance name is empty"},
        UsageCase{{"status", "--name", "a b"},
                  "at position 2; names may contain only letters, digits, "
                  "'.', '_' and '-' (use --lock PATH for a lock file "
                  "elsewhere)"},
        UsageCase{{"run", "--", "/opt/.."},
                  "cannot make a lock name of COMMAND \"/opt/..\"; give "
                  "--name NAME or --lock PATH"},
        UsageCase{{"run", "--name", "a", "--lock", "/tmp/a", "--", "true"},
                  "not both"},
        UsageCase{{"run", "--lock", "/tmp/a", "--scope", "user", "--", "true"},
                  "--scope applies to --name only"},
        UsageCase{{"run", "--scope", "planet", "--", "true"},
                  "--scope: invalid value \"planet\": expected user, session "
                  "or machine"},
        UsageCase{{"run", "--wait", "soon", "--", "true"},
                  "--wait: invalid value \"soon\": not a duration"},
        UsageCase{{"run", "--wait", "-5s", "--", "true"}, "negative"},
        UsageCase{{"run", "--max-runtime"}, "--max-runtime needs a value"},
        UsageCase{{"run", "--on-conflict", "kill", "--", "true"},
                  "expected fail, wait or replace"},
        UsageCase{{"run", "--on-conflict", "fail", "--wait", "1s", "--",
                   "true"},
                  "--wait goes with --on-conflict wait"},
        UsageCase{{"run", "--conflict-exit-code", "256", "--", "true"},
                  "use 0 to 255"},
        UsageCase{{"run", "--conflict-exit-code", "x", "--", "true"},
                  "expected an integer"},
        UsageCase{{"run", "--shared", "--on-conflict", "replace", "--",
                   "true"},
                  "--shared cannot be combined with --on-conflict replace"},
        UsageCase{{"run", "--quiet", "--verbose", "--", "true"},
                  "exclude each other"},
        UsageCase{{"run", "--json", "--", "true"},
                  "--json is not a flag of 'onlyone run'"},
        UsageCase{{"status"}, "needs --name NAME or --lock PATH"},
        UsageCase{{"status", "--name", "x", "extra"},
                  "unexpected argument \"extra\""},
        UsageCase{{"list", "--wait", "5s"},
                  "--wait is not a flag of 'onlyone list'"},
        UsageCase{{"wait", "--lock", "/tmp/a", "--timeout", "later"},
                  "--timeout: invalid value \"later\""},
        UsageCase{{"help", "launch"}, "unknown command \"launch\""},
        UsageCase{{"run", "--name", "x", "echo", "--", "hi"},
                  "stray \"echo\" before \"--\""},
        UsageCase{{"run", "--wiat", "5", "--", "true"},
                  "unknown flag \"--wiat\"; did you mean --wait?"},
        UsageCase{{"run", "--max-run-time=5", "--", "true"},
                  "did you mean --max-runtime?"},
        UsageCase{{"status", "--jsno"}, "did you mean --json?"},
        UsageCase{{"run", "-q", "--", "true"}, "unknown flag \"-q\""},
        UsageCase{{"run", "-c", "true"},
                  "-c is not a flag of 'onlyone run': give COMMAND after "
                  "\"--\""},
        UsageCase{{"run", "-o", "--", "true"}, "--close is not supported"},
        UsageCase{{"run", "-u", "--", "true"}, "never unlocks"},
        UsageCase{{"run", "-F", "--", "true"},
                  "COMMAND runs in onlyone's own process already"},
        UsageCase{{"run", "--timeout", "5", "--", "true"},
                  "did you mean --wait DURATION?"},
        UsageCase{{"run", "-w"}, "-w needs a value (SECONDS)"},
        UsageCase{{"run", "-w", "soon", "--", "true"},
                  "-w: invalid value \"soon\""},
        UsageCase{{"run", "-E", "300", "--", "true"}, "use 0 to 255"},
        UsageCase{{"run", "-n", "--on-conflict", "replace", "--", "true"},
                  "--wait goes with --on-conflict wait"}));

TEST(CliHelpTest, HelpIsCompleteAndExits0) {
  Result help = RunOnlyone({"--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_EQ(help.err, "");
  for (const char* text :
       {"onlyone run", "onlyone status", "onlyone list", "onlyone wait",
        "--name NAME", "--lock PATH", "--scope user|session|machine",
        "--wait DURATION", "--on-conflict fail|wait|replace",
        "--conflict-exit-code N", "--shared", "--grace DURATION",
        "--max-runtime DURATION", "--quiet", "--verbose", "--json",
        "--timeout DURATION", "--slots N", "Exit codes:", "  64 ", "  69 ",
        "  70 ", "  71 ", "  75 ", "  124 ", "  126 ", "  127 ", "  128+N ",
        "DURATION:", "crontab"}) {
    EXPECT_THAT(help.out, HasSubstr(text));
  }
  // The exit codes are cli/exit_codes.h's table, each code with its text.
  for (const cli::ExitCodeRow& row : cli::kExitCodeTable) {
    const std::string code =
        row.shown != nullptr ? row.shown : absl::StrCat(row.code);
    const std::string when(row.when);
    EXPECT_THAT(help.out,
                HasSubstr(absl::StrCat("\n  ", code,
                                       std::string(7 - code.size(), ' '),
                                       when.substr(0, when.find(' ', 20)))))
        << code;
  }
  EXPECT_EQ(RunOnlyone({"-h"}).out, help.out);
  EXPECT_EQ(RunOnlyone({"help"}).out, help.out);
}

TEST(CliHelpTest, RunHelpIsComplete) {
  Result help = RunOnlyone({"run", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, StartsWith("Usage: onlyone run"));
  for (const char* text :
       {"--name NAME", "--lock PATH", "--scope user|session|machine",
        "--wait DURATION", "--on-conflict fail|wait|replace",
        "--conflict-exit-code N", "--shared", "--grace DURATION",
        "--max-runtime DURATION", "--quiet", "--verbose", "(default: 75)",
        "--slots N", "at most N copies run at once",
        "(default: 5s)", "ONLYONE_INHERITED_LOCKS", "Exit codes:", "  124 ",
        "  127 ", "COMMAND runs in onlyone's place",
        "Only --max-runtime needs onlyone to stay", "-n (--wait 0)",
        "-w SECONDS (--wait)", "-E N", "-s (--shared)", "with \"--\", any other word before it is an error",
        "it says whom it waits for"}) {
    EXPECT_THAT(help.out, HasSubstr(text));
  }
  EXPECT_THAT(help.out, Not(HasSubstr("--json")));
  EXPECT_EQ(RunOnlyone({"help", "run"}).out, help.out);
  EXPECT_EQ(RunOnlyone({"run", "-h"}).out, help.out);
}

TEST(CliHelpTest, EachCommandHasHelp) {
  for (const char* command : {"status", "list", "wait"}) {
    Result help = RunOnlyone({command, "--help"});
    EXPECT_EQ(help.code, 0) << command;
    EXPECT_THAT(help.out, StartsWith(absl::StrCat("Usage: onlyone ",
                                                  command)));
  }
}

}  // namespace
}  // namespace onlyone
