// Tests of SingleInstance with real processes: refusal with holder info,
// crashes, dead and reused-pid records, the wait and replace policies,
// scopes and directory safety, planted files, cross-user machine locks,
// listing, and the fork hand-off. Processes synchronise through pipes.

#include "onlyone/single_instance.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/version.h"
#include "tests/single_instance_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::BecomeNobody;
using ::onlyone::testing::CarriedPids;
using ::onlyone::testing::Child;
using ::onlyone::testing::HoldInstanceInChild;
using ::onlyone::testing::HoldWithRawFlock;
using ::onlyone::testing::InstanceDirectoryTest;
using ::onlyone::testing::kNobodyUid;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::ScopedEnv;
using ::onlyone::testing::ScopedTestRoot;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::ReadFileOrEmpty;
using ::onlyone::testing::RunShell;
using ::onlyone::testing::WaitForBlockedWaiters;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

void WriteFile(const std::string& path, const std::string& contents,
               mode_t mode = 0644) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, contents.data(), contents.size()),
            static_cast<ssize_t>(contents.size()));
  close(fd);
}

// Whether any process holds a flock(2) lock on `path` (per /proc/locks).
bool KernelSaysHeld(const std::string& path) {
  struct stat file;
  if (stat(path.c_str(), &file) != 0) return false;
  return !internal::FlockHolders(file.st_dev, file.st_ino).empty();
}

// A child that only waits, as a live process with a known pid.
Child Bystander(Pipe& release) {
  return Child::Fork([&] {
    release.Receive(absl::Hours(1));
    return 0;
  });
}

internal::OwnerRecord RecordFor(pid_t pid, uint64_t start_ticks) {
  internal::OwnerRecord record;
  record.pid = pid;
  record.locker_pid = pid;
  record.start_ticks = start_ticks;
  record.process_start_time = absl::Now();
  record.boot_id = internal::BootId();
  record.hostname = "crafted-host";
  record.uid = geteuid();
  record.user = "crafted";
  record.executable = "/usr/bin/crafted";
  record.command_line = {"/usr/bin/crafted", "--by-hand"};
  record.acquired_at = absl::Now();
  record.version = kVersion;
  return record;
}

// `options` with the wait policy: wait at most `timeout` for the holder.
InstanceOptions WithWaitPolicy(InstanceOptions options,
                               absl::Duration timeout) {
  options.on_conflict = ConflictPolicy::kWait;
  options.wait_timeout = timeout;
  return options;
}

// `options` with the replace policy: SIGTERM to the holder, SIGKILL after
// `grace_period`.
InstanceOptions WithReplacePolicy(
    InstanceOptions options,
    absl::Duration grace_period = InstanceOptions().grace_period) {
  options.on_conflict = ConflictPolicy::kReplace;
  options.grace_period = grace_period;
  return options;
}

class SingleInstanceTest : public InstanceDirectoryTest {};

// ---------------------------------------------------------------------------
// Names.

TEST_F(SingleInstanceTest, AcceptsReverseDomainAndLongNames) {
  for (const std::string& name :
       {std::string("com.example.Editor"), std::string("a"),
        std::string("nightly-backup_2.0"), std::string("..."),
        std::string(200, 'x')}) {
    absl::StatusOr<std::string> path = SingleInstance::LockPath(name, options_);
    ASSERT_TRUE(path.ok()) << name << ": " << path.status();
    EXPECT_EQ(*path, PathOf(name));
  }
}

TEST_F(SingleInstanceTest, RejectsBadNamesSayingWhy) {
  struct Case {
    std::string name;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"", "empty"},
      {".", "names a directory"},
      {"..", "names a directory"},
      {"a/b", "character '/' at position 2"},
      {"../etc/passwd", "character '/' at position 3"},
      {"a b", "byte 0x20 at position 2"},
      {"tab\there", "byte 0x09 at position 4"},
      {"caf\xc3\xa9", "byte 0xc3 at position 4"},
      {std::string(201, 'x'), "the limit is 200"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> path =
        SingleInstance::LockPath(c.name, options_);
    EXPECT_TRUE(absl::IsInvalidArgument(path.status())) << c.name;
    EXPECT_THAT(std::string(path.status().message()), HasSubstr(c.reason))
        << c.name;
    EXPECT_TRUE(absl::IsInvalidArgument(
        SingleInstance::Acquire(c.name, options_).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(
        SingleInstance::Holder(c.name, options_).status()));
    EXPECT_TRUE(absl::IsInvalidArgument(
        SingleInstance::Send(c.name, {}, options_).status()));
  }
  // Nothing was created outside the directory, nor in it.
  EXPECT_EQ(RunShell(absl::StrCat("test -z \"$(ls -A '", dir_, "')\"")), 0);
}

TEST_F(SingleInstanceTest, LockPathCreatesNoFile) {
  absl::StatusOr<std::string> path = SingleInstance::LockPath("job", options_);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, PathOf("job"));
  EXPECT_NE(access(path->c_str(), F_OK), 0);
}

// ---------------------------------------------------------------------------
// Refusal, holder info, crashes.

