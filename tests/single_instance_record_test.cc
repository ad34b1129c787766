// Unit tests of SingleInstance's internals: the owner record format and its
// torn-read safety, this process's identity, directory checks and the
// message wire format.

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/instance_channel.h"
#include "onlyone/internal/instance_paths.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/internal/user_name.h"
#include "onlyone/version.h"
#include "tests/test_util.h"

namespace onlyone::internal {
namespace {

using ::onlyone::testing::kNobodyUid;
using ::onlyone::testing::MakeTempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

OwnerRecord Sample() {
  OwnerRecord record;
  record.pid = 4711;
  record.locker_pid = 4700;
  record.start_ticks = 987654321;
  record.process_start_time = absl::FromUnixMillis(1795316401250);
  record.boot_id = "0f8e6d3c-1111-2222-3333-444455556666";
  record.hostname = "build-7";
  record.uid = 1000;
  record.user = "alice";
  record.executable = "/usr/bin/back\\up";
  record.command_line = {"/usr/bin/backup",
                         "--label=a\nb",
                         "tab\there",
                         "caf\xc3\xa9",
                         std::string("nul\0byte", 8),
                         ""};
  record.acquired_at = absl::FromUnixMillis(1795316401310);
  record.version = "0.1.0";
  return record;
}

void ExpectSame(const OwnerRecord& a, const OwnerRecord& b) {
  EXPECT_EQ(a.pid, b.pid);
  EXPECT_EQ(a.locker_pid, b.locker_pid);
  EXPECT_EQ(a.start_ticks, b.start_ticks);
  EXPECT_EQ(a.process_start_time, b.process_start_time);
  EXPECT_EQ(a.boot_id, b.boot_id);
  EXPECT_EQ(a.hostname, b.hostname);
  EXPECT_EQ(a.uid, b.uid);
  EXPECT_EQ(a.user, b.user);
  EXPECT_EQ(a.executable, b.executable);
  EXPECT_EQ(a.command_line, b.command_line);
  EXPECT_EQ(a.command_line_truncated, b.command_line_truncated);
  EXPECT_EQ(a.acquired_at, b.acquired_at);
  EXPECT_EQ(a.version, b.version);
}

// `body` behind a well-formed header (magic, version, length, checksum), as
// EncodeOwnerRecord frames a record: for bodies it would never write.
std::string WithValidHeader(const std::string& body) {
  return absl::StrCat("onlyone-owner 1 ", body.size(), " ",
                      absl::Hex(Fnv1a64(body), absl::kZeroPad16), "\n", body);
}

// The hand-written formatter agrees with absl::FormatTime everywhere:
// leap days, century years, both ends of its range, and beyond them.
TEST(RecordTimeTest, FormatsLikeAbslFormatTime) {
  auto expected = [](absl::Time time) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%E6S%Ez", time,
                            absl::UTCTimeZone());
  };
  std::vector<absl::Time> times = {
      absl::UnixEpoch(),
      absl::FromUnixMicros(1),
      absl::FromCivil(absl::CivilSecond(2000, 2, 29, 23, 59, 59),
                      absl::UTCTimeZone()),
      absl::FromCivil(absl::CivilSecond(2100, 2, 28, 12, 0, 0),
                      absl::UTCTimeZone()),
      absl::FromCivil(absl::CivilSecond(2100, 3, 1, 0, 0, 0),
                      absl::UTCTimeZone()),
      absl::FromCivil(absl::CivilSecond(9999, 12, 31, 23, 59, 59),
                      absl::UTCTimeZone()) +
          absl::Microseconds(999999),
      absl::FromCivil(absl::CivilSecond(10000, 1, 1, 0, 0, 0),
                      absl::UTCTimeZone()),
      absl::FromUnixMicros(-1),
      absl::FromCivil(absl::CivilSecond(1969, 12, 31, 0, 0, 0),
                      absl::UTCTimeZone()),
  };
  uint64_t state = 12345;
  for (int i = 0; i < 100000; ++i) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    times.push_back(absl::FromUnixMicros(
        static_cast<int64_t>((state >> 1) % (int64_t{253402300800} * 1000000))));
  }
  for (absl::Time time : times) {
    ASSERT_EQ(FormatRecordTime(time), expected(time))
        << absl::ToUnixMicros(time);
  }
}

