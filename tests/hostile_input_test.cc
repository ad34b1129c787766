// Hostile input: what a careless or malicious user can put where onlyone
// looks, and what onlyone must do with it: a socket as the lock file, paths
// longer than the kernel takes, lock files full of garbage or forged owner
// records, escapes in names and records, and files another user planted in a
// shared directory. Each case must give a clear status (naming the path or
// the name and why), answer quickly, and leave the input as it was.
//
// Holders are real processes (forked children that synchronise through
// pipes); everything lives under TEST_TMPDIR, or under a short /tmp
// directory of the test's own where a socket path must fit sun_path or
// another user must reach it.

#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/scoped_file_lock.h"
#include "onlyone/single_instance.h"
#include "tests/cli_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::BecomeNobody;
using ::onlyone::testing::Child;
using ::onlyone::testing::kNobodyUid;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::MakeTempDirOtherUsersCanReach;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::ReadFileOrEmpty;
using ::onlyone::testing::RemoveTree;
using ::onlyone::testing::RunOnlyone;
using ::testing::HasSubstr;
using ::testing::Not;

// Everything lstat(2) says that a change would alter.
struct FileState {
  bool exists = false;
  dev_t device = 0;
  ino_t inode = 0;
  mode_t mode = 0;
  uid_t uid = 0;
  off_t size = 0;
  nlink_t links = 0;
  struct timespec modified = {};
  std::string contents;  // regular files only
};

FileState StateOf(const std::string& path) {
  FileState state;
  struct stat status;
  if (lstat(path.c_str(), &status) != 0) return state;
  state.exists = true;
  state.device = status.st_dev;
  state.inode = status.st_ino;
  state.mode = status.st_mode;
  state.uid = status.st_uid;
  state.size = status.st_size;
  state.links = status.st_nlink;
  state.modified = status.st_mtim;
  if (S_ISREG(status.st_mode)) state.contents = ReadFileOrEmpty(path);
  return state;
}

void ExpectUnchanged(const FileState& before, const std::string& path) {
  const FileState after = StateOf(path);
  EXPECT_TRUE(after.exists) << path;
  EXPECT_EQ(after.inode, before.inode) << path;
  EXPECT_EQ(after.device, before.device) << path;
  EXPECT_EQ(after.mode, before.mode) << path;
  EXPECT_EQ(after.uid, before.uid) << path;
  EXPECT_EQ(after.size, before.size) << path;
  EXPECT_EQ(after.links, before.links) << path;
  EXPECT_EQ(after.modified.tv_sec, before.modified.tv_sec) << path;
  EXPECT_EQ(after.modified.tv_nsec, before.modified.tv_nsec) << path;
  EXPECT_TRUE(after.contents == before.contents)
      << path << ": contents changed (" << before.contents.size() << " -> "
      << after.contents.size() << " bytes)";
}

void WriteFile(const std::string& path, const std::string& contents,
               mode_t mode = 0644) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                      mode);
  ASSERT_GE(fd, 0) << path;
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t wrote =
        write(fd, contents.data() + written, contents.size() - written);
    ASSERT_GT(wrote, 0) << path;
    written += static_cast<size_t>(wrote);
  }
  ASSERT_EQ(fchmod(fd, mode), 0);
  ASSERT_EQ(close(fd), 0);
}

// Bytes of every value, NUL and controls included, reproducibly.
std::string Garbage(size_t size, uint64_t seed) {
  std::string bytes(size, '\0');
  uint64_t state = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (char& byte : bytes) {
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    byte = static_cast<char>((state * 0x2545f4914f6cdd1dULL) >> 56);
  }
  return bytes;
}

bool HasControlBytes(absl::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// A listening unix socket at `path` (short enough for sun_path).
int BindSocket(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof address.sun_path) return -1;
  memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) !=
          0 ||
      listen(fd, 4) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool CanConnect(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const bool connected = connect(fd, reinterpret_cast<const sockaddr*>(&address),
                                 sizeof address) == 0;
  close(fd);
  return connected;
}

// A child that holds a plain ScopedFileLock (no owner record) on `path`
// until the test sends on `release`.
Child HoldPlainLock(const std::string& path, Pipe& ready, Pipe& release) {
  return Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path);
    if (!lock.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return lock->Release().ok() ? 0 : 3;
  });
}