TEST_F(SingleInstanceTest, SecondCopyIsRefusedNamingTheHolder) {
  InstanceOptions holder_options = options_;
  holder_options.recorded_command_line = {"/usr/bin/backup", "--full"};
  Pipe ready, release;
  Child holder =
      HoldInstanceInChild("nightly-backup", holder_options, ready, release);
  ASSERT_EQ(ready.Receive(), '.');

  absl::StatusOr<SingleInstance> second =
      SingleInstance::Acquire("nightly-backup", options_);
  ASSERT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_THAT(std::string(second.status().message()),
              StartsWith(absl::StrCat("nightly-backup is already running (pid ",
                                      holder.pid(), ", started ")));
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr(", /usr/bin/backup --full)"));
  EXPECT_EQ(HolderFromStatus(second.status()).value_or(HolderInfo()).resource,
            PathOf("nightly-backup"));
  EXPECT_THAT(CarriedPids(second.status()), ElementsAre(holder.pid()));

  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("nightly-backup", options_);
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_TRUE(info->has_value());
  const InstanceInfo& who = **info;
  EXPECT_EQ(who.pid, holder.pid());
  EXPECT_TRUE(who.has_record);
  EXPECT_THAT(who.command_line, ElementsAre("/usr/bin/backup", "--full"));
  EXPECT_EQ(who.uid, geteuid());
  EXPECT_EQ(who.user, geteuid() == 0 ? "root" : who.user);
  EXPECT_EQ(who.boot_id, internal::BootId());
  EXPECT_FALSE(who.hostname.empty());
  EXPECT_EQ(who.version, kVersion);
  EXPECT_THAT(who.executable, HasSubstr("single_instance_test"));
  // Started before it took the lock, which was a moment ago.
  EXPECT_LE(who.process_start_time, who.acquired_at + absl::Seconds(1));
  EXPECT_LT(absl::Now() - who.acquired_at, absl::Minutes(5));
  EXPECT_EQ(SingleInstance::DescribeRunning("nightly-backup", who),
            second.status().message());
  // A lock file path is described as held, not running.
  const std::string as_path =
      SingleInstance::DescribeHeld("/run/lock/x.lock", who);
  EXPECT_THAT(as_path, StartsWith(absl::StrCat("/run/lock/x.lock is held by pid ",
                                               holder.pid(), " (started ")));
  EXPECT_THAT(as_path, HasSubstr("/usr/bin/backup --full)"));

  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  info = SingleInstance::Holder("nightly-backup", options_);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value());
  EXPECT_TRUE(SingleInstance::Acquire("nightly-backup", options_).ok());
}

TEST_F(SingleInstanceTest, SameProcessTwiceIsRefusedToo) {
  absl::StatusOr<SingleInstance> first =
      SingleInstance::Acquire("me", options_);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<SingleInstance> second =
      SingleInstance::Acquire("me", options_);
  ASSERT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr(absl::StrCat("(pid ", getpid(), ",")));
  // A thread of this process is refused the same way.
  std::thread other([&] {
    EXPECT_TRUE(
        absl::IsUnavailable(SingleInstance::Acquire("me", options_).status()));
  });
  other.join();
}

TEST_F(SingleInstanceTest, HolderIsNulloptWhenNothingHoldsIt) {
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("never", options_);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value());
  {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("once", options_);
    ASSERT_TRUE(instance.ok());
    info = SingleInstance::Holder("once", options_);
    ASSERT_TRUE(info.ok() && info->has_value());
    EXPECT_EQ((*info)->pid, getpid());
    ASSERT_TRUE(instance->Release().ok());
    EXPECT_TRUE(instance->Release().ok());  // idempotent
  }
  info = SingleInstance::Holder("once", options_);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value());
}

TEST_F(SingleInstanceTest, KilledHolderIsReplacedAtOnceAndItsRecordIgnored) {
  Pipe ready, release;
  Child holder = HoldInstanceInChild("crashy", options_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  const pid_t dead = holder.pid();
  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);

  // Its record is still in the file...
  const int fd = open(PathOf("crashy").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::optional<internal::OwnerRecord> left = internal::ReadOwnerRecord(fd);
  close(fd);
  ASSERT_TRUE(left.has_value());
  EXPECT_EQ(left->pid, dead);
  // ...but nothing believes it.
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("crashy", options_);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value());
  // The next copy starts at once, without waiting.
  const absl::Time start = absl::Now();
  absl::StatusOr<SingleInstance> next =
      SingleInstance::Acquire("crashy", options_);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  info = SingleInstance::Holder("crashy", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->pid, getpid());
}

TEST_F(SingleInstanceTest, RecordOfADeadProcessIsNotTheHolder) {
  // A record left by a process that has exited, while flock(1)-style
  // holder that writes no record holds the lock.
  Child gone = Child::Fork([] { return 0; });
  const pid_t dead = gone.pid();
  ASSERT_EQ(gone.Wait(), 0);
  WriteFile(PathOf("stale"),
            internal::EncodeOwnerRecord(RecordFor(dead, 12345)), 0600);

  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("stale", options_);
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->has_value()) << "not held, whatever the record says";
  EXPECT_TRUE(SingleInstance::Acquire("stale", options_).ok());

  Pipe ready, release;
  Child flocker = HoldWithRawFlock(PathOf("stale"), ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  info = SingleInstance::Holder("stale", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  // The file now holds this process's record (it acquired above), and this
  // process is alive, but the kernel says the flocker holds it.
  EXPECT_EQ((*info)->pid, flocker.pid());
  EXPECT_FALSE((*info)->has_record);
  EXPECT_TRUE((*info)->command_line.empty());
  absl::StatusOr<SingleInstance> refused =
      SingleInstance::Acquire("stale", options_);
  ASSERT_TRUE(absl::IsUnavailable(refused.status()));
  EXPECT_THAT(std::string(refused.status().message()),
              StartsWith(absl::StrCat("stale is already running (pid ",
                                      flocker.pid(), ", ")));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat(
                  ", its owner record names pid ", getpid(),
                  ", which does not hold the lock (the kernel lists pid ",
                  flocker.pid(), "))")));
  release.Send();
  EXPECT_EQ(flocker.Wait(), 0);
}

