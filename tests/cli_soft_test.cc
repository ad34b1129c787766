// End-to-end tests of `onlyone run|status|wait --lock PATH --soft`, through
// the built binary with real processes: exclusivity and the refusal naming
// the holder (host, pid, command), --wait admitted once the holder ends,
// status as text and JSON, the lock broken as another host breaks it (the
// heartbeat notices, COMMAND gets SIGTERM, onlyone exits 69 and leaves the
// new holder's file alone), signals sent to onlyone reaching COMMAND rather
// than the heartbeat thread, usage errors, and the warning of a plain
// --lock PATH on a FUSE mount (bindfs, as in
// tests/soft_lock_fuse_conformance_test.cc), absent on TEST_TMPDIR's own
// filesystem.
//
// The guarded commands write to descriptor 8 (a pipe the test reads) once
// they run under the lock and end when the test closes descriptor 9. No
// sleeps: a waiting onlyone is known to wait by its inotify descriptor.

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "onlyone/internal/soft_lock_record.h"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

namespace onlyone::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Runs until the test closes descriptor 9; says "s" on 8 once running.
constexpr char kHold[] = "printf s >&8; exec cat <&9";
// The same, saying "t" on 8 and exiting 7 when it gets SIGTERM (cat runs
// in the background so that the shell's `wait` is interrupted at once).
constexpr char kHoldUntilTerm[] =
    "trap 'printf t >&8; exit 7' TERM; printf s >&8; cat <&9 & wait";

std::string HostName() {
  char name[HOST_NAME_MAX + 1] = {};
  gethostname(name, sizeof(name) - 1);
  return name;
}

bool Exists(const std::string& path) {
  struct stat file;
  return lstat(path.c_str(), &file) == 0;
}

// Whether process `pid` has an inotify descriptor open (a soft lock waiter
// watching the directory), looked for until `timeout`.
bool WaitForInotify(pid_t pid, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  const std::string fds = absl::StrCat("/proc/", pid, "/fd");
  do {
    if (DIR* dir = opendir(fds.c_str()); dir != nullptr) {
      bool found = false;
      while (dirent* entry = readdir(dir)) {
        char target[64] = {};
        const std::string link = fds + "/" + entry->d_name;
        if (readlink(link.c_str(), target, sizeof(target) - 1) > 0 &&
            absl::string_view(target) == "anon_inode:inotify") {
          found = true;
        }
      }
      closedir(dir);
      if (found) return true;
    }
    absl::SleepFor(absl::Milliseconds(5));  // /proc has no change event
  } while (absl::Now() < deadline);
  return false;
}

// A record as another host's holder writes it (as tests/soft_file_lock_test.cc
// plants them); the same text on each call.
std::string OtherHostRecord() {
  static const absl::Time acquired_at = absl::Now() - absl::Minutes(5);
  internal::SoftLockRecord record;
  record.owner.pid = 4242;
  record.owner.locker_pid = 4242;
  record.owner.start_ticks = 777;
  record.owner.boot_id = "00000000-1111-2222-3333-444444444444";
  record.owner.hostname = "far-away-host";
  record.owner.uid = geteuid();
  record.owner.command_line = {"/usr/bin/backup", "--full"};
  record.owner.acquired_at = acquired_at;
  record.nonce = "0123456789abcdef0123456789abcdef";
  record.pid_namespace = 4026531836;
  return internal::EncodeSoftLockRecord(record);
}

void WriteNewFile(const std::string& path, const std::string& contents) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, contents.data(), contents.size()),
            static_cast<ssize_t>(contents.size()));
  close(fd);
}

class CliSoftTest : public ::testing::Test {
 protected:
  // Starts `onlyone run --lock lock_ --soft FLAGS -- sh -c COMMAND` and
  // waits until the command runs under the lock.
  std::unique_ptr<Process> StartHolder(std::vector<std::string> flags,
                                       const std::string& command = kHold) {
    std::vector<std::string> args = {"run", "--lock", lock_, "--soft"};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--", "sh", "-c", command});
    std::unique_ptr<Process> holder = Process::StartOnlyone(
        args, {{8, ready_.write_fd()}, {9, release_.read_fd()}});
    EXPECT_EQ(ready_.Receive(), 's') << holder->err();
    return holder;
  }

  const std::string dir_ = MakeTempDir();
  const std::string lock_ = dir_ + "/job.lock";
  Pipe ready_;
  Pipe release_;
};