class HostileInputTest : public ::testing::Test {
 protected:
  HostileInputTest() : dir_(MakeTempDir()) {}
  const std::string dir_;
};

// A directory under /tmp whose paths fit sun_path, removed afterwards.
class ShortDirectoryTest : public ::testing::Test {
 protected:
  ShortDirectoryTest() : dir_(MakeTempDirOtherUsersCanReach()) {}
  ~ShortDirectoryTest() override { RemoveTree(dir_); }
  const std::string dir_;
};

// --- A socket where the lock file should be ---------------------------------

TEST_F(ShortDirectoryTest, ASocketAsTheLockPathIsRefusedAndLeft) {
  const std::string path = dir_ + "/sock.lock";
  const int listener = BindSocket(path);
  ASSERT_GE(listener, 0);
  const FileState before = StateOf(path);

  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path);
  ASSERT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr("socket"));

  absl::StatusOr<SingleInstance> instance =
      SingleInstance::AcquireAtPath(path);
  ASSERT_TRUE(absl::IsInvalidArgument(instance.status())) << instance.status();
  EXPECT_THAT(std::string(instance.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(instance.status().message()), HasSubstr("socket"));

  absl::StatusOr<std::optional<InstanceInfo>> holder =
      SingleInstance::HolderAtPath(path);
  ASSERT_TRUE(absl::IsInvalidArgument(holder.status())) << holder.status();
  EXPECT_THAT(std::string(holder.status().message()), HasSubstr(path));

  ExpectUnchanged(before, path);
  EXPECT_TRUE(CanConnect(path));  // still the listener's socket
  close(listener);
}

// --- Paths longer than the kernel takes -------------------------------------