// The record replaces a longer one wholly: the file ends up exactly the new
// record, also when the longer one was written while we waited for the lock.
TEST_F(SingleInstanceTest, ANewRecordCutsOffALongerOldOne) {
  internal::OwnerRecord old = RecordFor(12345, 1);
  old.command_line.assign(20, std::string(100, 'x'));
  const std::string long_record = internal::EncodeOwnerRecord(old);
  auto expect_only_our_record = [](const std::string& contents) {
    std::optional<internal::OwnerRecord> decoded =
        internal::DecodeOwnerRecord(contents);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(decoded->pid, getpid());
    EXPECT_EQ(internal::EncodeOwnerRecord(*decoded), contents)
        << "nothing of the old record may follow";
  };

  WriteFile(PathOf("cut"), long_record, 0600);
  {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("cut", options_);
    ASSERT_TRUE(instance.ok()) << instance.status();
    expect_only_our_record(ReadFileOrEmpty(PathOf("cut")));
  }

  // A holder that writes its long record only after we started waiting.
  Pipe ready, release;
  Child holder = Child::Fork([&] {
    const int fd =
        open(PathOf("cut-later").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    const ssize_t wrote =
        pwrite(fd, long_record.data(), long_record.size(), 0);
    return wrote == static_cast<ssize_t>(long_record.size()) ? 0 : 3;
  });
  ASSERT_EQ(ready.Receive(), '.');
  const InstanceOptions wait = WithWaitPolicy(options_, absl::Seconds(30));
  absl::StatusOr<SingleInstance> next = absl::UnknownError("not run");
  std::thread waiter([&] { next = SingleInstance::Acquire("cut-later", wait); });
  EXPECT_TRUE(WaitForBlockedWaiters(PathOf("cut-later")));
  release.Send();
  waiter.join();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(holder.Wait(), 0);
  expect_only_our_record(ReadFileOrEmpty(PathOf("cut-later")));
}

TEST_F(SingleInstanceTest, ReusedPidIsNotMistakenForTheHolder) {
  Pipe ready, release;
  Child flocker = HoldWithRawFlock(PathOf("reused"), ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  std::optional<uint64_t> ticks = internal::ProcessStartTicks(flocker.pid());
  ASSERT_TRUE(ticks.has_value());

  // The holder's own pid, but another start time: a pid reused by a new
  // process must not inherit the old record.
  WriteFile(PathOf("reused"),
            internal::EncodeOwnerRecord(RecordFor(flocker.pid(), *ticks + 1)));
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("reused", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->pid, flocker.pid());
  EXPECT_FALSE((*info)->has_record);

  // The right start time: now the record is believed.
  WriteFile(PathOf("reused"),
            internal::EncodeOwnerRecord(RecordFor(flocker.pid(), *ticks)));
  info = SingleInstance::Holder("reused", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_TRUE((*info)->has_record);
  EXPECT_EQ((*info)->executable, "/usr/bin/crafted");

  // A live process with its right start time, which is not the holder (the
  // test's own process): the kernel says otherwise.
  WriteFile(PathOf("reused"),
            internal::EncodeOwnerRecord(
                RecordFor(getpid(), *internal::ProcessStartTicks(getpid()))));
  info = SingleInstance::Holder("reused", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->pid, flocker.pid());
  EXPECT_FALSE((*info)->has_record);

  // From another boot: not believed either.
  internal::OwnerRecord other_boot = RecordFor(flocker.pid(), *ticks);
  other_boot.boot_id = "00000000-0000-0000-0000-000000000000";
  WriteFile(PathOf("reused"), internal::EncodeOwnerRecord(other_boot));
  info = SingleInstance::Holder("reused", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_FALSE((*info)->has_record);
  release.Send();
  EXPECT_EQ(flocker.Wait(), 0);
}

// ---------------------------------------------------------------------------
// Policies.

TEST_F(SingleInstanceTest, WaitPolicyTimesOutNamingTheHolder) {
  Pipe ready, release;
  Child holder = HoldInstanceInChild("waited", options_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  const InstanceOptions wait =
      WithWaitPolicy(options_, absl::Milliseconds(100));
  absl::StatusOr<SingleInstance> late = SingleInstance::Acquire("waited", wait);
  ASSERT_TRUE(absl::IsDeadlineExceeded(late.status())) << late.status();
  EXPECT_THAT(
      std::string(late.status().message()),
      HasSubstr(absl::StrCat("waited is already running (pid ", holder.pid())));
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("100ms"));
  EXPECT_THAT(CarriedPids(late.status()), ElementsAre(holder.pid()));
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(SingleInstanceTest, WaitPolicyTakesOverWhenTheHolderExits) {
  Pipe ready, release;
  Child holder = HoldInstanceInChild("handover", options_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  const InstanceOptions wait = WithWaitPolicy(options_, absl::Seconds(30));
  absl::StatusOr<SingleInstance> next = absl::UnknownError("not run");
  std::thread waiter([&] { next = SingleInstance::Acquire("handover", wait); });
  // Release only once the waiter really blocks in the kernel.
  EXPECT_TRUE(WaitForBlockedWaiters(PathOf("handover")));
  release.Send();
  waiter.join();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(holder.Wait(), 0);
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("handover", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->pid, getpid());
  EXPECT_TRUE((*info)->has_record);
}

TEST_F(SingleInstanceTest, ReplacePolicyTerminatesTheVerifiedHolder) {
  Pipe ready, release;
  Child holder = HoldInstanceInChild("replaced", options_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  const InstanceOptions replace =
      WithReplacePolicy(options_, absl::Seconds(30));
  absl::StatusOr<SingleInstance> next =
      SingleInstance::Acquire("replaced", replace);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(holder.Wait(), 128 + SIGTERM);
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("replaced", options_);
  ASSERT_TRUE(info.ok() && info->has_value());
  EXPECT_EQ((*info)->pid, getpid());
}

TEST_F(SingleInstanceTest, ReplacePolicyKillsAHolderThatIgnoresSigterm) {
  Pipe ready, release;
  Child holder = Child::Fork([&] {
    signal(SIGTERM, SIG_IGN);
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("stubborn", options_);
    if (!instance.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_EQ(ready.Receive(), '.');
  const InstanceOptions replace =
      WithReplacePolicy(options_, absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  absl::StatusOr<SingleInstance> next =
      SingleInstance::Acquire("stubborn", replace);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);
}

TEST_F(SingleInstanceTest, ReplacePolicyNeverSignalsAnUnverifiedHolder) {
  const InstanceOptions replace =
      WithReplacePolicy(options_, absl::Milliseconds(10));

  // A holder that wrote no record.
  Pipe ready, release;
  Child flocker = HoldWithRawFlock(PathOf("unverified"), ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<SingleInstance> refused =
      SingleInstance::Acquire("unverified", replace);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr(absl::StrCat("pid ", flocker.pid())));
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("wrote no owner record"));
  // A refused replacement is a conflict, told apart from an unsafe
  // directory's FailedPrecondition by the holder it carries.
  EXPECT_THAT(CarriedPids(refused.status()), ElementsAre(flocker.pid()));

  // A record naming another live process (with its true start time) that
  // does not hold the lock: neither it nor the holder is signalled.
  Pipe bystander_release;
  Child bystander = Bystander(bystander_release);
  std::optional<uint64_t> ticks = internal::ProcessStartTicks(bystander.pid());
  ASSERT_TRUE(ticks.has_value());
  WriteFile(PathOf("unverified"),
            internal::EncodeOwnerRecord(RecordFor(bystander.pid(), *ticks)));
  refused = SingleInstance::Acquire("unverified", replace);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("not replacing it"));

  // Both are alive and exit normally when told to.
  bystander_release.Send();
  EXPECT_EQ(bystander.Wait(), 0);
  release.Send();
  EXPECT_EQ(flocker.Wait(), 0);
}

TEST_F(SingleInstanceTest, InvalidOptionsAreRejected) {
  InstanceOptions bad = options_;
  bad.wait_timeout = absl::Seconds(-1);
  EXPECT_TRUE(
      absl::IsInvalidArgument(SingleInstance::Acquire("x", bad).status()));
  bad = options_;
  bad.grace_period = absl::Seconds(-1);
  EXPECT_TRUE(
      absl::IsInvalidArgument(SingleInstance::Acquire("x", bad).status()));
  bad = options_;
  bad.on_message = [](const InstanceMessage&) { return std::string(); };
  EXPECT_TRUE(
      absl::IsInvalidArgument(SingleInstance::Acquire("x", bad).status()));
  bad = options_;
  bad.max_message_bytes = 0;
  EXPECT_TRUE(
      absl::IsInvalidArgument(SingleInstance::Acquire("x", bad).status()));
  bad = options_;
  bad.message_timeout = absl::ZeroDuration();
  EXPECT_TRUE(
      absl::IsInvalidArgument(SingleInstance::Acquire("x", bad).status()));
}

// ---------------------------------------------------------------------------
// Planted files.

TEST_F(SingleInstanceTest, PlantedSymlinkIsRefusedAndItsTargetUntouched) {
  const std::string target = dir_ + "/precious";
  WriteFile(target, "precious contents\n");
  ASSERT_EQ(symlink(target.c_str(), PathOf("planted").c_str()), 0);
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("planted", options_);
  ASSERT_TRUE(absl::IsInvalidArgument(instance.status())) << instance.status();
  EXPECT_THAT(std::string(instance.status().message()),
              HasSubstr("symbolic link"));
  EXPECT_EQ(ReadFileOrEmpty(target), "precious contents\n");
  EXPECT_FALSE(KernelSaysHeld(target));
  EXPECT_TRUE(absl::IsInvalidArgument(
      SingleInstance::Holder("planted", options_).status()));
  EXPECT_EQ(ReadFileOrEmpty(target), "precious contents\n");
}

TEST_F(SingleInstanceTest, PlantedHardLinkIsNeverWrittenThrough) {
  const std::string target = dir_ + "/precious";
  WriteFile(target, "precious contents\n");
  ASSERT_EQ(link(target.c_str(), PathOf("linked").c_str()), 0);
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("linked", options_);
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()))
      << instance.status();
  EXPECT_THAT(std::string(instance.status().message()),
              HasSubstr("hard links"));
  EXPECT_EQ(ReadFileOrEmpty(target), "precious contents\n");
  EXPECT_FALSE(KernelSaysHeld(target)) << "the refused lock was released";
}

// A lock file that holds someone's data (the flock(1) idiom of a script
// locking itself) is locked, never written: no record goes into it.
TEST_F(SingleInstanceTest, AnExistingFileIsLockedButNeverWritten) {
  const std::string path = dir_ + "/precious";
  std::string precious;
  for (int i = 0; precious.size() < 13512; ++i) {
    absl::StrAppend(&precious, "line ", i, " of someone's data\n");
  }
  WriteFile(path, precious);
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::AcquireAtPath(path);
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_TRUE(KernelSaysHeld(path));
  EXPECT_EQ(ReadFileOrEmpty(path), precious);
  absl::StatusOr<std::optional<InstanceInfo>> holder =
      SingleInstance::HolderAtPath(path);
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.status();
  EXPECT_EQ((*holder)->pid, getpid());
  EXPECT_FALSE((*holder)->has_record);
  EXPECT_THAT((*holder)->no_record_reason, HasSubstr("other data"));
  ASSERT_TRUE(instance->UpdateRecord().ok());
  ASSERT_TRUE(instance->Release().ok());
  EXPECT_EQ(ReadFileOrEmpty(path), precious);

  // An empty file, and one that holds a record already, get one.
  WriteFile(path, "");
  instance = SingleInstance::AcquireAtPath(path);
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_TRUE(internal::DecodeOwnerRecord(ReadFileOrEmpty(path)).has_value());
  ASSERT_TRUE(instance->Release().ok());
  instance = SingleInstance::AcquireAtPath(path);
  ASSERT_TRUE(instance.ok()) << instance.status();
  std::optional<internal::OwnerRecord> record =
      internal::DecodeOwnerRecord(ReadFileOrEmpty(path));
  ASSERT_TRUE(record.has_value());
  EXPECT_EQ(record->pid, getpid());
}

// A writable kernel file (here the process's own name, which reports size
// 0 like /proc/sys files) is locked, never written.
TEST_F(SingleInstanceTest, AProcFileIsNeverWritten) {
  Child child = Child::Fork([] {
    const std::string before = ReadFileOrEmpty("/proc/thread-self/comm");
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::AcquireAtPath("/proc/thread-self/comm");
    if (!instance.ok()) return 2;
    return ReadFileOrEmpty("/proc/thread-self/comm") == before ? 0 : 1;
  });
  EXPECT_EQ(child.Wait(), 0);
}

// A holder may write anything into its lock file; a record naming another
// live process that does not hold the lock is not believed.
TEST_F(SingleInstanceTest, ARecordCannotNameAProcessThatDoesNotHoldTheLock) {
  Pipe bystander_release;
  Child bystander = Bystander(bystander_release);
  Pipe ready, release;
  Child flocker = HoldWithRawFlock(PathOf("forged"), ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  internal::OwnerRecord forged = RecordFor(
      bystander.pid(), *internal::ProcessStartTicks(bystander.pid()));
  forged.locker_pid = flocker.pid();  // the pid the kernel shows
  WriteFile(PathOf("forged"), internal::EncodeOwnerRecord(forged), 0600);
  absl::StatusOr<std::optional<InstanceInfo>> holder =
      SingleInstance::Holder("forged", options_);
  ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.status();
  EXPECT_EQ((*holder)->pid, flocker.pid());
  EXPECT_FALSE((*holder)->has_record);
  EXPECT_THAT((*holder)->no_record_reason,
              HasSubstr(absl::StrCat("names pid ", bystander.pid(),
                                     ", which does not hold the lock")));
  release.Send();
  EXPECT_EQ(flocker.Wait(), 0);
  bystander_release.Send();
  EXPECT_EQ(bystander.Wait(), 0);
}

TEST_F(SingleInstanceTest, ARelativeLockPathIsHeldNotRunning) {
  char* cwd = getcwd(nullptr, 0);
  ASSERT_NE(cwd, nullptr);
  absl::Cleanup back = [cwd] {
    EXPECT_EQ(chdir(cwd), 0);
    free(cwd);
  };
  ASSERT_EQ(chdir(dir_.c_str()), 0);
  absl::StatusOr<SingleInstance> first =
      SingleInstance::AcquireAtPath("x.lock");
  ASSERT_TRUE(first.ok()) << first.status();
  Child second = Child::Fork([] {
    absl::Status refused = SingleInstance::AcquireAtPath("x.lock").status();
    return absl::StartsWith(refused.message(),
                            absl::StrCat("x.lock is held by pid ", getppid(),
                                         " (started "))
               ? 0
               : 1;
  });
  EXPECT_EQ(second.Wait(), 0);
}

TEST_F(SingleInstanceTest, PlantedFifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(mkfifo(PathOf("fifo").c_str(), 0600), 0);
  EXPECT_TRUE(absl::IsInvalidArgument(
      SingleInstance::Acquire("fifo", options_).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      SingleInstance::Holder("fifo", options_).status()));
}

// ---------------------------------------------------------------------------
// Scopes and directory safety.

TEST_F(SingleInstanceTest, UserScopeIsOneLockPerUserHoweverStarted) {
  ScopedTestRoot root;
  const std::string expected = root.UserDirectory() + "/editor.lock";
  const std::string runtime = MakeTempDir();
  ASSERT_EQ(chmod(runtime.c_str(), 0700), 0);
  // A login shell, cron (no runtime directory), a runtime directory that is
  // unsafe or a symlink, another session, another TMPDIR: one path.
  std::vector<std::vector<std::pair<const char*, std::optional<std::string>>>>
      environments = {
          {{"XDG_RUNTIME_DIR", runtime}, {"XDG_SESSION_ID", "3"}},
          {{"XDG_RUNTIME_DIR", std::nullopt}, {"XDG_SESSION_ID", std::nullopt}},
          {{"XDG_RUNTIME_DIR", "/nonexistent"}, {"TMPDIR", runtime}},
          {{"XDG_RUNTIME_DIR", dir_}, {"XDG_SESSION_ID", "c9"}},
      };
  for (const auto& environment : environments) {
    std::vector<std::unique_ptr<ScopedEnv>> set;
    for (const auto& [name, value] : environment) {
      set.push_back(std::make_unique<ScopedEnv>(name, value));
    }
    absl::StatusOr<std::string> path = SingleInstance::LockPath("editor");
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_EQ(*path, expected);
  }
  absl::StatusOr<SingleInstance> instance = SingleInstance::Acquire("editor");
  ASSERT_TRUE(instance.ok()) << instance.status();
  EXPECT_EQ(instance->lock().path(), expected);
  struct stat info;
  ASSERT_EQ(lstat(expected.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u) << "private lock files";
  ASSERT_EQ(lstat(root.UserDirectory().c_str(), &info), 0);
  EXPECT_TRUE(S_ISDIR(info.st_mode));
  EXPECT_EQ(info.st_uid, geteuid());
  EXPECT_EQ(info.st_mode & 07777, 0700u);
  // A copy started from another environment is refused.
  {
    ScopedEnv no_runtime("XDG_RUNTIME_DIR", std::nullopt);
    Child other = Child::Fork([] {
      return absl::IsUnavailable(SingleInstance::Acquire("editor").status())
                 ? 0
                 : 1;
    });
    EXPECT_EQ(other.Wait(), 0);
  }
  // Nothing was created in the runtime directory.
  EXPECT_EQ(RunShell(absl::StrCat("test -z \"$(ls -A '", runtime, "')\"")),
            0);
}

TEST_F(SingleInstanceTest, WithoutAWritableRunLockTheBaseIsTmp) {
  ScopedTestRoot root;
  // As on Fedora and Arch: /run/lock belongs to root and is not writable by
  // everyone.
  ASSERT_EQ(chmod(root("/run/lock").c_str(), 0755), 0);
  absl::StatusOr<std::string> path = SingleInstance::LockPath("editor");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, root(absl::StrCat("/tmp/onlyone-", geteuid(), "/editor.lock")));
  InstanceOptions machine;
  machine.scope = Scope::kMachine;
  path = SingleInstance::LockPath("svc", machine);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, root("/tmp/onlyone.svc.lock"));
  // Not sticky either: refused, naming each candidate.
  ASSERT_EQ(chmod(root("/tmp").c_str(), 0777), 0);
  path = SingleInstance::LockPath("svc", machine);
  ASSERT_TRUE(absl::IsFailedPrecondition(path.status())) << path.status();
  EXPECT_THAT(std::string(path.status().message()),
              HasSubstr("not writable by everyone"));
  EXPECT_THAT(std::string(path.status().message()),
              HasSubstr("writable by everyone but not sticky"));
}

TEST_F(SingleInstanceTest, AUserDirectoryMadeByAnotherUserIsRefusedNamingThem) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to make nobody's directory";
  ScopedTestRoot root;
  ASSERT_EQ(mkdir(root.UserDirectory().c_str(), 0700), 0);
  ASSERT_EQ(chown(root.UserDirectory().c_str(), kNobodyUid, kNobodyUid), 0);
  absl::StatusOr<SingleInstance> instance = SingleInstance::Acquire("editor");
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()))
      << instance.status();
  const std::string message(instance.status().message());
  EXPECT_THAT(message, HasSubstr(root.UserDirectory()));
  EXPECT_THAT(message, HasSubstr("uid 65534 (nobody)"));
  EXPECT_THAT(message, HasSubstr("have its owner or root remove it"));
  // A symlink there is refused too, and not followed.
  ASSERT_EQ(rmdir(root.UserDirectory().c_str()), 0);
  const std::string elsewhere = MakeTempDir();
  ASSERT_EQ(symlink(elsewhere.c_str(), root.UserDirectory().c_str()), 0);
  instance = SingleInstance::Acquire("editor");
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()));
  EXPECT_THAT(std::string(instance.status().message()),
              HasSubstr("symbolic link"));
  EXPECT_NE(access((elsewhere + "/editor.lock").c_str(), F_OK), 0);
}

TEST_F(SingleInstanceTest, TamperedPrivateDirectoryIsRefused) {
  ScopedTestRoot root;
  ScopedEnv id("XDG_SESSION_ID", "t1");
  InstanceOptions session;
  session.scope = Scope::kSession;
  ASSERT_TRUE(SingleInstance::LockPath("editor").ok());  // makes the user dir
  const std::string session_dir = root.UserDirectory() + "/session-t1";
  // The session directory planted as a symlink to a directory: never
  // followed.
  const std::string elsewhere = MakeTempDir();
  ASSERT_EQ(symlink(elsewhere.c_str(), session_dir.c_str()), 0);
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("editor", session);
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()))
      << instance.status();
  EXPECT_THAT(std::string(instance.status().message()),
              HasSubstr(session_dir));
  EXPECT_THAT(std::string(instance.status().message()),
              HasSubstr("symbolic link"));
  EXPECT_NE(access((elsewhere + "/editor.lock").c_str(), F_OK), 0);
  // Made writable by others: refused, naming the mode.
  ASSERT_EQ(unlink(session_dir.c_str()), 0);
  ASSERT_EQ(mkdir(session_dir.c_str(), 0700), 0);
  ASSERT_EQ(chmod(session_dir.c_str(), 0777), 0);
  instance = SingleInstance::Acquire("editor", session);
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()))
      << instance.status();
  EXPECT_THAT(std::string(instance.status().message()), HasSubstr("0777"));
}

