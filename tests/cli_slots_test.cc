// End-to-end tests of `onlyone run|status|list|wait --slots N`, through the
// built binary with real processes: at most N commands hold a permit at
// once, the next is refused naming the holders, --wait is admitted when a
// permit frees, the permit is inherited by the command run in onlyone's
// place (which can adopt it), status and list (and --json) show each slot's holder, wait waits
// for a free permit, slot counts that disagree are refused with the
// library's message, and the flags that do not go with --slots.
//
// Every test has a machine of its own (ScopedTestRoot). Holders are `onlyone
// run` processes whose command says "s" on descriptor 8 once it runs and
// blocks reading descriptor 9 until the test closes that pipe, as in
// cli_run_test.cc. No sleeps.

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "onlyone/scoped_semaphore.h"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::LockedElsewhere;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::Result;
using ::onlyone::testing::RunOnlyone;
using ::onlyone::testing::ScopedTestRoot;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::onlyone::testing::WaitForHolder;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

constexpr char kHold[] = "printf s >&8; exec cat <&9";

// A result in one string, to compare it whole: "0 [ran\n] []".
std::string Summary(const Result& result) {
  return absl::StrCat(result.code, " [", result.out, "] [", result.err, "]");
}

bool Exists(const std::string& path) {
  struct stat status;
  return lstat(path.c_str(), &status) == 0;
}

// One command holding a permit until released.
struct Holder {
  std::unique_ptr<Process> process;
  std::unique_ptr<Pipe> ready = std::make_unique<Pipe>();
  std::unique_ptr<Pipe> release = std::make_unique<Pipe>();

  void Release() { release->CloseWrite(); }
};

class CliSlotsTest : public ::testing::Test {
 protected:
  // Starts `onlyone run FLAGS -- sh -c kHold`; with `wait_until_running`,
  // returns once the command runs holding its permit.
  Holder Start(std::vector<std::string> flags,
               bool wait_until_running = true) {
    Holder holder;
    flags.insert(flags.begin(), "run");
    flags.insert(flags.end(), {"--", "sh", "-c", kHold});
    holder.process = Process::StartOnlyone(
        flags, {{8, holder.ready->write_fd()}, {9, holder.release->read_fd()}});
    if (wait_until_running) {
      EXPECT_EQ(holder.ready->Receive(), 's') << holder.process->err();
    }
    return holder;
  }

  // The files of the semaphore `name` in the user scope.
  std::string Semaphore(const std::string& name) const {
    return absl::StrCat(root_.UserDirectory(), "/", name);
  }
  std::string Slot(const std::string& name, int slot) const {
    return absl::StrCat(Semaphore(name), ".0", slot, ".lock");
  }

  const ScopedTestRoot root_;
  const std::string dir_ = onlyone::testing::MakeTempDir();
};

TEST_F(CliSlotsTest, AtMostNRunAndTheNextIsRefusedNamingTheHolders) {
  Holder first = Start({"--name", "gpu", "--slots", "2"});
  Holder second = Start({"--name", "gpu", "--slots", "2"});
  // The test's own view: both slot files are locked, by the commands, which
  // run in onlyone's place.
  EXPECT_TRUE(WaitForHolder(Slot("gpu", 0), first.process->pid()));
  EXPECT_TRUE(WaitForHolder(Slot("gpu", 1), second.process->pid()));

  Result third = RunOnlyone({"run", "--name", "gpu", "--slots", "2", "--",
                             "sh", "-c", "echo ran"});
  EXPECT_EQ(third.code, 75);
  EXPECT_EQ(third.out, "");
  EXPECT_THAT(third.err, MatchesRegex("onlyone: [^\n]*\n"));
  EXPECT_THAT(third.err, HasSubstr("all 2 permits are taken"));
  EXPECT_THAT(third.err,
              HasSubstr(absl::StrCat("slot 0: pid ", first.process->pid())));
  EXPECT_THAT(third.err,
              HasSubstr(absl::StrCat("slot 1: pid ", second.process->pid())));
  // The same policies as the lock: another conflict code, a silent skip.
  EXPECT_EQ(Summary(RunOnlyone({"run", "--name", "gpu", "--slots", "2",
                                "--conflict-exit-code", "0", "--", "true"})),
            "0 [] []");

  first.Release();
  EXPECT_EQ(first.process->Wait(), 0);
  EXPECT_FALSE(LockedElsewhere(Slot("gpu", 0)));
  EXPECT_EQ(Summary(RunOnlyone({"run", "--name", "gpu", "--slots", "2", "--",
                                "sh", "-c", "echo ran"})),
            "0 [ran\n] []");
  second.Release();
  EXPECT_EQ(second.process->Wait(), 0);
}

