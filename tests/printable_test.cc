// Printable(), the one rule for showing text onlyone did not write, and the
// library messages that quote such text: a lock holder's process name in
// ScopedFileLock's refusals, owner-record fields and the label in
// SingleInstance::DescribeRunning().
//
// The hostile holder is a real forked process that names itself with
// prctl(PR_SET_NAME) and flock(2)s the file; the tests synchronise with it
// through pipes.

#include "onlyone/internal/printable.h"

#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/scoped_file_lock.h"
#include "onlyone/single_instance.h"
#include "tests/named_holder.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::internal::Printable;
using ::onlyone::testing::Child;
using ::onlyone::testing::HoldLockAs;
using ::onlyone::testing::kEscapedHostileProcessName;
using ::onlyone::testing::kHostileProcessName;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::TerminalControlsIn;
using ::testing::HasSubstr;
using ::testing::Not;

// Control Sequence Introducer: as the 8-bit byte, and as U+009B in UTF-8.
constexpr char kRawCsi[] = "\x9b";
constexpr char kUtf8Csi[] = "\xc2\x9b";

TEST(PrintableTest, EmptyStaysEmpty) { EXPECT_EQ(Printable(""), ""); }

TEST(PrintableTest, PlainAsciiStaysAsItIs) {
  EXPECT_EQ(Printable("/usr/bin/backup --full 'a b' ~!@#$%^&*()[]{}"),
            "/usr/bin/backup --full 'a b' ~!@#$%^&*()[]{}");
}

TEST(PrintableTest, EscapeAndBellAreShownAsHex) {
  EXPECT_EQ(Printable("\x1b]0;pwn\x07"), "\\x1b]0;pwn\\x07");
  EXPECT_EQ(Printable("a\x1b[2Jb"), "a\\x1b[2Jb");
}

TEST(PrintableTest, EveryC0ControlAndDeleteAreShownAsHex) {
  EXPECT_EQ(Printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(Printable("\t\n\r"), "\\x09\\x0a\\x0d");
  EXPECT_EQ(Printable("\x1f\x7f"), "\\x1f\\x7f");
  for (int byte = 0; byte < 0x20; ++byte) {
    const std::string shown =
        Printable(std::string(1, static_cast<char>(byte)));
    EXPECT_EQ(shown.size(), 4u) << byte;
    EXPECT_EQ(shown.substr(0, 2), "\\x") << byte;
  }
}

TEST(PrintableTest, CsiAsRawByteAndAsUtf8C1AreEscaped) {
  // The 8-bit CSI byte alone is not UTF-8; U+009B written as UTF-8 is the
  // CSI a UTF-8 terminal acts on.
  EXPECT_EQ(Printable(std::string(kRawCsi) + "31m"), "\\x9b31m");
  EXPECT_EQ(Printable(std::string(kUtf8Csi) + "31m"), "\\u009b31m");
}

TEST(PrintableTest, WholeC1RangeInUtf8IsEscapedAndItsNeighboursAreNot) {
  EXPECT_EQ(Printable("\xc2\x80"), "\\u0080");
  EXPECT_EQ(Printable("\xc2\x85"), "\\u0085");  // NEL
  EXPECT_EQ(Printable("\xc2\x9f"), "\\u009f");
  EXPECT_EQ(Printable("\xc2\xa0"), "\xc2\xa0");  // no-break space
  EXPECT_EQ(Printable("\xc2\xbf"), "\xc2\xbf");
}

TEST(PrintableTest, ValidUtf8StaysAsItIs) {
  const std::string text =
      "caf\xc3\xa9 \xe2\x82\xac \xe6\x97\xa5\xe6\x9c\xac "
      "\xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
  EXPECT_EQ(Printable(text), text);
}

TEST(PrintableTest, InvalidUtf8BytesAreShownAsHexOneByOne) {
  EXPECT_EQ(Printable("\xff"), "\\xff");
  EXPECT_EQ(Printable("a\x80z"), "a\\x80z");                // stray
  EXPECT_EQ(Printable("\xc0\xaf"), "\\xc0\\xaf");           // overlong '/'
  EXPECT_EQ(Printable("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");  // overlong
  EXPECT_EQ(Printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
  EXPECT_EQ(Printable("\xf4\x90\x80\x80"),                  // > U+10FFFF
            "\\xf4\\x90\\x80\\x80");
  // A cut sequence, at the end or followed by text, which is read again.
  EXPECT_EQ(Printable("\xe2\x82"), "\\xe2\\x82");
  EXPECT_EQ(Printable("\xe2\x82@\xe2\x82\xac"), "\\xe2\\x82@\xe2\x82\xac");
  // A lead byte followed by a control: both escaped, the control as itself.
  EXPECT_EQ(Printable("\xc3\x1b"), "\\xc3\\x1b");
}

TEST(PrintableTest, BackslashStaysABackslash) {
  EXPECT_EQ(Printable("C:\\dir\\x1b"), "C:\\dir\\x1b");
}

TEST(PrintableTest, IsIdempotentAndLeavesNoControlForAnyTwoBytes) {
  // Every string of one or two bytes: what covers each rule's edges.
  for (int first = 0; first < 256; ++first) {
    for (int second = -1; second < 256; ++second) {
      std::string text(1, static_cast<char>(first));
      if (second >= 0) text.push_back(static_cast<char>(second));
      const std::string shown = Printable(text);
      ASSERT_EQ(Printable(shown), shown) << first << " " << second;
      ASSERT_EQ(TerminalControlsIn(shown), "") << first << " " << second;
      // Beyond ASCII, only a well-formed two-byte character outside C1 is
      // kept, as it was (a lone 0x80..0x9f is a C1 control on an 8-bit
      // terminal).
      const bool ascii = std::all_of(shown.begin(), shown.end(), [](char c) {
        return static_cast<unsigned char>(c) < 0x80;
      });
      if (!ascii) {
        ASSERT_EQ(shown, text);
        ASSERT_TRUE(first >= 0xc2 && first <= 0xdf && second >= 0x80 &&
                    second <= 0xbf && !(first == 0xc2 && second < 0xa0))
            << first << " " << second;
      }
    }
  }
}

// --- Library messages that quote other processes' text ---

class HostileHolderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    holder_ = std::make_unique<Child>(
        HoldLockAs(path_, kHostileProcessName, ready_, release_));
    ASSERT_EQ(ready_.Receive(), '.');
    // The kernel keeps the name as given: the test is about real bytes.
    ASSERT_EQ(internal::ProcessName(holder_->pid()), kHostileProcessName);
  }

  void TearDown() override {
    release_.Send();
    EXPECT_EQ(holder_->Wait(), 0);
  }

  const std::string path_ = onlyone::testing::MakeTempDir() + "/job.lock";
  Pipe ready_;
  Pipe release_;
  std::unique_ptr<Child> holder_;
};

TEST_F(HostileHolderTest, DescribeHoldersEscapesTheProcessName) {
  struct stat file;
  ASSERT_EQ(stat(path_.c_str(), &file), 0);
  const std::string described = internal::DescribeHolders(
      internal::FlockHolders(file.st_dev, file.st_ino));
  EXPECT_EQ(described, absl::StrCat("pid ", holder_->pid(), " (",
                                    kEscapedHostileProcessName, ")"));
}

TEST_F(HostileHolderTest, ScopedFileLockRefusalEscapesTheHolderName) {
  LockOptions options;
  options.timeout = absl::ZeroDuration();
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_, options);
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  const std::string message(lock.status().message());
  EXPECT_EQ(TerminalControlsIn(message), "") << message;
  EXPECT_EQ(message, absl::StrCat(path_, " is held by pid ", holder_->pid(),
                                  " (", kEscapedHostileProcessName, ")"));
}