TEST_F(SingleInstanceTest, ExplicitDirectoryMustBeSafe) {
  const std::string open_dir = MakeTempDir();
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  InstanceOptions options;
  options.directory = open_dir;
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("x", options);
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()))
      << instance.status();
  EXPECT_THAT(std::string(instance.status().message()), HasSubstr(open_dir));
  EXPECT_THAT(std::string(instance.status().message()),
              HasSubstr("writable by group or others"));
  EXPECT_FALSE(HolderFromStatus(instance.status()).has_value());

  options.directory = dir_ + "/missing";
  EXPECT_TRUE(absl::IsNotFound(SingleInstance::Acquire("x", options).status()));

  if (geteuid() == 0) {
    const std::string theirs = MakeTempDir();
    ASSERT_EQ(chown(theirs.c_str(), kNobodyUid, kNobodyUid), 0);
    options.directory = theirs;
    instance = SingleInstance::Acquire("x", options);
    ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()));
    EXPECT_THAT(std::string(instance.status().message()),
                HasSubstr("owned by uid 65534"));
  }

  // Sticky and root-owned, like /run/lock: shared, lock files 0666.
  if (geteuid() == 0) {
    const std::string shared = MakeTempDir();
    ASSERT_EQ(chmod(shared.c_str(), 01777), 0);
    options.directory = shared;
    instance = SingleInstance::Acquire("x", options);
    ASSERT_TRUE(instance.ok()) << instance.status();
    struct stat info;
    ASSERT_EQ(stat((shared + "/x.lock").c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 07777, 0666u);
  }
}