TEST(OwnerRecordTest, RoundTripsEveryFieldThroughTheTextFormat) {
  const std::string encoded = EncodeOwnerRecord(Sample());
  // Readable text: a header line, then key=value lines with escapes.
  EXPECT_THAT(encoded, ::testing::StartsWith("onlyone-owner 1 "));
  EXPECT_THAT(encoded, HasSubstr("\npid=4711\n"));
  EXPECT_THAT(encoded, HasSubstr("\narg=--label=a\\nb\n"));
  EXPECT_THAT(encoded, HasSubstr("\narg=nul\\x00byte\n"));
  EXPECT_THAT(encoded, HasSubstr("\nexe=/usr/bin/back\\\\up\n"));
  EXPECT_THAT(encoded, HasSubstr("\nstart_time=2026-11-22T"));
  std::optional<OwnerRecord> decoded = DecodeOwnerRecord(encoded);
  ASSERT_TRUE(decoded.has_value());
  ExpectSame(*decoded, Sample());
}

TEST(OwnerRecordTest, IdentityEncodedOnceFramesTheSameRecord) {
  OwnerRecord record = Sample();
  const EncodedIdentity identity = EncodeIdentity(record);
  EXPECT_EQ(identity.hash, Fnv1a64(identity.lines));
  EXPECT_THAT(identity.lines, ::testing::Not(HasSubstr("acquired=")));
  // The identity with the acquisition time appended is the whole record,
  // and the checksum continued from the identity's hash is the body's.
  const std::string framed = EncodeOwnerRecord(identity, record.acquired_at);
  EXPECT_EQ(framed,
            WithValidHeader(identity.lines +
                            "acquired=2026-11-22T03:00:01.310000+00:00\n"));
  EXPECT_THAT(framed, ::testing::EndsWith("\nacquired=2026-11-22T03:00:01."
                                          "310000+00:00\n"));
  std::optional<OwnerRecord> decoded = DecodeOwnerRecord(framed);
  ASSERT_TRUE(decoded.has_value());
  ExpectSame(*decoded, record);
  // Without an acquisition time there is no such line.
  record.acquired_at = absl::InfinitePast();
  decoded = DecodeOwnerRecord(EncodeOwnerRecord(identity, absl::InfinitePast()));
  ASSERT_TRUE(decoded.has_value());
  ExpectSame(*decoded, record);
}

TEST(OwnerRecordTest, IgnoresWhatFollowsTheRecord) {
  // A longer old record not yet truncated away.
  const std::string encoded = EncodeOwnerRecord(Sample());
  std::optional<OwnerRecord> decoded =
      DecodeOwnerRecord(encoded + "pid=1\ngarbage of an older, longer record");
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->pid, 4711);
}

TEST(OwnerRecordTest, RejectsDamagedRecords) {
  const std::string good = EncodeOwnerRecord(Sample());
  EXPECT_FALSE(DecodeOwnerRecord("").has_value());
  EXPECT_FALSE(DecodeOwnerRecord(good.substr(0, good.size() - 1)).has_value());
  std::string flipped = good;
  flipped[flipped.size() - 3] ^= 1;
  EXPECT_FALSE(DecodeOwnerRecord(flipped).has_value()) << "checksum";
  std::string magic = good;
  magic[0] = 'O';
  EXPECT_FALSE(DecodeOwnerRecord(magic).has_value());
  EXPECT_FALSE(DecodeOwnerRecord("pid=4711\nstart_ticks=1\n").has_value());
  // A body without a required key, though well-formed.
  const std::string body = "pid=1\nboot_id=x\n";
  EXPECT_FALSE(DecodeOwnerRecord(WithValidHeader(body)).has_value());
  const std::string complete = body + "start_ticks=5\n";
  std::optional<OwnerRecord> minimal =
      DecodeOwnerRecord(WithValidHeader(complete));
  ASSERT_TRUE(minimal.has_value());
  EXPECT_EQ(minimal->locker_pid, 1) << "defaults to pid";
  EXPECT_TRUE(minimal->command_line.empty());
}