// Makes the directories of a path of `length` bytes below `base` (200-byte
// components, each made relative to its parent's descriptor, so that paths
// beyond PATH_MAX can be built) and returns the path of a file in the
// deepest one; "" on failure.
std::string MakeDeepPath(const std::string& base, size_t length) {
  std::string path = base;
  int parent = open(base.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  while (parent >= 0 && path.size() + 1 + 200 + 1 + 10 < length) {
    const std::string component(200, 'd');
    const int made = mkdirat(parent, component.c_str(), 0700);
    const int child =
        made == 0 ? openat(parent, component.c_str(),
                           O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                  : -1;
    close(parent);
    parent = child;
    path += "/" + component;
  }
  if (parent < 0) return "";
  close(parent);
  const size_t file_length = length - path.size() - 1;
  return path + "/" + std::string(file_length - 5, 'f') + ".lock";
}

TEST_F(HostileInputTest, APathOfFourThousandBytesWorks) {
  const std::string path = MakeDeepPath(dir_, 4050);
  ASSERT_EQ(path.size(), 4050u);
  ASSERT_LT(path.size(), static_cast<size_t>(PATH_MAX));
  {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path);
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_TRUE(lock->Release().ok());
  }
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::AcquireAtPath(path);
  ASSERT_TRUE(instance.ok()) << instance.status();
  absl::StatusOr<std::optional<InstanceInfo>> holder =
      SingleInstance::HolderAtPath(path);
  ASSERT_TRUE(holder.ok()) << holder.status();
  ASSERT_TRUE(holder->has_value());
  EXPECT_EQ((*holder)->pid, getpid());
  EXPECT_TRUE((*holder)->has_record);
  EXPECT_TRUE(instance->Release().ok());
}

TEST_F(HostileInputTest, PathsTheKernelRefusesGiveAClearStatus) {
  const std::string too_long = dir_ + "/" +
                               std::string(PATH_MAX + 100, 'p') + ".lock";
  const std::string long_component =
      dir_ + "/" + std::string(NAME_MAX + 1, 'c') + ".lock";
  const std::string deep_too_long = MakeDeepPath(dir_, PATH_MAX + 200);
  ASSERT_FALSE(deep_too_long.empty());
  for (const std::string& path : {too_long, long_component, deep_too_long}) {
    SCOPED_TRACE(absl::StrCat(path.size(), "-byte path"));
    const absl::Status lock = ScopedFileLock::Acquire(path).status();
    EXPECT_FALSE(lock.ok());
    EXPECT_THAT(std::string(lock.message()), HasSubstr(path));
    EXPECT_THAT(std::string(lock.message()), HasSubstr("too long"));

    const absl::Status instance = SingleInstance::AcquireAtPath(path).status();
    EXPECT_FALSE(instance.ok());
    EXPECT_THAT(std::string(instance.message()), HasSubstr(path));
    EXPECT_THAT(std::string(instance.message()), HasSubstr("too long"));

    const absl::Status holder = SingleInstance::HolderAtPath(path).status();
    EXPECT_FALSE(holder.ok());
    EXPECT_THAT(std::string(holder.message()), HasSubstr(path));
  }
  // A directory beyond PATH_MAX for a named instance.
  InstanceOptions options;
  options.directory = too_long;
  const absl::Status named = SingleInstance::Acquire("job", options).status();
  EXPECT_FALSE(named.ok());
  EXPECT_THAT(std::string(named.message()), HasSubstr(too_long));
  // Nothing was created: the only entries are the deep directories.
  EXPECT_FALSE(StateOf(long_component).exists);
}

// --- Lock files full of garbage or forged records ---------------------------

// Holder() of a file held by a plain lock in a child (no record of its own)
// must name the child from /proc/locks, not believe the file, answer within
// a second, and leave the file byte-identical; so must `onlyone status`.
void ExpectHolderSeesThroughTheFile(const std::string& path,
                                    const std::string& reason_part) {
  const FileState before = StateOf(path);
  Pipe ready, release;
  Child holder = HoldPlainLock(path, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  const absl::Time start = absl::Now();
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::HolderAtPath(path);
  const absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(info->has_value());
  EXPECT_EQ((*info)->pid, holder.pid());
  EXPECT_FALSE((*info)->has_record);
  EXPECT_THAT((*info)->no_record_reason, HasSubstr(reason_part));
  EXPECT_FALSE(HasControlBytes((*info)->no_record_reason));
  EXPECT_LT(took, absl::Seconds(1));
  const std::string described =
      SingleInstance::DescribeHeld(path, **info);
  EXPECT_THAT(described, HasSubstr(absl::StrCat("pid ", holder.pid())));
  EXPECT_FALSE(HasControlBytes(described)) << described;

  const absl::Status refused = SingleInstance::AcquireAtPath(path).status();
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_FALSE(HasControlBytes(refused.message()));

  const testing::Result status = RunOnlyone({"status", "--lock", path});
  EXPECT_EQ(status.code, 0) << status.err;
  EXPECT_THAT(status.out, HasSubstr(absl::StrCat(holder.pid())));
  for (char c : status.out + status.err) {
    if (c == '\n') continue;
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        << "raw control byte in onlyone status output";
  }

  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  ExpectUnchanged(before, path);
  // Free again: nothing holds it, and the file is still untouched.
  absl::StatusOr<std::optional<InstanceInfo>> free =
      SingleInstance::HolderAtPath(path);
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_FALSE(free->has_value());
  ExpectUnchanged(before, path);
}

TEST_F(HostileInputTest, TenMegabytesOfGarbageAreNotBelievedNorTouched) {
  const std::string path = dir_ + "/garbage.lock";
  WriteFile(path, Garbage(10 << 20, 1));
  ExpectHolderSeesThroughTheFile(path, "");
  // Taking the lock does not write a record into someone else's data.
  const FileState before = StateOf(path);
  absl::StatusOr<SingleInstance> instance = SingleInstance::AcquireAtPath(path);
  ASSERT_TRUE(instance.ok()) << instance.status();
  ASSERT_TRUE(instance->Release().ok());
  ExpectUnchanged(before, path);
}

// A record as the library writes it, for `pid`, with the other fields given.
internal::OwnerRecord RecordFor(pid_t pid) {
  internal::OwnerRecord record;
  record.pid = pid;
  record.locker_pid = pid;
  record.start_ticks = internal::ProcessStartTicks(pid).value_or(0);
  record.boot_id = internal::BootId();
  record.hostname = "host";
  record.uid = 0;
  record.user = "root";
  record.executable = "/usr/bin/job";
  record.command_line = {"/usr/bin/job", "--flag"};
  record.version = "0.1.0";
  return record;
}

std::string WithHeader(absl::string_view body, uint64_t length,
                       uint64_t hash) {
  return absl::StrCat(internal::kRecordMagic, " ", internal::kRecordFormatVersion,
                      " ", length, " ", absl::Hex(hash, absl::kZeroPad16),
                      "\n", body);
}

TEST_F(HostileInputTest, ForgedRecordsAreNotBelievedNorTouched) {
  const std::string valid = internal::EncodeOwnerRecord(RecordFor(1));
  const std::string body = valid.substr(valid.find('\n') + 1);
  const uint64_t hash = internal::Fnv1a64(body);
  std::string nul_body = body;
  nul_body.insert(nul_body.find("hostname=") + 9, std::string("\0\0evil", 6));
  internal::OwnerRecord huge = RecordFor(1);
  huge.command_line = {std::string(1 << 20, 'A')};  // no truncation applied
  const std::string huge_body = [&] {
    const std::string encoded = internal::EncodeOwnerRecord(huge);
    return encoded.substr(encoded.find('\n') + 1);
  }();
  struct Case {
    const char* what;
    std::string contents;
    std::string reason;  // part of no_record_reason ("" = any)
  };
  const std::vector<Case> cases = {
      {"a record naming pid 1, true in every other respect", valid,
       "pid 1"},
      {"a length longer than the file", WithHeader(body, body.size() + 5000, hash),
       ""},
      {"a length of 2^64-1", WithHeader(body, UINT64_MAX, hash), ""},
      {"a wrong checksum", WithHeader(body, body.size(), hash ^ 1), ""},
      {"NUL bytes in the body", WithHeader(nul_body, nul_body.size(),
                                           internal::Fnv1a64(nul_body)),
       ""},
      {"a 1 MiB argument line", WithHeader(huge_body, huge_body.size(),
                                           internal::Fnv1a64(huge_body)),
       ""},
      {"a header and nothing else",
       absl::StrCat(internal::kRecordMagic, " 1 ", body.size(), " ",
                    absl::Hex(hash, absl::kZeroPad16), "\n"),
       ""},
      {"escapes in the header", "onlyone-owner\x1b[2J 1 \x1b]0;x\x07\n", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string path = dir_ + "/forged.lock";
    unlink(path.c_str());
    WriteFile(path, c.contents);
    ExpectHolderSeesThroughTheFile(path, c.reason);
  }
}

// A record that is believed (it names the holder itself) but whose fields
// carry terminal escapes: shown escaped, never raw.
TEST_F(HostileInputTest, EscapesInABelievedRecordAreShownEscaped) {
  const std::string path = dir_ + "/escapes.lock";
  Pipe ready, release;
  Child holder = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path);
    if (!lock.ok()) return 2;
    internal::OwnerRecord record = RecordFor(getpid());
    record.executable = "/usr/bin/\x1b]0;owned\x07job";
    record.command_line = {"job\x1b[2J", "\xc2\x9b" "31m", "line\nbreak"};
    record.hostname = "host\x1b[5m";
    record.user = "us\rer";
    const std::string contents = internal::EncodeOwnerRecord(record);
    if (pwrite(lock->fd(), contents.data(), contents.size(), 0) !=
        static_cast<ssize_t>(contents.size())) {
      return 3;
    }
    ready.Send();
    release.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::HolderAtPath(path);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(info->has_value());
  EXPECT_TRUE((*info)->has_record) << (*info)->no_record_reason;
  // The data is exact...
  EXPECT_EQ((*info)->command_line.at(0), "job\x1b[2J");
  // ...and what is shown is not.
  const std::string described = SingleInstance::DescribeHeld(path, **info);
  EXPECT_FALSE(HasControlBytes(described)) << described;
  EXPECT_THAT(described, Not(HasSubstr("\xc2\x9b")));
  EXPECT_THAT(described, HasSubstr("job\\x1b[2J"));
  const absl::Status refused = SingleInstance::AcquireAtPath(path).status();
  EXPECT_TRUE(absl::IsUnavailable(refused)) << refused;
  EXPECT_FALSE(HasControlBytes(refused.message())) << refused;
  const testing::Result status = RunOnlyone({"status", "--lock", path});
  EXPECT_EQ(status.code, 0) << status.err;
  for (char c : status.out + status.err) {
    if (c == '\n') continue;
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
        << "raw control byte in onlyone status output: " << status.out;
  }
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(HostileInputTest, EscapesAndNulInNamesAreRejectedAndShownEscaped) {
  InstanceOptions options;
  options.directory = dir_;
  for (const std::string& name :
       {std::string("evil\x1b[2J"), std::string("a\0b", 3),
        std::string("\xc2\x9b" "31m"), std::string("x\x7f")}) {
    SCOPED_TRACE(absl::CEscape(name));
    const absl::Status valid = SingleInstance::ValidateName(name);
    ASSERT_TRUE(absl::IsInvalidArgument(valid)) << valid;
    EXPECT_FALSE(HasControlBytes(valid.message())) << valid;
    EXPECT_THAT(std::string(valid.message()), HasSubstr("byte 0x"));
    const absl::Status acquired = SingleInstance::Acquire(name, options).status();
    EXPECT_TRUE(absl::IsInvalidArgument(acquired)) << acquired;
    EXPECT_FALSE(HasControlBytes(acquired.message()));
  }
  EXPECT_EQ(testing::RunShell(absl::StrCat("test -z \"$(ls -A '", dir_, "')\"")),
            0)
      << "a rejected name created a file";
}

// --- Files another user planted in a shared directory -----------------------

// The shared directory: root-owned, sticky and world-writable like
// /run/lock, under /tmp so that `nobody` reaches it.
class PlantedByAnotherUserTest : public ShortDirectoryTest {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
    shared_ = dir_ + "/shared";
    ASSERT_EQ(mkdir(shared_.c_str(), 0700), 0);
    ASSERT_EQ(chmod(shared_.c_str(), 01777), 0);
    options_.directory = shared_;
  }

  // Runs `plant` as nobody in a child; true when it succeeded.
  bool PlantAsNobody(const std::function<bool()>& plant) {
    Child planter = Child::Fork([&] {
      if (!BecomeNobody()) return 10;
      return plant() ? 0 : 1;
    });
    return planter.Wait() == 0;
  }

  std::string shared_;
  InstanceOptions options_;
};

// What root's three entry points do on a planted lock path: the status of
// each, which must be a refusal naming the path unless `lockable`, and the
// planted file is unchanged afterwards (so is `target`, if any).
void ExpectRefusedAndUntouched(const InstanceOptions& options,
                               const std::string& name,
                               const std::string& path,
                               absl::StatusCode expected,
                               const std::string& reason,
                               const std::string& target = "") {
  const FileState before = StateOf(path);
  const FileState target_before = target.empty() ? FileState() : StateOf(target);

  const absl::Status instance = SingleInstance::Acquire(name, options).status();
  EXPECT_EQ(instance.code(), expected) << instance;
  EXPECT_THAT(std::string(instance.message()), HasSubstr(path));
  EXPECT_THAT(std::string(instance.message()), HasSubstr(reason));

  const absl::Status at_path = SingleInstance::AcquireAtPath(path).status();
  EXPECT_EQ(at_path.code(), expected) << at_path;
  EXPECT_THAT(std::string(at_path.message()), HasSubstr(path));

  absl::StatusOr<std::optional<InstanceInfo>> holder =
      SingleInstance::Holder(name, options);
  if (holder.ok()) {
    EXPECT_FALSE(holder->has_value());
  } else {
    EXPECT_THAT(std::string(holder.status().message()), HasSubstr(path));
  }
  ExpectUnchanged(before, path);
  if (!target.empty()) ExpectUnchanged(target_before, target);
}

TEST_F(PlantedByAnotherUserTest, ASymlinkIsNotFollowed) {
  const std::string target = dir_ + "/roots-file";
  WriteFile(target, "root's data\n", 0644);
  const std::string path = shared_ + "/job.lock";
  ASSERT_TRUE(PlantAsNobody([&] {
    return symlink(target.c_str(), path.c_str()) == 0;
  }));
  ExpectRefusedAndUntouched(options_, "job", path,
                            absl::StatusCode::kInvalidArgument, "symbolic link",
                            target);
  const absl::Status lock = ScopedFileLock::Acquire(path).status();
  EXPECT_TRUE(absl::IsInvalidArgument(lock)) << lock;
  EXPECT_EQ(ReadFileOrEmpty(target), "root's data\n");
}

TEST_F(PlantedByAnotherUserTest, AHardLinkIsNeverWrittenThrough) {
  // nobody's own empty file elsewhere, linked in as the lock file: an empty
  // file would take a record, so only the link count can stop the write.
  const std::string target = shared_ + "/nobodys-file";
  const std::string path = shared_ + "/job.lock";
  ASSERT_TRUE(PlantAsNobody([&] {
    const int fd = open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    return fd >= 0 && close(fd) == 0 && link(target.c_str(), path.c_str()) == 0;
  }));
  ExpectRefusedAndUntouched(options_, "job", path,
                            absl::StatusCode::kFailedPrecondition,
                            "hard links", target);
  EXPECT_EQ(StateOf(target).size, 0);
}

TEST_F(PlantedByAnotherUserTest, AFifoIsRefusedWithoutBlocking) {
  const std::string path = shared_ + "/job.lock";
  ASSERT_TRUE(PlantAsNobody([&] { return mkfifo(path.c_str(), 0666) == 0; }));
  const absl::Time start = absl::Now();
  ExpectRefusedAndUntouched(options_, "job", path,
                            absl::StatusCode::kInvalidArgument, "FIFO");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(PlantedByAnotherUserTest, ASocketIsRefused) {
  const std::string path = shared_ + "/job.lock";
  Pipe bound, done;
  Child listener = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    const int fd = BindSocket(path);
    if (fd < 0) return 1;
    bound.Send();
    done.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_EQ(bound.Receive(), '.');
  ExpectRefusedAndUntouched(options_, "job", path,
                            absl::StatusCode::kInvalidArgument, "socket");
  EXPECT_TRUE(CanConnect(path));
  done.Send();
  EXPECT_EQ(listener.Wait(), 0);
}

// nobody's private file (0600, with data) at root's lock path: root may open
// it, but it holds someone's data, so no record goes in; the lock itself
// works (flock(2) needs no permission beyond opening).
TEST_F(PlantedByAnotherUserTest, APrivateFileWithDataIsLockedButNotWritten) {
  const std::string path = shared_ + "/job.lock";
  ASSERT_TRUE(PlantAsNobody([&] {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    return fd >= 0 && write(fd, "nobody's\n", 9) == 9 && close(fd) == 0;
  }));
  const FileState before = StateOf(path);
  ASSERT_EQ(before.uid, kNobodyUid);
  {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("job", options_);
    ASSERT_TRUE(instance.ok()) << instance.status();
    absl::StatusOr<std::optional<InstanceInfo>> holder =
        SingleInstance::Holder("job", options_);
    ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.status();
    EXPECT_EQ((*holder)->pid, getpid());
    EXPECT_FALSE((*holder)->has_record);
    ASSERT_TRUE(instance->Release().ok());
  }
  ExpectUnchanged(before, path);
}

// The same with an empty file: empty would otherwise take a record, but it
// is nobody's private file, which root may write only by privilege.
TEST_F(PlantedByAnotherUserTest, AnEmptyPrivateFileIsLockedButNotWritten) {
  const std::string path = shared_ + "/job.lock";
  ASSERT_TRUE(PlantAsNobody([&] {
    const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    return fd >= 0 && close(fd) == 0;
  }));
  const FileState before = StateOf(path);
  {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("job", options_);
    ASSERT_TRUE(instance.ok()) << instance.status();
    ASSERT_TRUE(instance->Release().ok());
  }
  ExpectUnchanged(before, path);
}

// The other way round: root's private file at nobody's lock path. nobody
// cannot open it: a clear PermissionDenied naming the path, nothing changed.
TEST_F(PlantedByAnotherUserTest, AnotherUsersPrivateFileIsPermissionDenied) {
  const std::string path = shared_ + "/job.lock";
  WriteFile(path, "root's\n", 0600);
  const FileState before = StateOf(path);
  Pipe messages;
  Child victim = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    const absl::Status instance =
        SingleInstance::Acquire("job", options_).status();
    const absl::Status lock = ScopedFileLock::Acquire(path).status();
    const std::string text =
        absl::StrCat(instance.message(), "\n", lock.message(), "\n");
    if (write(messages.write_fd(), text.data(), text.size()) < 0) return 3;
    if (!absl::IsPermissionDenied(instance)) return 1;
    if (!absl::IsPermissionDenied(lock)) return 2;
    return 0;
  });
  EXPECT_EQ(victim.Wait(), 0);
  messages.CloseWrite();
  const std::string text = messages.ReadAll();
  EXPECT_THAT(text, HasSubstr(path));
  EXPECT_THAT(text, HasSubstr("Permission denied"));
  ExpectUnchanged(before, path);
}

}  // namespace
}  // namespace onlyone