TEST_F(SingleInstanceTest, SessionScopeIsKeyedByTheLoginSession) {
  ScopedTestRoot root;
  const std::string runtime = MakeTempDir();
  ASSERT_EQ(chmod(runtime.c_str(), 0700), 0);
  ScopedEnv env("XDG_RUNTIME_DIR", runtime);
  InstanceOptions session;
  session.scope = Scope::kSession;
  {
    ScopedEnv id("XDG_SESSION_ID", "c7");
    absl::StatusOr<std::string> path = SingleInstance::LockPath("app", session);
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_EQ(*path, root.UserDirectory() + "/session-c7/app.lock");
    // Both scopes can be held at once: they are different locks.
    absl::StatusOr<SingleInstance> in_session =
        SingleInstance::Acquire("app", session);
    ASSERT_TRUE(in_session.ok()) << in_session.status();
    EXPECT_TRUE(SingleInstance::Acquire("app").ok());
    // Another session has its own.
    ScopedEnv other("XDG_SESSION_ID", "c8");
    EXPECT_TRUE(SingleInstance::Acquire("app", session).ok());
  }
  {
    ScopedEnv id("XDG_SESSION_ID", "../escape");  // not a valid key: ignored
    absl::StatusOr<std::string> path = SingleInstance::LockPath("app", session);
    ASSERT_TRUE(path.ok()) << path.status();
    EXPECT_THAT(*path, StartsWith(root.UserDirectory() + "/session-"));
    EXPECT_THAT(*path, ::testing::Not(HasSubstr("escape")));
  }
  // The session's lock does not live in the runtime directory, which
  // logind removes at logout.
  EXPECT_EQ(RunShell(absl::StrCat("test -z \"$(ls -A '", runtime, "')\"")),
            0);
}