TEST(OwnerRecordTest, CommandLineIsBounded) {
  std::vector<std::string> arguments(10, std::string(1000, 'a'));
  EXPECT_TRUE(TruncateCommandLine(arguments));
  size_t total = 0;
  for (const std::string& argument : arguments) total += argument.size();
  EXPECT_EQ(total, kMaxCommandLineBytes);
  EXPECT_EQ(arguments.size(), 5u);
  std::vector<std::string> exact(4, std::string(1024, 'b'));
  EXPECT_FALSE(TruncateCommandLine(exact));
  EXPECT_EQ(exact.size(), 4u);
}

TEST(OwnerRecordTest, ConcurrentReadersSeeTheOldOrTheNewRecordNeverAMix) {
  const std::string path = MakeTempDir() + "/torn.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  OwnerRecord short_record = Sample();
  short_record.pid = 1111;
  short_record.command_line = {"short"};
  OwnerRecord long_record = Sample();
  long_record.pid = 2222;
  long_record.command_line.assign(40, std::string(90, 'L'));
  ASSERT_TRUE(WriteOwnerRecord(fd, path, short_record, LockFilePlace::kElsewhere).ok());

  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop.load(); ++i) {
      ASSERT_TRUE(
          WriteOwnerRecord(fd, path, i % 2 == 0 ? long_record : short_record, LockFilePlace::kElsewhere)
              .ok());
    }
  });
  int seen_short = 0, seen_long = 0, none = 0;
  const int reader = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  for (int i = 0; i < 20000; ++i) {
    std::optional<OwnerRecord> record = ReadOwnerRecord(reader);
    if (!record.has_value()) {
      ++none;  // allowed: treated as "no record" after bounded retries
      continue;
    }
    if (record->pid == 1111) {
      ++seen_short;
      EXPECT_EQ(record->command_line, short_record.command_line);
    } else {
      ++seen_long;
      EXPECT_EQ(record->pid, 2222);
      EXPECT_EQ(record->command_line, long_record.command_line);
    }
  }
  stop = true;
  writer.join();
  close(reader);
  close(fd);
  EXPECT_GT(seen_short + seen_long, 0);
  EXPECT_LT(none, 20000);
}

TEST(OwnerRecordTest, WriteRefusesHardLinksAndSkipsReadOnlyDescriptors) {
  const std::string dir = MakeTempDir();
  const std::string path = dir + "/x.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  absl::StatusOr<bool> written = WriteOwnerRecord(fd, path, Sample(), LockFilePlace::kElsewhere);
  ASSERT_TRUE(written.ok());
  EXPECT_TRUE(*written);
  // Rewriting a shorter record truncates the longer one away.
  OwnerRecord shorter = Sample();
  shorter.command_line.clear();
  ASSERT_TRUE(WriteOwnerRecord(fd, path, shorter, LockFilePlace::kElsewhere).ok());
  struct stat info;
  ASSERT_EQ(fstat(fd, &info), 0);
  EXPECT_EQ(static_cast<size_t>(info.st_size),
            EncodeOwnerRecord(shorter).size());

  ASSERT_EQ(link(path.c_str(), (dir + "/second-name").c_str()), 0);
  absl::StatusOr<bool> linked = WriteOwnerRecord(fd, path, Sample(), LockFilePlace::kElsewhere);
  EXPECT_TRUE(absl::IsFailedPrecondition(linked.status()));
  EXPECT_THAT(std::string(linked.status().message()), HasSubstr(path));
  ASSERT_EQ(unlink((dir + "/second-name").c_str()), 0);

  const int read_only = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  absl::StatusOr<bool> skipped = WriteOwnerRecord(read_only, path, Sample(), LockFilePlace::kElsewhere);
  ASSERT_TRUE(skipped.ok()) << skipped.status();
  EXPECT_FALSE(*skipped);
  close(read_only);
  close(fd);
}

