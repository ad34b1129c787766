// End-to-end: text other users choose reaches the terminal escaped through
// every `onlyone` output for humans (the status table, refusals of run,
// run --shared and a refused replace, wait), while --json keeps it exact.
//
// Hostile text comes from an `onlyone run` whose command line carries
// escapes (into the owner record), from a holder that names itself with
// prctl(PR_SET_NAME) and flock(2)s the file without a record, and from a
// lock path with escapes. Every lock is given as --lock PATH under
// TEST_TMPDIR. Synchronisation through pipes, no sleeps.

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_test_util.h"
#include "tests/named_holder.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::nlohmann::json;
using ::onlyone::testing::Child;
using ::onlyone::testing::HoldLockAs;
using ::onlyone::testing::kEscapedHostileProcessName;
using ::onlyone::testing::kHostileProcessName;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::Result;
using ::onlyone::testing::RunOnlyone;
using ::onlyone::testing::TerminalControlsIn;
using ::testing::HasSubstr;

constexpr char kHold[] = "printf s >&8; exec cat <&9";
// Sets the terminal's title, clears the screen, then a UTF-8 CSI (U+009B).
constexpr char kHostileArgument[] = "\x1b]0;pwn\x07\x1b[2J\xc2\x9b";
constexpr char kEscapedHostileArgument[] = "\\x1b]0;pwn\\x07\\x1b[2J\\u009b";

// Expects neither stream of `result` to carry a terminal control.
void ExpectNoTerminalControls(const Result& result) {
  EXPECT_EQ(TerminalControlsIn(result.out), "") << result.out;
  EXPECT_EQ(TerminalControlsIn(result.err), "") << result.err;
}

class CliPrintableTest : public ::testing::Test {
 protected:
  const std::string dir_ = onlyone::testing::MakeTempDir();
  Pipe ready_;
  Pipe release_;
};