TEST_F(SingleInstanceTest, MachineScopeNeedsNoDirectoryOfItsOwn) {
  ScopedTestRoot root;
  InstanceOptions machine;
  machine.scope = Scope::kMachine;
  absl::StatusOr<std::string> path = SingleInstance::LockPath("svc", machine);
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_EQ(*path, root("/run/lock/onlyone.svc.lock"));
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("svc", machine);
  ASSERT_TRUE(instance.ok()) << instance.status();
  struct stat info;
  ASSERT_EQ(lstat(path->c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0666u) << "every user can lock it";
  // Listing shows our files, not other programs' files in /run/lock.
  WriteFile(root("/run/lock/LCK..ttyS0"), "");
  WriteFile(root("/run/lock/other.lock"), "");
  absl::StatusOr<std::vector<ListedInstance>> listed =
      SingleInstance::List(machine);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, "svc");
}

// A copy of an earlier build holds the lock where that build kept it: the
// runtime directory for the user scope, /run/lock/onlyone for the machine.
TEST_F(SingleInstanceTest, ACopyOfAnEarlierBuildIsSeenWhereItsLockIs) {
  ScopedTestRoot root;
  const std::string runtime = MakeTempDir();
  ASSERT_EQ(chmod(runtime.c_str(), 0700), 0);
  ScopedEnv env("XDG_RUNTIME_DIR", runtime);
  const std::string legacy_machine = root("/run/lock/onlyone");
  ASSERT_EQ(mkdir(legacy_machine.c_str(), 01777), 0);
  InstanceOptions machine;
  machine.scope = Scope::kMachine;
  struct Case {
    std::string legacy_path;
    InstanceOptions options;
  };
  for (const Case& legacy : {Case{runtime + "/onlyone-job.lock", {}},
                             Case{legacy_machine + "/job.lock", machine}}) {
    SCOPED_TRACE(legacy.legacy_path);
    Pipe ready, release;
    Child old_build = Child::Fork([&] {
      const int fd =
          open(legacy.legacy_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0 || flock(fd, LOCK_EX) != 0) return 2;
      const std::string record = internal::EncodeOwnerRecord(
          RecordFor(getpid(), *internal::ProcessStartTicks(getpid())));
      if (pwrite(fd, record.data(), record.size(), 0) < 0) return 3;
      ready.Send();
      release.Receive(absl::Hours(1));
      return 0;
    });
    ASSERT_EQ(ready.Receive(), '.');
    absl::StatusOr<std::optional<InstanceInfo>> holder =
        SingleInstance::Holder("job", legacy.options);
    ASSERT_TRUE(holder.ok() && holder->has_value()) << holder.status();
    EXPECT_EQ((*holder)->pid, old_build.pid());
    EXPECT_EQ((*holder)->lock_path, legacy.legacy_path);
    absl::StatusOr<std::vector<ListedInstance>> listed =
        SingleInstance::List(legacy.options);
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ((*listed)[0].lock_path, legacy.legacy_path);
    absl::StatusOr<SingleInstance> refused =
        SingleInstance::Acquire("job", legacy.options);
    ASSERT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr(absl::StrCat("job is already running (pid ",
                                       old_build.pid())));
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr(legacy.legacy_path));
    // The wait policy waits for it to exit.
    std::thread let_go([&] {
      WaitForBlockedWaiters(legacy.legacy_path);
      release.Send();
    });
    absl::StatusOr<SingleInstance> waited = SingleInstance::Acquire(
        "job", WithWaitPolicy(legacy.options, absl::Seconds(30)));
    let_go.join();
    EXPECT_TRUE(waited.ok()) << waited.status();
    EXPECT_EQ(old_build.Wait(), 0);
  }
}

