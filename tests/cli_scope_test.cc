// End-to-end tests of where `onlyone run --name` keeps its lock, through the
// built binary: one lock per (user, name) whether the copy was started from
// cron (no runtime directory), a login shell, or a session whose runtime
// directory appears or is wiped while the first copy runs; the machine scope
// for an ordinary user on a machine where nothing was prepared; and lock
// files that hold someone's data.
//
// Every test has a machine of its own (ScopedTestRoot). Holders are `onlyone
// run` processes whose command blocks reading a pipe the test holds, as in
// cli_run_test.cc. No sleeps.

#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::kNobodyUid;
using ::onlyone::testing::LockedElsewhere;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::MakeTempDirOtherUsersCanReach;
using ::onlyone::testing::OnlyonePath;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::ReadFileOrEmpty;
using ::onlyone::testing::RemoveTree;
using ::onlyone::testing::Result;
using ::onlyone::testing::RunShell;
using ::onlyone::testing::ScopedTestRoot;
using ::testing::HasSubstr;

constexpr char kHold[] = "printf s >&8; exec cat <&9";

// How a copy was started: the environment it sees.
struct Start {
  // Prefix of the command line: /usr/bin/env with the variables it unsets or
  // sets, or nothing.
  std::vector<std::string> prefix;
};

// Like cron: no runtime directory, no session, a minimal PATH.
Start Cron() {
  return {{"/usr/bin/env", "-u", "XDG_RUNTIME_DIR", "-u", "XDG_SESSION_ID",
           "-u", "DBUS_SESSION_BUS_ADDRESS", "PATH=/usr/bin:/bin"}};
}

// Like a login shell: a runtime directory and a session id.
Start LoginShell(const std::string& runtime_directory,
                 const std::string& session = "3") {
  return {{"/usr/bin/env", "XDG_RUNTIME_DIR=" + runtime_directory,
           "XDG_SESSION_ID=" + session}};
}