TEST_F(CliSlotsTest, WaitIsAdmittedWhenAPermitFrees) {
  Holder first = Start({"--name", "enc", "--slots", "2"});
  Holder second = Start({"--name", "enc", "--slots", "2"});
  Holder waiter =
      Start({"--name", "enc", "--slots", "2", "--wait", "60s"}, false);
  // Blocked in flock(2) on the slots, as the kernel shows.
  ASSERT_TRUE(WaitForBlockedWaiters(Slot("enc", 0))) << waiter.process->err();
  EXPECT_EQ(waiter.ready->Receive(absl::Milliseconds(1)), '\0');

  second.Release();
  EXPECT_EQ(second.process->Wait(), 0);
  ASSERT_EQ(waiter.ready->Receive(), 's') << waiter.process->err();
  EXPECT_TRUE(WaitForHolder(Slot("enc", 1), waiter.process->pid()));
  // Still two: the first holder and the waiter.
  EXPECT_EQ(RunOnlyone({"run", "--name", "enc", "--slots", "2", "--", "true"})
                .code,
            75);
  first.Release();
  waiter.Release();
  EXPECT_EQ(first.process->Wait(), 0);
  EXPECT_EQ(waiter.process->Wait(), 0);
  EXPECT_EQ(waiter.process->err(), "");
}

TEST_F(CliSlotsTest, WaitRunningOutExitsWithTheConflictCode) {
  Holder only = Start({"--name", "one", "--slots", "1"});
  Result late = RunOnlyone(
      {"run", "--name", "one", "--slots", "1", "--wait", "100ms", "--", "true"});
  EXPECT_EQ(late.code, 75);
  EXPECT_THAT(late.err, HasSubstr("still taken after waiting 100ms"));
  EXPECT_THAT(late.err,
              HasSubstr(absl::StrCat("slot 0: pid ", only.process->pid())));
  only.Release();
  EXPECT_EQ(only.process->Wait(), 0);
}

TEST_F(CliSlotsTest, ThePermitIsInheritedByTheCommand) {
  // In onlyone's place, and under the supervisor (--max-runtime): the
  // command holds the slot's descriptor and finds it in the environment.
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, {"--max-runtime", "1h"}}) {
    Pipe ready, release;
    std::vector<std::string> args = {"run", "--name", "job", "--slots", "3"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(),
                {"--", "sh", "-c",
                 "echo \"$ONLYONE_INHERITED_LOCKS\" >&8; exec cat <&9"});
    std::unique_ptr<Process> run = Process::StartOnlyone(
        args, {{8, ready.write_fd()}, {9, release.read_fd()}});
    std::string inherited;
    for (char c = ready.Receive(); c != '\n' && c != '\0';
         c = ready.Receive()) {
      inherited += c;
    }
    EXPECT_THAT(inherited, MatchesRegex("[0-9]+:[0-9]+:[0-9]+:x"))
        << run->err();
    EXPECT_TRUE(LockedElsewhere(Slot("job", 0)));
    if (extra.empty()) {
      EXPECT_TRUE(WaitForHolder(Slot("job", 0), run->pid()));
    }
    release.CloseWrite();
    EXPECT_EQ(run->Wait(), 0) << run->err();
    EXPECT_FALSE(LockedElsewhere(Slot("job", 0)));
  }
}

// Re-executed by CommandCanAdoptTheInheritedPermit as the guarded command:
// adopts the permit with ScopedSemaphore::AdoptInherited and reports its
// slot ('0' + slot) on descriptor 8, or 'n'.
TEST(CliSlotsExecChild, AdoptInherited) {
  const char* path = std::getenv("ONLYONE_CLI_TEST_ADOPT_PATH");
  if (path == nullptr) GTEST_SKIP() << "only run as onlyone's command";
  absl::StatusOr<ScopedSemaphore> permit =
      ScopedSemaphore::AdoptInherited(path, 3);
  const char verdict =
      permit.ok() && permit->held() ? static_cast<char>('0' + permit->slot())
                                    : 'n';
  ASSERT_EQ(write(8, &verdict, 1), 1);
  ASSERT_TRUE(permit.ok()) << permit.status();
}

TEST_F(CliSlotsTest, CommandCanAdoptTheInheritedPermit) {
  Holder first = Start({"--name", "job", "--slots", "3"});
  const std::string self = onlyone::testing::TestBinaryPath();
  ASSERT_FALSE(self.empty());
  Pipe report;
  Result result = RunOnlyone(
      {"run", "--name", "job", "--slots", "3", "--", self,
       "--gtest_filter=CliSlotsExecChild.AdoptInherited"},
      {{8, report.write_fd()}},
      {"ONLYONE_CLI_TEST_ADOPT_PATH=" + Semaphore("job")});
  EXPECT_EQ(report.Receive(), '1');  // slot 0 is the first holder's
  EXPECT_EQ(result.code, 0) << result.out << result.err;
  first.Release();
  EXPECT_EQ(first.process->Wait(), 0);
}