TEST_F(CliSoftTest, ASecondRunIsRefusedNamingHostPidAndCommand) {
  std::unique_ptr<Process> holder = StartHolder({});
  EXPECT_TRUE(Exists(lock_));
  const Result second =
      RunOnlyone({"run", "--lock", lock_, "--soft", "--", "true"});
  EXPECT_EQ(second.code, cli::kExitConflict) << second.err;
  EXPECT_THAT(second.err, HasSubstr(lock_));
  EXPECT_THAT(second.err, HasSubstr(absl::StrCat("pid ", holder->pid())));
  EXPECT_THAT(second.err, HasSubstr("on host " + HostName()));
  // The recorded command is COMMAND, not the supervising onlyone.
  EXPECT_THAT(second.err, HasSubstr("(sh -c printf s >&8; exec cat <&9)"));
  // --conflict-exit-code applies as to any lock.
  EXPECT_EQ(RunOnlyone({"run", "--lock", lock_, "--soft",
                        "--conflict-exit-code", "3", "--", "true"})
                .code,
            3);
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0) << holder->err();
  EXPECT_EQ(holder->err(), "");
  // onlyone released it when COMMAND ended: nothing is left behind.
  EXPECT_FALSE(Exists(lock_));
  EXPECT_EQ(RunOnlyone({"run", "--lock", lock_, "--soft", "--", "true"}).code,
            0);
}

TEST_F(CliSoftTest, AWaiterIsAdmittedWhenTheHolderEnds) {
  std::unique_ptr<Process> holder = StartHolder({});
  Pipe second_ran;
  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"run", "--lock", lock_, "--soft", "--wait", "60s", "--", "sh", "-c",
       "printf w >&7"},
      {{7, second_ran.write_fd()}});
  second_ran.CloseWrite();
  ASSERT_TRUE(WaitForInotify(waiter->pid())) << waiter->err();
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0) << holder->err();
  EXPECT_EQ(second_ran.Receive(), 'w') << waiter->err();
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
  EXPECT_FALSE(Exists(lock_));
}

TEST_F(CliSoftTest, AWaitRunsOutWithTheConflictCode) {
  std::unique_ptr<Process> holder = StartHolder({});
  const Result waited = RunOnlyone(
      {"run", "--lock", lock_, "--soft", "--wait", "200ms", "--", "true"});
  EXPECT_EQ(waited.code, cli::kExitConflict) << waited.err;
  EXPECT_THAT(waited.err, HasSubstr("still held by pid"));
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliSoftTest, StatusShowsTheHolderAsTextAndJson) {
  EXPECT_EQ(RunOnlyone({"status", "--lock", lock_, "--soft"}).code,
            cli::kExitFree);
  std::unique_ptr<Process> holder = StartHolder({});
  const Result text = RunOnlyone({"status", "--lock", lock_, "--soft"});
  EXPECT_EQ(text.code, cli::kExitOk) << text.err;
  EXPECT_THAT(text.out, HasSubstr(absl::StrCat("held by pid ", holder->pid(),
                                               " on host ", HostName(),
                                               " (this host, alive)")));
  EXPECT_THAT(text.out, HasSubstr("command:"));
  EXPECT_THAT(text.out, HasSubstr("exec cat"));
  EXPECT_THAT(text.out, HasSubstr("since:"));
  EXPECT_THAT(text.out, HasSubstr("heartbeat:"));
  EXPECT_THAT(text.out, HasSubstr("stale:      no: its holder lives"));

  const Result json =
      RunOnlyone({"status", "--lock", lock_, "--soft", "--json"});
  EXPECT_EQ(json.code, cli::kExitOk) << json.err;
  const nlohmann::json parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["lock_path"], lock_);
  EXPECT_EQ(parsed["kind"], "soft");
  EXPECT_EQ(parsed["held"], true);
  EXPECT_EQ(parsed["stale_after_seconds"], 30.0);
  const nlohmann::json& who = parsed["holder"];
  EXPECT_EQ(who["record_readable"], true);
  EXPECT_EQ(who["host"], HostName());
  EXPECT_EQ(who["pid"], holder->pid());
  EXPECT_EQ(who["on_this_host"], true);
  EXPECT_EQ(who["alive"], true);
  EXPECT_EQ(who["stale"], false);
  EXPECT_TRUE(who["acquired_at"].is_string());
  EXPECT_GE(who["heartbeat_age_seconds"].get<double>(), 0.0);
  ASSERT_TRUE(who["command_line"].is_array());
  EXPECT_THAT(who["command_line"].dump(), HasSubstr("exec cat"));

  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  const Result free =
      RunOnlyone({"status", "--lock", lock_, "--soft", "--json"});
  EXPECT_EQ(free.code, cli::kExitFree);
  EXPECT_EQ(nlohmann::json::parse(free.out)["held"], false);
}