TEST(ProcessIdentityTest, SelfRecordDescribesThisProcess) {
  OwnerRecord self = SelfRecord(geteuid());
  EXPECT_EQ(self.pid, getpid());
  EXPECT_EQ(self.locker_pid, getpid());
  EXPECT_EQ(ProcessStartTicks(getpid()), self.start_ticks);
  EXPECT_FALSE(self.boot_id.empty());
  EXPECT_EQ(self.boot_id, BootId());
  EXPECT_EQ(self.uid, geteuid());
  EXPECT_THAT(self.executable, HasSubstr("single_instance_record_test"));
  ASSERT_FALSE(self.command_line.empty());
  EXPECT_THAT(self.command_line[0], HasSubstr("single_instance_record_test"));
  EXPECT_EQ(self.version, kVersion);
  EXPECT_LT(absl::Now() - self.process_start_time, absl::Hours(1));
  EXPECT_LE(self.process_start_time, absl::Now() + absl::Seconds(1));
  EXPECT_TRUE(RecordedProcessIsAlive(self));
  OwnerRecord other_start = self;
  ++other_start.start_ticks;
  EXPECT_FALSE(RecordedProcessIsAlive(other_start));
  EXPECT_FALSE(ProcessStartTicks(0).has_value());
}

// The user name comes from /etc/passwd when it lists the uid, else from NSS;
// either way it is what getpwuid(3) says.
TEST(ProcessIdentityTest, UserNameIsWhatTheSystemCallsTheUid) {
  for (const uid_t uid : {geteuid(), kNobodyUid, uid_t{0}}) {
    const struct passwd* entry = getpwuid(uid);
    EXPECT_EQ(SelfRecord(uid).user, entry != nullptr ? entry->pw_name : "")
        << uid;
  }
  EXPECT_EQ(SelfRecord(0).user, "root");
  // A uid nobody has: no name, and the rest of the identity is unchanged.
  constexpr uid_t kUnlisted = 3999999;
  ASSERT_EQ(getpwuid(kUnlisted), nullptr);
  const OwnerRecord unlisted = SelfRecord(kUnlisted);
  EXPECT_EQ(unlisted.uid, kUnlisted);
  EXPECT_EQ(unlisted.user, "");
  EXPECT_EQ(unlisted.pid, getpid());
}

TEST(ProcessIdentityTest, PasswdTextGivesTheFirstEntryForTheUid) {
  const std::string passwd =
      "root:x:0:0:root:/root:/bin/bash\n"
      "+nis:x:1000:1000::/:/bin/sh\n"   // NIS compat: left to NSS
      "-other:x:1000:1000::/:/bin/sh\n"
      ":x:1000:1000::/:/bin/sh\n"       // no name
      "broken:x\n"                      // too few fields
      "wrong:x:10o0:1000::/:/bin/sh\n"  // not a number
      "alice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
      "alias:x:1000:1000::/:/bin/sh\n"
      "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin";
  EXPECT_EQ(NameFromPasswdText(passwd, 0), "root");
  EXPECT_EQ(NameFromPasswdText(passwd, 1000), "alice");
  EXPECT_EQ(NameFromPasswdText(passwd, 65534), "nobody");  // no final newline
  EXPECT_EQ(NameFromPasswdText(passwd, 1001), std::nullopt);
  EXPECT_EQ(NameFromPasswdText("", 0), std::nullopt);
}