TEST_F(CliSlotsTest, StatusShowsEachSlotsHolder) {
  Result unused = RunOnlyone({"status", "--name", "gpu", "--slots", "3"});
  EXPECT_EQ(unused.code, 1) << unused.err;
  EXPECT_THAT(unused.out, HasSubstr("0 of 3 permits held"));
  // status creates no file.
  EXPECT_FALSE(Exists(Slot("gpu", 0)));

  Holder first = Start({"--name", "gpu", "--slots", "3"});
  Holder second = Start({"--name", "gpu", "--slots", "3"});
  Result status = RunOnlyone({"status", "--name", "gpu", "--slots", "3"});
  EXPECT_EQ(status.code, 1) << status.err;  // a permit is free
  EXPECT_THAT(status.out, HasSubstr("name:       gpu\n"));
  EXPECT_THAT(status.out,
              HasSubstr(absl::StrCat("semaphore:  ", Semaphore("gpu"), "\n")));
  EXPECT_THAT(status.out, HasSubstr("state:      2 of 3 permits held\n"));
  EXPECT_THAT(status.out, HasSubstr(absl::StrCat("slot 0:     pid ",
                                                 first.process->pid(), " (")));
  EXPECT_THAT(status.out, HasSubstr(absl::StrCat(
                              "slot 1:     pid ", second.process->pid(), " (")));
  EXPECT_THAT(status.out, HasSubstr("slot 2:     free\n"));

  Result json =
      RunOnlyone({"status", "--name", "gpu", "--slots", "3", "--json"});
  EXPECT_EQ(json.code, 1) << json.err;
  const nlohmann::json parsed = nlohmann::json::parse(json.out);
  EXPECT_EQ(parsed["name"], "gpu");
  EXPECT_EQ(parsed["scope"], "user");
  EXPECT_EQ(parsed["semaphore_path"], Semaphore("gpu"));
  EXPECT_EQ(parsed["slots"], 3);
  EXPECT_EQ(parsed["held"], false);
  EXPECT_EQ(parsed["free_slots"], 1);
  ASSERT_EQ(parsed["permits"].size(), 3u);
  EXPECT_EQ(parsed["permits"][0]["lock_path"], Slot("gpu", 0));
  EXPECT_EQ(parsed["permits"][0]["held"], true);
  EXPECT_EQ(parsed["permits"][0]["holders"][0]["pid"], first.process->pid());
  EXPECT_TRUE(parsed["permits"][0]["holders"][0]["process_start_time"]
                  .is_string());
  EXPECT_EQ(parsed["permits"][1]["holders"][0]["pid"], second.process->pid());
  EXPECT_EQ(parsed["permits"][2]["held"], false);
  EXPECT_TRUE(parsed["permits"][2]["holders"].empty());

  Holder third = Start({"--name", "gpu", "--slots", "3"});
  Result full = RunOnlyone({"status", "--name", "gpu", "--slots", "3"});
  EXPECT_EQ(full.code, 0) << full.err;  // every permit held
  EXPECT_THAT(full.out, HasSubstr("3 of 3 permits held"));
  for (Holder* holder : {&first, &second, &third}) {
    holder->Release();
    EXPECT_EQ(holder->process->Wait(), 0);
  }
}

TEST_F(CliSlotsTest, ListShowsASemaphoreOnceWithItsHolders) {
  Holder lock = Start({"--name", "plain"});
  Holder first = Start({"--name", "gpu", "--slots", "2"});
  Result list = RunOnlyone({"list"});
  EXPECT_EQ(list.code, 0) << list.err;
  EXPECT_THAT(list.out,
              MatchesRegex(absl::StrCat(
                  "NAME +STATE +PID +SINCE +COMMAND\n"
                  "gpu +1/2 held +", first.process->pid(),
                  " +- +slot 0: (sh|cat)\n"
                  "plain +held +", lock.process->pid(), " .*\n")));
  // The slot files and the gate are not listed as locks of their own.
  EXPECT_THAT(list.out, Not(HasSubstr("gpu.0")));
  EXPECT_THAT(list.out, Not(HasSubstr("gate")));

  Result json = RunOnlyone({"list", "--json"});
  EXPECT_EQ(json.code, 0) << json.err;
  const nlohmann::json parsed = nlohmann::json::parse(json.out);
  ASSERT_EQ(parsed["locks"].size(), 2u) << json.out;
  const nlohmann::json& semaphore = parsed["locks"][0];
  EXPECT_EQ(semaphore["name"], "gpu");
  EXPECT_EQ(semaphore["slots"], 2);
  EXPECT_EQ(semaphore["free_slots"], 1);
  EXPECT_EQ(semaphore["permits"][0]["holders"][0]["pid"],
            first.process->pid());
  EXPECT_EQ(semaphore["permits"][1]["held"], false);
  EXPECT_EQ(parsed["locks"][1]["name"], "plain");
  EXPECT_EQ(parsed["locks"][1]["holder"]["pid"], lock.process->pid());
  lock.Release();
  first.Release();
  EXPECT_EQ(lock.process->Wait(), 0);
  EXPECT_EQ(first.process->Wait(), 0);
}