// ---------------------------------------------------------------------------
// Listing.

TEST_F(SingleInstanceTest, ListShowsEveryLockAndItsHolder) {
  absl::StatusOr<SingleInstance> mine =
      SingleInstance::Acquire("a-mine", options_);
  ASSERT_TRUE(mine.ok());
  Pipe ready, release;
  Child holder = HoldInstanceInChild("b-child", options_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  ASSERT_TRUE(SingleInstance::Acquire("c-free", options_).ok());  // released
  ASSERT_EQ(symlink("/etc/passwd", PathOf("d-planted").c_str()), 0);
  WriteFile(dir_ + "/not a name.lock", "");
  WriteFile(dir_ + "/other.txt", "");

  absl::StatusOr<std::vector<ListedInstance>> listed =
      SingleInstance::List(options_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 3u);
  EXPECT_EQ((*listed)[0].name, "a-mine");
  EXPECT_EQ((*listed)[0].lock_path, PathOf("a-mine"));
  ASSERT_TRUE((*listed)[0].holder.has_value());
  EXPECT_EQ((*listed)[0].holder->pid, getpid());
  EXPECT_EQ((*listed)[1].name, "b-child");
  ASSERT_TRUE((*listed)[1].holder.has_value());
  EXPECT_EQ((*listed)[1].holder->pid, holder.pid());
  EXPECT_TRUE((*listed)[1].holder->has_record);
  EXPECT_EQ((*listed)[2].name, "c-free");
  EXPECT_FALSE((*listed)[2].holder.has_value());
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

// ---------------------------------------------------------------------------
// Fork.

TEST_F(SingleInstanceTest, HandOffOnForkKeepsTheInstanceInTheDaemon) {
  Pipe ready, release, result;
  // C1 takes the lock and hands it to C2 across a fork, then exits; C2 (the
  // "daemon") rewrites the record and holds on.
  Child first = Child::Fork([&] {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("daemon", options_);
    if (!instance.ok()) return 2;
    instance->lock().HandOffOnFork();
    fflush(nullptr);
    const pid_t daemon = fork();
    if (daemon < 0) return 3;
    if (daemon == 0) {
      result.CloseWrite();  // lets the test read the pid to the end
      if (!instance->lock().held()) _exit(4);
      if (!instance->UpdateRecord().ok()) _exit(5);
      ready.Send();
      release.Receive(absl::Hours(1));
      _exit(instance->Release().ok() ? 0 : 6);
    }
    // The parent's copy neither releases the lock nor may rewrite the record.
    if (instance->lock().held()) return 7;
    if (instance->UpdateRecord().ok()) return 8;
    if (!instance->Release().ok()) return 9;
    const std::string pid = absl::StrCat(daemon);
    if (write(result.write_fd(), pid.data(), pid.size()) < 0) return 10;
    return 0;
  });
  ASSERT_EQ(first.Wait(), 0);  // the lock-taker has exited
  result.CloseWrite();
  const std::string daemon_pid = result.ReadAll();
  ASSERT_EQ(ready.Receive(), '.');

  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("daemon", options_);
  ASSERT_TRUE(info.ok() && info->has_value()) << info.status();
  EXPECT_EQ(absl::StrCat((*info)->pid), daemon_pid);
  EXPECT_TRUE((*info)->has_record);
  EXPECT_TRUE(absl::IsUnavailable(
      SingleInstance::Acquire("daemon", options_).status()));
  // Replace refuses: the kernel lists the exited lock-taker, not the daemon.
  const InstanceOptions replace = WithReplacePolicy(options_);
  EXPECT_TRUE(absl::IsFailedPrecondition(
      SingleInstance::Acquire("daemon", replace).status()));

  release.Send();
  // The daemon is not our child; wait for its release through the lock.
  const InstanceOptions wait = WithWaitPolicy(options_, absl::Seconds(30));
  EXPECT_TRUE(SingleInstance::Acquire("daemon", wait).ok());
}

TEST_F(SingleInstanceTest, ForkedChildNeitherReleasesNorJoins) {
  InstanceOptions listening = options_;
  listening.listen = true;
  listening.on_message = [](const InstanceMessage& message) {
    return "pong:" + message.payload;
  };
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("parent", listening);
  ASSERT_TRUE(instance.ok()) << instance.status();
  Child child = Child::Fork([&] {
    // The child's copy: not the holder, no thread to join.
    if (instance->lock().held()) return 1;
    if (!instance->Release().ok()) return 2;
    return 0;
  });
  EXPECT_EQ(child.Wait(), 0);
  EXPECT_TRUE(instance->lock().held());
  EXPECT_TRUE(KernelSaysHeld(PathOf("parent")));
  InstanceMessage ping;
  ping.payload = "ping";
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("parent", ping, options_);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "pong:ping");
}

// ---------------------------------------------------------------------------
// Two users.

class CrossUserInstanceTest : public InstanceDirectoryTest {
 protected:
  CrossUserInstanceTest() : InstanceDirectoryTest(Reach::kOtherUsers) {}

  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
    // Like /run/lock/onlyone: root-owned, sticky, writable by everyone.
    ASSERT_EQ(chmod(dir_.c_str(), 01777), 0);
  }
};