TEST_F(CliPrintableTest, RecordedCommandLineIsEscapedForHumansExactInJson) {
  const std::string lock = dir_ + "/job.lock";
  std::unique_ptr<Process> holder = Process::StartOnlyone(
      {"run", "--lock", lock, "--", "sh", "-c", kHold, kHostileArgument},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's') << holder->err();

  Result table = RunOnlyone({"status", "--lock", lock});
  EXPECT_EQ(table.code, 0) << table.err;
  ExpectNoTerminalControls(table);
  EXPECT_THAT(table.out, HasSubstr(kEscapedHostileArgument));

  Result status = RunOnlyone({"status", "--lock", lock, "--json"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_EQ(
      json::parse(status.out)["holder"]["command_line"],
      json(std::vector<std::string>{"sh", "-c", kHold, kHostileArgument}));

  Result refused = RunOnlyone({"run", "--lock", lock, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  ExpectNoTerminalControls(refused);
  EXPECT_THAT(refused.err, HasSubstr(kEscapedHostileArgument));

  // A shared lock is refused by ScopedFileLock; the command line then
  // comes from the record.
  Result shared = RunOnlyone({"run", "--lock", lock, "--shared", "--", "true"});
  EXPECT_EQ(shared.code, 75);
  ExpectNoTerminalControls(shared);
  EXPECT_THAT(shared.err, HasSubstr(kEscapedHostileArgument));

  release_.CloseWrite();
  EXPECT_EQ(holder->Wait(), 0);
}

TEST_F(CliPrintableTest, SelfNamedHolderAndLockPathAreEscaped) {
  // The path is the test's own choice here, but a path listed from a
  // shared directory is not: every displayed path is escaped alike.
  const std::string lock = dir_ + "/\x1b]0;pwn\x07.lock";
  const std::string escaped_lock = dir_ + "/\\x1b]0;pwn\\x07.lock";
  Child holder = HoldLockAs(lock, kHostileProcessName, ready_, release_);
  ASSERT_EQ(ready_.Receive(), '.');
  const std::string escaped_holder =
      absl::StrCat("pid ", holder.pid(), " (", kEscapedHostileProcessName, ")");

  Result table = RunOnlyone({"status", "--lock", lock});
  EXPECT_EQ(table.code, 0) << table.err;
  ExpectNoTerminalControls(table);
  EXPECT_THAT(table.out, HasSubstr(escaped_lock));
  EXPECT_THAT(table.out, HasSubstr(absl::StrCat("held by pid ", holder.pid())));

  Result status = RunOnlyone({"status", "--lock", lock, "--json"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_EQ(json::parse(status.out)["lock_path"], lock);

  Result waited = RunOnlyone({"wait", "--lock", lock, "--timeout", "0"});
  EXPECT_EQ(waited.code, 75);
  ExpectNoTerminalControls(waited);
  EXPECT_THAT(waited.err, HasSubstr(absl::StrCat(escaped_lock, " is held by ",
                                                 escaped_holder)));

  // SingleInstance's refusal shows the holder's command line, which names
  // the test binary (the holder is a fork of it), not the name it chose.
  Result shared = RunOnlyone({"run", "--lock", lock, "--shared", "--", "true"});
  EXPECT_EQ(shared.code, 75);
  ExpectNoTerminalControls(shared);
  EXPECT_THAT(shared.err,
              HasSubstr(absl::StrCat(escaped_lock, " is held by pid ",
                                     holder.pid(), " (")));
  EXPECT_THAT(shared.err, HasSubstr(", no owner record)"));

  Result refused =
      RunOnlyone({"run", "--verbose", "--lock", lock, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  ExpectNoTerminalControls(refused);
  EXPECT_THAT(refused.err,
              HasSubstr("taking the exclusive lock " + escaped_lock));
  EXPECT_THAT(refused.err, HasSubstr(escaped_lock + " is held by pid"));

  // No record: the replace is refused, and says so.
  Result replace = RunOnlyone(
      {"run", "--lock", lock, "--on-conflict", "replace", "--", "true"});
  EXPECT_EQ(replace.code, 75);
  ExpectNoTerminalControls(replace);
  EXPECT_THAT(replace.err, HasSubstr(escaped_lock));
  EXPECT_THAT(replace.err, HasSubstr("not replacing it"));

  release_.Send();
  EXPECT_EQ(holder.Wait(), 0);
  Result ran = RunOnlyone({"run", "--verbose", "--lock", lock, "--", "true"});
  EXPECT_EQ(ran.code, 0) << ran.err;
  ExpectNoTerminalControls(ran);
  EXPECT_THAT(ran.err, HasSubstr("holding " + escaped_lock));
}

TEST_F(CliPrintableTest, AHoldersOwnCommandLineIsEscapedForHumansExactInJson) {
  // No owner record: the command line comes from /proc/PID/cmdline.
  const std::string lock = dir_ + "/job.lock";
  std::unique_ptr<Process> flock = Process::Start(
      {"/usr/bin/flock", lock, "sh", "-c", kHold, kHostileArgument},
      {{8, ready_.write_fd()}, {9, release_.read_fd()}});
  ASSERT_EQ(ready_.Receive(), 's');

  Result refused = RunOnlyone({"run", "--lock", lock, "--", "true"});
  EXPECT_EQ(refused.code, 75);
  ExpectNoTerminalControls(refused);
  EXPECT_THAT(refused.err, HasSubstr(kEscapedHostileArgument));

  Result table = RunOnlyone({"status", "--lock", lock});
  EXPECT_EQ(table.code, 0) << table.err;
  ExpectNoTerminalControls(table);
  EXPECT_THAT(table.out, HasSubstr(kEscapedHostileArgument));

  Result list = RunOnlyone({"status", "--lock", lock, "--json"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_EQ(json::parse(list.out)["holder"]["processes"][0]["command_line"],
            json(std::vector<std::string>{"/usr/bin/flock", lock, "sh", "-c",
                                          kHold, kHostileArgument}));
  release_.CloseWrite();
  EXPECT_EQ(flock->Wait(), 0);
}

}  // namespace
}  // namespace onlyone
