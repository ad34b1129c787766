// End-to-end tests of `onlyone status`, `onlyone list` and `onlyone wait`,
// through the built binary: JSON output parsed and checked field by field,
// the tables, exit codes, and wait blocking until the holder releases.
//
// Holders are `onlyone run` processes whose command blocks reading a pipe
// the test holds (see cli_run_test.cc), or flock(1). No sleeps.

#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::nlohmann::json;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::Result;
using ::onlyone::testing::RunOnlyone;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::testing::ElementsAre;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kHold[] = "printf s >&8; exec cat <&9";

// The first executable `name` in PATH, as execvp(3) would find it.
std::string ProgramInPath(const std::string& name) {
  const char* path = getenv("PATH");
  for (absl::string_view directory :
       absl::StrSplit(path != nullptr ? path : "/bin:/usr/bin", ':')) {
    const std::string candidate = absl::StrCat(directory, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Reads a line of digits (a pid a command wrote) from `pipe`.
std::string ReadPid(Pipe& pipe) {
  std::string pid;
  for (char c = pipe.Receive(); c >= '0' && c <= '9'; c = pipe.Receive()) {
    pid += c;
  }
  return pid;
}

std::string BootId() {
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(file, id);
  return id;
}

// Parses an RFC 3339 time; InfinitePast() if it does not parse.
absl::Time ParseTime(const json& value) {
  absl::Time time = absl::InfinitePast();
  std::string error;
  if (!value.is_string() ||
      !absl::ParseTime(absl::RFC3339_full, value.get<std::string>(), &time,
                       &error)) {
    return absl::InfinitePast();
  }
  return time;
}

class CliStatusTest : public ::testing::Test {
 protected:
  std::unique_ptr<Process> StartHolder(std::vector<std::string> flags,
                                       Pipe& ready, Pipe& release) {
    flags.insert(flags.begin(), "run");
    flags.insert(flags.end(), {"--", "sh", "-c", kHold});
    std::unique_ptr<Process> holder = Process::StartOnlyone(
        flags, {{8, ready.write_fd()}, {9, release.read_fd()}}, env_);
    EXPECT_EQ(ready.Receive(), 's') << holder->err();
    return holder;
  }

  Result Onlyone(const std::vector<std::string>& args) {
    return RunOnlyone(args, {}, env_);
  }

  // A machine of the test's own: named locks live in its user directory.
  const onlyone::testing::ScopedTestRoot root_;
  const std::string dir_ = root_.UserDirectory();
  const std::string lock_ = onlyone::testing::MakeTempDir() + "/job.lock";
  const std::vector<std::string> env_ = {};
};

TEST_F(CliStatusTest, FreeLockExits1) {
  Result table = Onlyone({"status", "--lock", lock_});
  EXPECT_EQ(table.code, 1) << table.err;
  EXPECT_THAT(table.out, HasSubstr("free"));
  EXPECT_EQ(table.err, "");

  Result result = Onlyone({"status", "--lock", lock_, "--json"});
  EXPECT_EQ(result.code, 1) << result.err;
  const json status = json::parse(result.out);
  EXPECT_TRUE(status["name"].is_null());
  EXPECT_EQ(status["lock_path"], lock_);
  EXPECT_TRUE(status["scope"].is_null());
  EXPECT_EQ(status["held"], false);
  EXPECT_TRUE(status["holder"].is_null());
  // status never creates the lock file.
  struct stat ignored;
  EXPECT_NE(stat(lock_.c_str(), &ignored), 0);
}

TEST_F(CliStatusTest, HeldLockJsonNamesTheHolderFieldByField) {
  Pipe ready, release;
  const absl::Time before = absl::Now();
  std::unique_ptr<Process> holder =
      StartHolder({"--name", "nightly"}, ready, release);
  const absl::Time after = absl::Now();

  Result result = Onlyone({"status", "--name", "nightly", "--json"});
  ASSERT_EQ(result.code, 0) << result.err;
  const json status = json::parse(result.out);
  EXPECT_EQ(status["name"], "nightly");
  EXPECT_EQ(status["scope"], "user");
  EXPECT_EQ(status["lock_path"], dir_ + "/nightly.lock");
  EXPECT_EQ(status["held"], true);
  const json& owner = status["holder"];
  ASSERT_TRUE(owner.is_object()) << result.out;
  EXPECT_EQ(owner["pid"], holder->pid());
  EXPECT_EQ(owner["has_record"], true);
  EXPECT_EQ(owner["command_line"],
            json(std::vector<std::string>{"sh", "-c", kHold}));
  // The program onlyone ran in its place, as found in PATH.
  EXPECT_EQ(owner["executable"], ProgramInPath("sh"));
  // The live processes holding it: the recorded one, which is the command.
  ASSERT_EQ(owner["processes"].size(), 1u) << result.out;
  EXPECT_EQ(owner["processes"][0]["pid"], holder->pid());
  EXPECT_TRUE(owner["inherited_from_pid"].is_null());
  EXPECT_EQ(owner["uid"], geteuid());
  EXPECT_TRUE(owner["user"].is_string());
  struct utsname names;
  ASSERT_EQ(uname(&names), 0);
  EXPECT_EQ(owner["hostname"], names.nodename);
  EXPECT_EQ(owner["boot_id"], BootId());
  EXPECT_FALSE(owner["version"].get<std::string>().empty());
  const absl::Time acquired = ParseTime(owner["acquired_at"]);
  EXPECT_GE(acquired, before - absl::Seconds(1)) << owner["acquired_at"];
  EXPECT_LE(acquired, after + absl::Seconds(1)) << owner["acquired_at"];
  const absl::Time started = ParseTime(owner["process_start_time"]);
  EXPECT_NE(started, absl::InfinitePast()) << owner["process_start_time"];
  EXPECT_LE(started, acquired + absl::Seconds(1));

  // The same through --lock PATH.
  Result by_path =
      Onlyone({"status", "--lock", dir_ + "/nightly.lock", "--json"});
  ASSERT_EQ(by_path.code, 0) << by_path.err;
  EXPECT_EQ(json::parse(by_path.out)["holder"]["pid"], holder->pid());

  Result table = Onlyone({"status", "--name", "nightly"});
  EXPECT_EQ(table.code, 0);
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat("held by pid ",
                                                holder->pid())));
  EXPECT_THAT(table.out, HasSubstr("sh -c 'printf s >&8; exec cat <&9'"));
  EXPECT_THAT(table.out, HasSubstr("nightly.lock"));
  // Not the path of the onlyone binary that ran it.
  EXPECT_THAT(table.out, HasSubstr("executable:  " + ProgramInPath("sh")));
  EXPECT_THAT(table.out, Not(HasSubstr(onlyone::testing::OnlyonePath())));

  release.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(Onlyone({"status", "--name", "nightly"}).code, 1);
}

TEST_F(CliStatusTest, LockHeldByFlockHasNoRecord) {
  Pipe ready, release;
  std::unique_ptr<Process> flock = Process::Start(
      {"/usr/bin/flock", lock_, "sh", "-c", kHold},
      {{8, ready.write_fd()}, {9, release.read_fd()}});
  ASSERT_EQ(ready.Receive(), 's');
  Result result = Onlyone({"status", "--lock", lock_, "--json"});
  EXPECT_EQ(result.code, 0) << result.err;
  const json status = json::parse(result.out);
  EXPECT_EQ(status["held"], true);
  EXPECT_EQ(status["holder"]["pid"], flock->pid());
  EXPECT_EQ(status["holder"]["has_record"], false);
  EXPECT_TRUE(status["holder"]["command_line"].is_null());
  // What /proc says of it: its command line, exactly.
  ASSERT_EQ(status["holder"]["processes"].size(), 1u) << result.out;
  EXPECT_EQ(status["holder"]["processes"][0]["pid"], flock->pid());
  EXPECT_EQ(status["holder"]["processes"][0]["name"], "flock");
  EXPECT_EQ(status["holder"]["processes"][0]["command_line"],
            json(std::vector<std::string>{"/usr/bin/flock", lock_, "sh", "-c",
                                          kHold}));
  Result table = Onlyone({"status", "--lock", lock_});
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat(
                             "held by pid ", flock->pid(),
                             " (no owner record: not taken by onlyone)")));
  EXPECT_THAT(table.out,
              HasSubstr(absl::StrCat("command:  /usr/bin/flock ", lock_,
                                     " sh -c '", kHold, "'\n")));
  Result refused = Onlyone({"run", "--lock", lock_, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  EXPECT_THAT(refused.err, HasSubstr(absl::StrCat(
                               "held by pid ", flock->pid(),
                               " (/usr/bin/flock ", lock_, " sh -c ", kHold,
                               ", no owner record)")));
  release.CloseWrite();
  EXPECT_EQ(flock->Wait(), 0);
}

TEST_F(CliStatusTest, ListShowsHeldAndFreeLocks) {
  Pipe ready, release;
  std::unique_ptr<Process> holder =
      StartHolder({"--name", "alpha"}, ready, release);
  ASSERT_EQ(Onlyone({"run", "--name", "beta", "--", "true"}).code, 0);

  Result result = Onlyone({"list", "--json"});
  ASSERT_EQ(result.code, 0) << result.err;
  const json list = json::parse(result.out);
  EXPECT_EQ(list["scope"], "user");
  ASSERT_TRUE(list["locks"].is_array()) << result.out;
  std::map<std::string, json> locks;
  for (const json& lock : list["locks"]) {
    locks[lock["name"].get<std::string>()] = lock;
  }
  ASSERT_EQ(locks.size(), 2u) << result.out;
  const json& alpha = locks["alpha"];
  EXPECT_EQ(alpha["lock_path"], dir_ + "/alpha.lock");
  EXPECT_EQ(alpha["held"], true);
  EXPECT_EQ(alpha["holder"]["pid"], holder->pid());
  EXPECT_EQ(alpha["holder"]["has_record"], true);
  EXPECT_EQ(alpha["holder"]["command_line"],
            json(std::vector<std::string>{"sh", "-c", kHold}));
  const json& beta = locks["beta"];
  EXPECT_EQ(beta["lock_path"], dir_ + "/beta.lock");
  EXPECT_EQ(beta["held"], false);
  EXPECT_TRUE(beta["holder"].is_null());

  Result table = Onlyone({"list"});
  EXPECT_EQ(table.code, 0);
  EXPECT_THAT(table.out, HasSubstr("NAME"));
  EXPECT_THAT(table.out, HasSubstr("alpha"));
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat(holder->pid())));
  EXPECT_THAT(table.out, HasSubstr("beta"));
  EXPECT_THAT(table.out, HasSubstr("free"));

  release.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