TEST(ProcessIdentityTest, AForkedChildHasItsOwnIdentity) {
  const OwnerRecord parent = SelfRecord(geteuid());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  if (child == 0) {
    const OwnerRecord mine = SelfRecord(geteuid());
    const bool ok = mine.pid == getpid() && mine.pid != parent.pid &&
                    ProcessStartTicks(getpid()) == mine.start_ticks;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(fds[0]);
  close(fds[1]);
}

TEST(DirectoryCheckTest, PrivateAndSharedRules) {
  struct stat info {};
  info.st_mode = S_IFDIR | 0700;
  info.st_uid = geteuid();
  EXPECT_TRUE(CheckPrivateDirectory("/p", info).ok());
  info.st_mode = S_IFDIR | 0755;
  EXPECT_TRUE(CheckPrivateDirectory("/p", info).ok());
  info.st_mode = S_IFDIR | 0720;
  EXPECT_TRUE(absl::IsFailedPrecondition(CheckPrivateDirectory("/p", info)));
  info.st_mode = S_IFDIR | 01777;
  EXPECT_TRUE(absl::IsFailedPrecondition(CheckPrivateDirectory("/p", info)));
  info.st_mode = S_IFLNK | 0777;
  EXPECT_THAT(std::string(CheckPrivateDirectory("/p", info).message()),
              HasSubstr("symbolic link"));
  info.st_mode = S_IFDIR | 0700;
  info.st_uid = geteuid() + 1;
  EXPECT_THAT(std::string(CheckPrivateDirectory("/p", info).message()),
              HasSubstr("owned by"));

  info.st_uid = 0;
  info.st_mode = S_IFDIR | 01777;
  EXPECT_TRUE(CheckSharedDirectory("/s", info).ok());
  info.st_mode = S_IFDIR | 0777;
  EXPECT_THAT(std::string(CheckSharedDirectory("/s", info).message()),
              HasSubstr("not sticky"));
  info.st_mode = S_IFDIR | 01777;
  info.st_uid = 1000;
  EXPECT_THAT(std::string(CheckSharedDirectory("/s", info).message()),
              HasSubstr("not root"));
}

TEST(DirectoryCheckTest, SocketPathSitsBesideTheLock) {
  EXPECT_EQ(SocketPathFor("/run/user/1000/onlyone-editor.lock"),
            "/run/user/1000/onlyone-editor.sock");
  EXPECT_EQ(SocketPathFor("/var/lock/job"), "/var/lock/job.sock");
}

TEST(DirectoryCheckTest, LockFileNamesCarryTheirDirectorysPrefix) {
  const InstanceDirectory runtime{"/run/user/1000", "onlyone-",
                                  /*shared=*/false, 1000};
  EXPECT_EQ(LockPathIn(runtime, "com.example.Editor"),
            "/run/user/1000/onlyone-com.example.Editor.lock");
  EXPECT_EQ(InstanceNameOf(runtime, "onlyone-com.example.Editor.lock"),
            "com.example.Editor");
  // Other programs' files, our sockets and session directories, and files
  // whose name part is not a valid name are not instances.
  EXPECT_EQ(InstanceNameOf(runtime, "editor.lock"), std::nullopt);
  EXPECT_EQ(InstanceNameOf(runtime, "onlyone-editor.sock"), std::nullopt);
  EXPECT_EQ(InstanceNameOf(runtime, "onlyone-session-c7"), std::nullopt);
  EXPECT_EQ(InstanceNameOf(runtime, "onlyone-..lock"), std::nullopt);
  EXPECT_EQ(InstanceNameOf(runtime, "onlyone-.lock"), std::nullopt);

  const InstanceDirectory own{"/tmp/onlyone-1000", "", /*shared=*/false,
                              1000};
  EXPECT_EQ(LockPathIn(own, "editor"), "/tmp/onlyone-1000/editor.lock");
  EXPECT_EQ(InstanceNameOf(own, "editor.lock"), "editor");
}

TEST(WireFormatTest, RequestsRoundTripAndMalformedOnesAreRejected) {
  ChannelMessage message;
  message.arguments = {"a", "", std::string("b\0c", 3)};
  message.working_directory = "/tmp";
  message.payload = std::string(1000, '\xff');
  const std::string frame = EncodeRequest(message);
  EXPECT_EQ(frame.substr(0, 4), "OO1Q");
  std::optional<ChannelMessage> decoded =
      DecodeRequestBody(absl::string_view(frame).substr(kFrameHeaderBytes));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->arguments, message.arguments);
  EXPECT_EQ(decoded->working_directory, "/tmp");
  EXPECT_EQ(decoded->payload, message.payload);
  const absl::string_view body =
      absl::string_view(frame).substr(kFrameHeaderBytes);
  EXPECT_FALSE(DecodeRequestBody(body.substr(0, body.size() - 1)).has_value());
  EXPECT_FALSE(DecodeRequestBody(std::string(body) + "x").has_value());
  EXPECT_FALSE(DecodeRequestBody("\xff\xff\xff\xff").has_value());
}

}  // namespace
}  // namespace onlyone::internal