std::vector<std::string> CommandLine(const Start& start,
                                     const std::vector<std::string>& args,
                                     const std::string& onlyone =
                                         OnlyonePath()) {
  std::vector<std::string> argv = start.prefix;
  argv.push_back(onlyone);
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

Result RunAs(const Start& start, const std::vector<std::string>& args,
           const std::string& onlyone = OnlyonePath()) {
  std::unique_ptr<Process> process =
      Process::Start(CommandLine(start, args, onlyone));
  Result result;
  result.code = process->Wait();
  result.out = process->out();
  result.err = process->err();
  return result;
}

class CliScopeTest : public ::testing::Test {
 protected:
  // Starts `onlyone run ARGS -- sh -c HOLD` and waits until the command
  // runs.
  std::unique_ptr<Process> StartHolder(
      const Start& start, std::vector<std::string> args,
      const std::string& onlyone = OnlyonePath()) {
    args.insert(args.begin(), "run");
    args.insert(args.end(), {"--", "sh", "-c", kHold});
    std::unique_ptr<Process> holder =
        Process::Start(CommandLine(start, args, onlyone),
                       {{8, ready_.write_fd()}, {9, release_.read_fd()}});
    EXPECT_EQ(ready_.Receive(), 's') << holder->err();
    return holder;
  }

  void ReleaseHolder(std::unique_ptr<Process>& holder) {
    release_.CloseWrite();
    EXPECT_EQ(holder->Wait(), 0) << holder->err();
  }

  const ScopedTestRoot root_;
  const std::string job_lock_ = root_.UserDirectory() + "/job.lock";
  Pipe ready_, release_;
};

TEST_F(CliScopeTest, CronAndALoginShellShareOneLock) {
  const std::string runtime = MakeTempDir();
  ASSERT_EQ(chmod(runtime.c_str(), 0700), 0);
  std::unique_ptr<Process> from_cron = StartHolder(Cron(), {"--name", "job"});
  EXPECT_TRUE(LockedElsewhere(job_lock_));

  Result from_shell =
      RunAs(LoginShell(runtime), {"run", "--name", "job", "--", "true"});
  EXPECT_EQ(from_shell.code, 75) << from_shell.err;
  EXPECT_THAT(from_shell.err,
              HasSubstr(absl::StrCat("onlyone: job is already running (pid ",
                                     from_cron->pid())));
  for (const Start& start : {Cron(), LoginShell(runtime, "9")}) {
    Result status = RunAs(start, {"status", "--name", "job"});
    EXPECT_EQ(status.code, 0) << status.out << status.err;
    EXPECT_THAT(status.out, HasSubstr(job_lock_));
    EXPECT_THAT(status.out,
                HasSubstr(absl::StrCat("held by pid ", from_cron->pid())));
    Result list = RunAs(start, {"list"});
    EXPECT_THAT(list.out, HasSubstr("job "));
    EXPECT_THAT(list.out, HasSubstr(absl::StrCat(from_cron->pid())));
  }
  ReleaseHolder(from_cron);
  // Nothing of ours in the runtime directory.
  EXPECT_EQ(RunShell(absl::StrCat("test -z \"$(ls -A '", runtime, "')\"")), 0);
}

TEST_F(CliScopeTest, ARuntimeDirectoryThatAppearsOrIsWipedChangesNothing) {
  // Cron started the job before the user logged in: the runtime directory
  // did not exist yet.
  const std::string runtime = MakeTempDir() + "/run-user-1000";
  std::unique_ptr<Process> first =
      StartHolder(LoginShell(runtime), {"--name", "job"});
  // The user logs in: the directory appears. The next run is refused.
  ASSERT_EQ(mkdir(runtime.c_str(), 0700), 0);
  Result next = RunAs(LoginShell(runtime), {"run", "--name", "job", "--", "true"});
  EXPECT_EQ(next.code, 75) << next.err;
  EXPECT_THAT(next.err, HasSubstr(absl::StrCat("(pid ", first->pid())));
  // The user logs out: logind removes the runtime directory; it comes back
  // at the next login. The lock was never in it.
  ASSERT_EQ(RunShell(absl::StrCat("rm -rf '", runtime, "'")), 0);
  ASSERT_EQ(mkdir(runtime.c_str(), 0700), 0);
  for (const Start& start : {LoginShell(runtime), Cron()}) {
    Result again = RunAs(start, {"run", "--name", "job", "--", "true"});
    EXPECT_EQ(again.code, 75) << again.err;
    Result waited = RunAs(start, {"wait", "--name", "job", "--timeout", "0"});
    EXPECT_EQ(waited.code, 75) << waited.err;
  }
  EXPECT_TRUE(LockedElsewhere(job_lock_));
  ReleaseHolder(first);
  Result free_now = RunAs(Cron(), {"status", "--name", "job"});
  EXPECT_EQ(free_now.code, 1) << free_now.out << free_now.err;
  EXPECT_THAT(free_now.out, HasSubstr("free"));
}

TEST_F(CliScopeTest, AnOrdinaryUserOnAFreshMachineGetsEveryScope) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run as nobody";
  // nobody cannot reach the test's runfiles: run a copy of the binary.
  const std::string bin = MakeTempDirOtherUsersCanReach();
  const std::string onlyone = bin + "/onlyone";
  ASSERT_EQ(RunShell(absl::StrCat("cp '", OnlyonePath(), "' '", onlyone, "'")),
            0);
  const Start as_nobody = {{"/usr/bin/setpriv", "--reuid=65534",
                            "--regid=65534", "--clear-groups", "/usr/bin/env",
                            "-u", "XDG_RUNTIME_DIR", "HOME=/nonexistent"}};
  // Nothing exists below the machine's /run/lock yet.
  std::unique_ptr<Process> machine_holder = StartHolder(
      as_nobody, {"--name", "job", "--scope", "machine"}, onlyone);
  const std::string machine_lock = root_("/run/lock/onlyone.job.lock");
  struct stat info;
  ASSERT_EQ(lstat(machine_lock.c_str(), &info), 0);
  EXPECT_EQ(info.st_uid, kNobodyUid);
  EXPECT_EQ(info.st_mode & 07777, 0666u);
  // Root's copy is refused, naming nobody's.
  Result root_copy =
      RunAs(Start{}, {"run", "--name", "job", "--scope", "machine", "--", "true"});
  EXPECT_EQ(root_copy.code, 75) << root_copy.err;
  EXPECT_THAT(root_copy.err,
              HasSubstr(absl::StrCat("job is already running (pid ",
                                     machine_holder->pid())));
  EXPECT_THAT(root_copy.err, HasSubstr("sh -c"));
  // nobody's user scope, in a directory of its own made on first use.
  Result user_scope =
      RunAs(as_nobody, {"run", "--name", "job", "--", "true"}, onlyone);
  EXPECT_EQ(user_scope.code, 0) << user_scope.err;
  const std::string nobody_dir = root_("/run/lock/onlyone-65534");
  ASSERT_EQ(lstat(nobody_dir.c_str(), &info), 0);
  EXPECT_EQ(info.st_uid, kNobodyUid);
  EXPECT_EQ(info.st_mode & 07777, 0700u);
  ReleaseHolder(machine_holder);
  RemoveTree(bin);
}