// A command that leaves processes running, which inherit the lock, and
// exits: status, list and wait see those processes, not the pid that took
// the lock.
TEST_F(CliStatusTest, ProcessesThatInheritedTheLockAreNamed) {
  // Each cat copies what the test sends it (on 9, on 7) to 8, so the test
  // knows both are cats (exec'd, not the shell's forks before their exec).
  Pipe ready, release, release_second;
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--name", "orphans", "--", "sh", "-c",
       "cat <&9 >&8 & echo $! >&8; cat <&7 >&8 & echo $! >&8"},
      {{8, ready.write_fd()},
       {9, release.read_fd()},
       {7, release_second.read_fd()}},
      env_);
  const std::string first = ReadPid(ready);
  const std::string second = ReadPid(ready);
  ASSERT_FALSE(second.empty()) << holder->err();
  release.Send('a');
  EXPECT_EQ(ready.Receive(), 'a');
  release_second.Send('b');
  EXPECT_EQ(ready.Receive(), 'b');
  const pid_t taker = holder->pid();
  EXPECT_EQ(holder->Wait(), 0) << holder->err();

  Result result = Onlyone({"status", "--name", "orphans", "--json"});
  ASSERT_EQ(result.code, 0) << result.err;
  const json status = json::parse(result.out);
  EXPECT_EQ(status["held"], true);
  const json& owner = status["holder"];
  EXPECT_EQ(owner["has_record"], false);
  EXPECT_EQ(std::to_string(owner["pid"].get<int>()), first);
  ASSERT_EQ(owner["processes"].size(), 2u) << result.out;
  EXPECT_EQ(std::to_string(owner["processes"][0]["pid"].get<int>()), first);
  EXPECT_EQ(std::to_string(owner["processes"][1]["pid"].get<int>()), second);
  EXPECT_EQ(owner["processes"][1]["command_line"],
            json(std::vector<std::string>{"cat"}));
  // The kernel names the pid that took it only outside a pid namespace
  // (Bazel's sandbox has one): then it is said to have passed it on.
  EXPECT_TRUE(owner["inherited_from_pid"].is_null() ||
              owner["inherited_from_pid"] == taker)
      << result.out;

  Result table = Onlyone({"status", "--name", "orphans"});
  EXPECT_EQ(table.code, 0);
  EXPECT_THAT(table.out,
              HasSubstr(absl::StrCat("held by pids ", first, ", ", second)));
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat("commands:  ", first,
                                                ": cat\n")));
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat("           ", second,
                                                ": cat\n")));
  EXPECT_THAT(table.out, Not(HasSubstr(absl::StrCat("pid ", taker, "\n"))));

  Result list = Onlyone({"list"});
  EXPECT_EQ(list.code, 0);
  EXPECT_THAT(list.out,
              ::testing::ContainsRegex(absl::StrCat(
                  "orphans +held +", first, ",", second, " +- +", first,
                  ": cat; ", second, ": cat \\(no record\\)")));
  Result listed = Onlyone({"list", "--json"});
  ASSERT_EQ(listed.code, 0);
  EXPECT_EQ(json::parse(listed.out)["locks"][0]["holder"]["processes"].size(),
            2u);

  // wait sees them hold it, and returns once both are gone.
  Result held = Onlyone({"wait", "--name", "orphans", "--timeout", "0"});
  EXPECT_EQ(held.code, 75) << held.err;
  release.CloseWrite();
  release_second.CloseWrite();
  Result freed = Onlyone({"wait", "--name", "orphans", "--timeout", "60s"});
  EXPECT_EQ(freed.code, 0) << freed.err;
  EXPECT_EQ(Onlyone({"status", "--name", "orphans"}).code, 1);
}