TEST_F(HostileHolderTest, ScopedFileLockTimeoutEscapesTheHolderName) {
  LockOptions options;
  options.timeout = absl::Milliseconds(20);
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path_, options);
  ASSERT_TRUE(absl::IsDeadlineExceeded(lock.status())) << lock.status();
  const std::string message(lock.status().message());
  EXPECT_EQ(TerminalControlsIn(message), "") << message;
  EXPECT_THAT(message,
              HasSubstr(absl::StrCat("held by pid ", holder_->pid(), " (",
                                     kEscapedHostileProcessName, ")")));
}

// --- DescribeRunning: the label and the record's fields ---

InstanceInfo RecordedHolder(std::vector<std::string> command_line) {
  InstanceInfo info;
  info.pid = 4711;
  info.has_record = true;
  info.executable = "/usr/bin/backup";
  info.command_line = std::move(command_line);
  return info;
}

TEST(DescribeRunningTest, EscapesTheRecordedCommandLine) {
  const std::string described = SingleInstance::DescribeRunning(
      "nightly", RecordedHolder({"/usr/bin/backup", "\x1b]0;pwn\x07",
                                 std::string(kUtf8Csi) + "2J"}));
  EXPECT_EQ(TerminalControlsIn(described), "") << described;
  EXPECT_EQ(described,
            "nightly is already running (pid 4711, /usr/bin/backup "
            "\\x1b]0;pwn\\x07 \\u009b2J)");
}

TEST(DescribeRunningTest, EscapesTheRecordedExecutable) {
  InstanceInfo info = RecordedHolder({});
  info.executable = absl::StrCat("/tmp/\x1b[2J", kUtf8Csi, "evil");
  const std::string described =
      SingleInstance::DescribeRunning("nightly", info);
  EXPECT_EQ(described,
            "nightly is already running (pid 4711, /tmp/\\x1b[2J\\u009bevil)");
}

TEST(DescribeRunningTest, EscapesALockPathLabel) {
  const std::string described = SingleInstance::DescribeHeld(
      "/srv/\x1b]0;pwn\x07/job.lock", RecordedHolder({"/usr/bin/backup"}));
  EXPECT_EQ(described,
            "/srv/\\x1b]0;pwn\\x07/job.lock is held by pid 4711 "
            "(/usr/bin/backup)");
}

TEST(DescribeRunningTest, CutsALongCommandLineBetweenCharacters) {
  // 100 three-byte euro signs: byte 256 falls inside the 86th.
  std::string euros;
  for (int i = 0; i < 100; ++i) euros += "\xe2\x82\xac";
  const std::string described =
      SingleInstance::DescribeRunning("nightly", RecordedHolder({euros}));
  std::string kept;
  for (int i = 0; i < 85; ++i) kept += "\xe2\x82\xac";
  EXPECT_EQ(described, absl::StrCat("nightly is already running (pid 4711, ",
                                    kept, "...)"));
  EXPECT_THAT(described, Not(HasSubstr("\\x")));
}

}  // namespace
}  // namespace onlyone