TEST_F(CliSlotsTest, WaitWaitsForAFreePermit) {
  // Nothing held, nothing created.
  EXPECT_EQ(Summary(RunOnlyone({"wait", "--name", "idle", "--slots", "2"})),
            "0 [] []");
  EXPECT_FALSE(Exists(Slot("idle", 0)));

  Holder first = Start({"--name", "gpu", "--slots", "2"});
  // One of two held: a permit is free at once.
  EXPECT_EQ(RunOnlyone({"wait", "--name", "gpu", "--slots", "2"}).code, 0);
  Holder second = Start({"--name", "gpu", "--slots", "2"});
  Result timed_out = RunOnlyone(
      {"wait", "--name", "gpu", "--slots", "2", "--timeout", "100ms"});
  EXPECT_EQ(timed_out.code, 75);
  EXPECT_THAT(timed_out.err, HasSubstr("still taken after waiting 100ms"));

  std::unique_ptr<Process> wait = Process::StartOnlyone(
      {"wait", "--name", "gpu", "--slots", "2", "--timeout", "60s"});
  ASSERT_TRUE(WaitForBlockedWaiters(Slot("gpu", 0))) << wait->err();
  first.Release();
  EXPECT_EQ(wait->Wait(), 0) << wait->err();
  EXPECT_EQ(first.process->Wait(), 0);
  second.Release();
  EXPECT_EQ(second.process->Wait(), 0);
}

TEST_F(CliSlotsTest, DisagreeingSlotCountsAreRefusedWithTheLibrarysMessage) {
  Holder two = Start({"--name", "gpu", "--slots", "2"});
  Result three = RunOnlyone(
      {"run", "--name", "gpu", "--slots", "3", "--", "sh", "-c", "echo ran"});
  EXPECT_EQ(three.code, 71);
  EXPECT_EQ(three.out, "");
  EXPECT_THAT(three.err,
              HasSubstr(absl::StrCat("onlyone: ", Semaphore("gpu"),
                                     ": asked for 3 slots, but ",
                                     Semaphore("gpu"), ".slots says 2")));
  Result wait = RunOnlyone({"wait", "--name", "gpu", "--slots", "1"});
  EXPECT_EQ(wait.code, 71);
  EXPECT_THAT(wait.err, HasSubstr("asked for 1 slots, but"));
  two.Release();
  EXPECT_EQ(two.process->Wait(), 0);
}

TEST_F(CliSlotsTest, LockPathIsTheSemaphoresPath) {
  const std::string path = dir_ + "/encoders";
  Holder holder = Start({"--lock", path, "--slots", "1"});
  EXPECT_TRUE(LockedElsewhere(path + ".00.lock"));
  EXPECT_FALSE(Exists(path));
  Result refused =
      RunOnlyone({"run", "--lock", path, "--slots", "1", "--", "true"});
  EXPECT_EQ(refused.code, 75);
  EXPECT_THAT(refused.err,
              HasSubstr(absl::StrCat("onlyone: ", path, ": all 1 permits")));
  Result status = RunOnlyone({"status", "--lock", path, "--slots", "1"});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr(absl::StrCat("semaphore:  ", path, "\n")));
  EXPECT_THAT(status.out, Not(HasSubstr("name:")));
  holder.Release();
  EXPECT_EQ(holder.process->Wait(), 0);
}

TEST_F(CliSlotsTest, FlagsThatDoNotGoWithSlotsAreUsageErrors) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"run", "--name", "x", "--slots", "0", "--",
                                 "true"},
        {"run", "--name", "x", "--slots", "65", "--", "true"},
        {"run", "--name", "x", "--slots", "2", "--shared", "--", "true"},
        {"run", "--name", "x", "--slots", "2", "--on-conflict", "replace", "--",
         "true"},
        {"status", "--name", "x", "--slots", "-1"},
        {"list", "--slots", "2"}}) {
    Result result = RunOnlyone(args);
    EXPECT_EQ(result.code, 64) << args[0] << " " << args[args.size() - 2];
    EXPECT_THAT(result.err, HasSubstr("Try 'onlyone "));
  }
  EXPECT_FALSE(Exists(Slot("x", 0)));
}

}  // namespace
}  // namespace onlyone