TEST_F(CliStatusTest, EmptyScopeListsNothing) {
  Result result = Onlyone({"list", "--json"});
  ASSERT_EQ(result.code, 0) << result.err;
  const json list = json::parse(result.out);
  EXPECT_EQ(list["locks"], json::array());
  EXPECT_THAT(Onlyone({"list"}).out, HasSubstr("no locks"));
}

TEST_F(CliStatusTest, WaitReturnsWhenTheHolderReleases) {
  Pipe ready, release;
  std::unique_ptr<Process> holder =
      StartHolder({"--lock", lock_}, ready, release);
  std::unique_ptr<Process> waiter =
      Process::StartOnlyone({"wait", "--lock", lock_}, {}, env_);
  ASSERT_TRUE(WaitForBlockedWaiters(lock_)) << waiter->err();
  release.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
}

TEST_F(CliStatusTest, WaitByNameReturnsWhenTheHolderReleases) {
  Pipe ready, release;
  std::unique_ptr<Process> holder =
      StartHolder({"--name", "nightly"}, ready, release);
  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"wait", "--name", "nightly", "--timeout", "60s"}, {}, env_);
  ASSERT_TRUE(WaitForBlockedWaiters(dir_ + "/nightly.lock"))
      << waiter->err();
  release.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
  EXPECT_EQ(waiter->Wait(), 0) << waiter->err();
}

TEST_F(CliStatusTest, WaitTimesOutWith75) {
  Pipe ready, release;
  std::unique_ptr<Process> holder =
      StartHolder({"--lock", lock_}, ready, release);
  const absl::Time start = absl::Now();
  Result late = Onlyone({"wait", "--lock", lock_, "--timeout", "250ms"});
  EXPECT_EQ(late.code, 75);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  EXPECT_THAT(late.err, HasSubstr(lock_));
  release.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliStatusTest, WaitOnAFreeOrMissingLockReturnsAtOnce) {
  EXPECT_EQ(Onlyone({"wait", "--lock", lock_}).code, 0);
  struct stat ignored;
  EXPECT_NE(stat(lock_.c_str(), &ignored), 0);  // not created
  ASSERT_EQ(Onlyone({"run", "--lock", lock_, "--", "true"}).code, 0);
  EXPECT_EQ(Onlyone({"wait", "--lock", lock_, "--timeout", "0"}).code, 0);
}

}  // namespace
}  // namespace onlyone