TEST_F(CrossUserInstanceTest, MachineLockIsSharedByTwoUsers) {
  absl::StatusOr<SingleInstance> root_copy =
      SingleInstance::Acquire("shared-job", options_);
  ASSERT_TRUE(root_copy.ok()) << root_copy.status();
  Pipe refused, release, acquired, done;
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("shared-job", options_);
    if (!absl::IsUnavailable(instance.status())) return 1;
    if (!absl::StrContains(instance.status().message(),
                           absl::StrCat("(pid ", getppid()))) {
      return 2;
    }
    refused.Send();
    release.Receive(absl::Hours(1));
    instance = SingleInstance::Acquire("shared-job", options_);
    if (!instance.ok()) return 3;
    acquired.Send();
    done.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_EQ(refused.Receive(), '.');
  ASSERT_TRUE(root_copy->Release().ok());
  release.Send();
  ASSERT_EQ(acquired.Receive(), '.');
  // Root's file, nobody's lock and nobody's record in it.
  absl::StatusOr<std::optional<InstanceInfo>> info =
      SingleInstance::Holder("shared-job", options_);
  ASSERT_TRUE(info.ok() && info->has_value()) << info.status();
  EXPECT_EQ((*info)->pid, nobody.pid());
  EXPECT_TRUE((*info)->has_record);
  EXPECT_EQ((*info)->uid, kNobodyUid);
  EXPECT_EQ((*info)->user, "nobody");
  struct stat file;
  ASSERT_EQ(stat((dir_ + "/shared-job.lock").c_str(), &file), 0);
  EXPECT_EQ(file.st_uid, 0u);
  EXPECT_EQ(file.st_mode & 07777, 0666u);
  // Root is refused now.
  EXPECT_TRUE(absl::IsUnavailable(
      SingleInstance::Acquire("shared-job", options_).status()));
  done.Send();
  EXPECT_EQ(nobody.Wait(), 0);
}

// Another user's 0600 file where a machine lock belongs blocks the name:
// the refusal says whose it is and what to do.
TEST_F(CrossUserInstanceTest, AnUnreadableFilePlantedInTheMachineScopeIsNamed) {
  ScopedTestRoot root;
  InstanceOptions machine;
  machine.scope = Scope::kMachine;
  const std::string planted = root("/run/lock/onlyone.job.lock");
  WriteFile(planted, "mine\n", 0600);
  Pipe message;
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    absl::Status status = SingleInstance::Acquire("job", machine).status();
    const std::string text(status.message());
    if (write(message.write_fd(), text.data(), text.size()) < 0) return 2;
    return absl::IsPermissionDenied(status) ? 0 : 1;
  });
  EXPECT_EQ(nobody.Wait(), 0);
  message.CloseWrite();
  const std::string text = message.ReadAll();
  EXPECT_THAT(text, HasSubstr(planted));
  EXPECT_THAT(text, HasSubstr("belongs to uid 0 (root)"));
  EXPECT_THAT(text, HasSubstr("mode 0600"));
  EXPECT_THAT(text, HasSubstr("have its owner or root remove it"));
  EXPECT_EQ(ReadFileOrEmpty(planted), "mine\n");
}

TEST_F(CrossUserInstanceTest, SymlinkPlantedByAnotherUserIsNotFollowed) {
  const std::string target = dir_ + "/root-file";
  WriteFile(target, "root's data\n", 0644);
  Child planter = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    return symlink(target.c_str(), (dir_ + "/victim.lock").c_str()) == 0 ? 0
                                                                         : 1;
  });
  ASSERT_EQ(planter.Wait(), 0);
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("victim", options_);
  ASSERT_TRUE(absl::IsInvalidArgument(instance.status())) << instance.status();
  EXPECT_EQ(ReadFileOrEmpty(target), "root's data\n");
  EXPECT_FALSE(KernelSaysHeld(target));
}

TEST_F(CrossUserInstanceTest, ReplaceRefusesAHolderItMayNotSignal) {
  Pipe ready, release;
  Child holder = HoldInstanceInChild("roots", options_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  Pipe message;
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    const InstanceOptions replace =
        WithReplacePolicy(options_, absl::Milliseconds(10));
    absl::Status status = SingleInstance::Acquire("roots", replace).status();
    const std::string text(status.message());
    if (write(message.write_fd(), text.data(), text.size()) < 0) return 2;
    return absl::IsFailedPrecondition(status) ? 0 : 1;
  });
  EXPECT_EQ(nobody.Wait(), 0);
  message.CloseWrite();
  EXPECT_THAT(message.ReadAll(), HasSubstr("not allowed to signal"));
  // Root's holder was not signalled.
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

}  // namespace
}  // namespace onlyone