TEST_F(CliScopeTest, ALockFileHoldingDataIsLockedAndLeftAsItIs) {
  const std::string dir = MakeTempDir();
  const std::string data = dir + "/data";
  std::string precious;
  for (int i = 0; precious.size() < 13512; ++i) {
    absl::StrAppend(&precious, "row ", i, "\n");
  }
  {
    FILE* file = fopen(data.c_str(), "w");
    ASSERT_NE(file, nullptr);
    fwrite(precious.data(), 1, precious.size(), file);
    fclose(file);
  }
  std::unique_ptr<Process> holder = StartHolder(Start{}, {"--lock", data});
  EXPECT_TRUE(LockedElsewhere(data));
  Result status = RunAs(Start{}, {"status", "--lock", data});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr(absl::StrCat("held by pid ", holder->pid(),
                                                 " (no owner record: the file "
                                                 "holds other data")));
  ReleaseHolder(holder);
  EXPECT_EQ(ReadFileOrEmpty(data), precious);
}

// flock(1)'s idiom: a script that locks its own file.
TEST_F(CliScopeTest, AScriptCanLockItself) {
  const std::string dir = MakeTempDir();
  const std::string script = dir + "/job.sh";
  const std::string text = "#!/bin/sh\necho job ran\n";
  {
    FILE* file = fopen(script.c_str(), "w");
    ASSERT_NE(file, nullptr);
    fputs(text.c_str(), file);
    fclose(file);
  }
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  Result ran = RunAs(Start{}, {"run", "--lock", script, "--", script});
  EXPECT_EQ(ran.code, 0) << ran.err;
  EXPECT_EQ(ran.out, "job ran\n");
  EXPECT_EQ(ReadFileOrEmpty(script), text);
}

TEST_F(CliScopeTest, ASharedRunUsesTheScopesFileMode) {
  std::unique_ptr<Process> holder =
      StartHolder(Start{}, {"--name", "job", "--shared"});
  struct stat info;
  ASSERT_EQ(lstat(job_lock_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u);
  // Another shared copy runs beside it; an exclusive one is refused.
  EXPECT_EQ(
      RunAs(Start{}, {"run", "--name", "job", "--shared", "--", "true"}).code, 0);
  EXPECT_EQ(RunAs(Start{}, {"run", "--name", "job", "--", "true"}).code, 75);
  ReleaseHolder(holder);

  std::unique_ptr<Process> machine =
      StartHolder(Start{}, {"--name", "svc", "--scope", "machine", "--shared"});
  ASSERT_EQ(lstat(root_("/run/lock/onlyone.svc.lock").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0666u);
  release_.CloseWrite();
  EXPECT_EQ(machine->Wait(), 0);
}

}  // namespace
}  // namespace onlyone