TEST_F(CliSoftTest, StatusOfAnotherHostsExpiredLockSaysStale) {
  WriteNewFile(lock_, OtherHostRecord());
  const struct timespec old = absl::ToTimespec(absl::Now() - absl::Hours(1));
  const struct timespec times[2] = {old, old};
  ASSERT_EQ(utimensat(AT_FDCWD, lock_.c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
  const Result text = RunOnlyone(
      {"status", "--lock", lock_, "--soft", "--stale-after", "10s"});
  EXPECT_EQ(text.code, cli::kExitOk) << text.err;
  EXPECT_THAT(text.out, HasSubstr("held by pid 4242 on host far-away-host"));
  EXPECT_THAT(text.out, HasSubstr("stale:      yes"));
  EXPECT_THAT(text.out, HasSubstr("/usr/bin/backup --full"));
  // Status only looks: the planted lock is untouched.
  EXPECT_EQ(ReadFileOrEmpty(lock_), OtherHostRecord());
}

TEST_F(CliSoftTest, WaitReturnsWhenTheLockIsFree) {
  // Free: at once, and no file is made.
  EXPECT_EQ(RunOnlyone({"wait", "--lock", lock_, "--soft"}).code, 0);
  EXPECT_FALSE(Exists(lock_));
  std::unique_ptr<Process> holder = StartHolder({});
  const Result timed_out = RunOnlyone(
      {"wait", "--lock", lock_, "--soft", "--timeout", "200ms"});
  EXPECT_EQ(timed_out.code, cli::kExitConflict) << timed_out.err;
  std::unique_ptr<Process> waiter =
      Process::StartOnlyone({"wait", "--lock", lock_, "--soft"});
  ASSERT_TRUE(WaitForInotify(waiter->pid())) << waiter->err();
  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
  EXPECT_FALSE(Exists(lock_));
}

TEST_F(CliSoftTest, ALockBrokenByAnotherHostStopsTheCommandAndExits69) {
  // Heartbeat every 100 ms.
  std::unique_ptr<Process> holder =
      StartHolder({"--stale-after", "300ms", "--grace", "10s"},
                  kHoldUntilTerm);
  // Another host judged it stale: moved it away and took the path.
  const std::string moved = dir_ + "/moved";
  ASSERT_EQ(rename(lock_.c_str(), moved.c_str()), 0);
  ASSERT_EQ(unlink(moved.c_str()), 0);
  WriteNewFile(lock_, OtherHostRecord());
  EXPECT_EQ(ready_.Receive(), 't') << "COMMAND got no SIGTERM: "
                                   << holder->err();
  EXPECT_EQ(holder->Wait(), cli::kExitLockLost);
  EXPECT_THAT(holder->err(), HasSubstr("lost the lock " + lock_));
  // The new holder's lock is left as it is.
  EXPECT_EQ(ReadFileOrEmpty(lock_), OtherHostRecord());
}

TEST_F(CliSoftTest, SignalsToOnlyoneReachTheCommandNotTheHeartbeat) {
  std::unique_ptr<Process> holder = StartHolder({}, kHoldUntilTerm);
  // A process-directed SIGTERM: onlyone forwards it; if the heartbeat thread
  // took it, its default action would end onlyone and leave COMMAND behind.
  holder->Kill(SIGTERM);
  EXPECT_EQ(ready_.Receive(), 't') << holder->err();
  EXPECT_EQ(holder->Wait(), 7) << holder->err();
  EXPECT_FALSE(Exists(lock_)) << "onlyone did not release it";
}

TEST_F(CliSoftTest, UsageErrors) {
  const auto usage = [](const std::vector<std::string>& args,
                        const std::string& says) {
    const Result result = RunOnlyone(args);
    EXPECT_EQ(result.code, cli::kExitUsage) << result.err;
    EXPECT_THAT(result.err, HasSubstr(says));
  };
  usage({"run", "--name", "job", "--soft", "--", "true"},
        "--soft needs --lock PATH");
  usage({"status", "--name", "job", "--soft"}, "--soft needs --lock PATH");
  usage({"run", "--lock", lock_, "--soft", "--slots", "2", "--", "true"},
        "--soft cannot be combined with --slots");
  usage({"run", "--lock", lock_, "--soft", "--shared", "--", "true"},
        "--soft cannot be combined with --shared");
  usage({"run", "--lock", lock_, "--soft", "--on-conflict", "replace", "--",
         "true"},
        "--soft cannot be combined with --on-conflict replace");
  usage({"run", "--lock", lock_, "--stale-after", "10s", "--", "true"},
        "--stale-after applies to --soft only");
  usage({"run", "--lock", lock_, "--soft", "--stale-after", "0", "--", "true"},
        "--stale-after needs a finite DURATION above 0");
  EXPECT_FALSE(Exists(lock_));
}

TEST_F(CliSoftTest, HelpCoversSoft) {
  const Result help = RunOnlyone({"run", "--help"});
  EXPECT_EQ(help.code, 0);
  EXPECT_THAT(help.out, HasSubstr("--soft"));
  EXPECT_THAT(help.out, HasSubstr("--stale-after"));
}

TEST_F(CliSoftTest, NoWarningOnTheTestsOwnFilesystem) {
  const Result run = RunOnlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(run.code, 0);
  EXPECT_EQ(run.err, "");
}

// The FUSE mount: TEST_TMPDIR/plain seen through bindfs at TEST_TMPDIR/fuse.
std::string TmpDir() {
  const char* base = getenv("TEST_TMPDIR");
  return base != nullptr ? base : "/tmp";
}
std::string PlainDir() { return TmpDir() + "/plain"; }
std::string FuseDir() { return TmpDir() + "/fuse"; }

// Why the mount could not be made; empty once it is.
std::string& WhyNotMounted() {
  static std::string* const why = new std::string("not tried");
  return *why;
}

void Mount() {
  if (mkdir(PlainDir().c_str(), 0700) != 0 && errno != EEXIST) {
    WhyNotMounted() = "cannot make the directory " + PlainDir();
    return;
  }
  WhyNotMounted() = MountBindfs(PlainDir(), FuseDir());
}

void Unmount() {
  if (WhyNotMounted().empty()) UnmountBindfs(FuseDir());
  RemoveTree(PlainDir());
}

TEST(CliSoftOnFuse, APlainLockOnFuseWarnsOnceSuggestingSoft) {
  if (!WhyNotMounted().empty()) {
    GTEST_SKIP() << "FUSE not available: " << WhyNotMounted();
  }
  const std::string lock = FuseDir() + "/job.lock";
  const Result run = RunOnlyone({"run", "--lock", lock, "--", "true"});
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_THAT(run.err, HasSubstr("warning: " + lock + " is on fuse at " +
                                 FuseDir()));
  EXPECT_THAT(run.err, HasSubstr("use --soft"));
  EXPECT_EQ(run.err.find("warning"), run.err.rfind("warning")) << run.err;
  // One line, and the same under the supervisor.
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  const Result supervised = RunOnlyone(
      {"run", "--lock", lock, "--max-runtime", "1h", "--", "true"});
  EXPECT_EQ(supervised.code, 0) << supervised.err;
  EXPECT_EQ(std::count(supervised.err.begin(), supervised.err.end(), '\n'), 1)
      << supervised.err;
  // Not with --quiet, nor with --soft, which is what it suggests.
  const Result quiet =
      RunOnlyone({"run", "--lock", lock, "--quiet", "--", "true"});
  EXPECT_EQ(quiet.code, 0);
  EXPECT_EQ(quiet.err, "");
  const Result soft = RunOnlyone(
      {"run", "--lock", FuseDir() + "/soft.lock", "--soft", "--", "true"});
  EXPECT_EQ(soft.code, 0) << soft.err;
  EXPECT_EQ(soft.err, "");
  // The plain lock on the same directory outside FUSE: no warning.
  const Result plain =
      RunOnlyone({"run", "--lock", PlainDir() + "/job.lock", "--", "true"});
  EXPECT_EQ(plain.code, 0);
  EXPECT_EQ(plain.err, "");
}

}  // namespace
}  // namespace onlyone::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  onlyone::testing::Mount();
  if (!onlyone::testing::WhyNotMounted().empty()) {
    std::fprintf(stderr, "cli_soft_test: %s; the FUSE case is skipped\n",
                 onlyone::testing::WhyNotMounted().c_str());
  }
  const int result = RUN_ALL_TESTS();
  onlyone::testing::Unmount();
  return result;
}
