// SoftFileLock with real processes: killed and stopped holders on this host,
// records planted as if from another host (fresh and expired, their times
// set through the filesystem), concurrent breakers, garbage records, a
// broken holder's held() and lost(), a successor's lock kept by Release(),
// wake-up without polling, hostile paths. The conformance suite
// (soft_lock_conformance_test, and on FUSE soft_lock_fuse_conformance_test)
// covers exclusion with a counter, timeouts, cancellation and fork.

#include "onlyone/soft_file_lock.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/cancellation_state.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/soft_lock_record.h"
#include "tests/test_util.h"

namespace onlyone::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kOtherHost[] = "far-away-host";

SoftLockOptions TryOnce(absl::Duration stale_after = absl::Seconds(30)) {
  SoftLockOptions options;
  options.timeout = absl::ZeroDuration();
  options.stale_after = stale_after;
  return options;
}

struct stat StatOrDie(const std::string& path) {
  struct stat file;
  if (lstat(path.c_str(), &file) != 0) {
    perror(path.c_str());
    abort();
  }
  return file;
}

// "now" on the filesystem's clock: the mtime of a file touched in `dir`.
absl::Time FilesystemNow(const std::string& dir) {
  const std::string probe = dir + "/clock-probe";
  const int fd = open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || futimens(fd, nullptr) != 0) abort();
  struct stat file;
  fstat(fd, &file);
  close(fd);
  unlink(probe.c_str());
  return absl::TimeFromTimespec(file.st_mtim);
}

// Sets the file's mtime to `age` before the filesystem's now.
void SetAge(const std::string& path, const std::string& dir,
            absl::Duration age) {
  const struct timespec when = absl::ToTimespec(FilesystemNow(dir) - age);
  const struct timespec times[2] = {when, when};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
}

// A record as another host's holder writes it.
internal::SoftLockRecord OtherHostRecord() {
  internal::SoftLockRecord record;
  record.owner.pid = 4242;
  record.owner.locker_pid = 4242;
  record.owner.start_ticks = 777;
  record.owner.boot_id = "00000000-1111-2222-3333-444444444444";
  record.owner.hostname = kOtherHost;
  record.owner.uid = geteuid();
  record.owner.command_line = {"/usr/bin/backup", "--full"};
  record.owner.acquired_at = absl::Now() - absl::Minutes(5);
  record.nonce = "0123456789abcdef0123456789abcdef";
  record.pid_namespace = 4026531836;
  return record;
}

void WriteFile(const std::string& path, const std::string& contents) {
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, contents.data(), contents.size()),
            static_cast<ssize_t>(contents.size()));
  close(fd);
}

// Waits until `token` is cancelled (through its eventfd waker: no polling),
// at most `timeout`.
bool WaitCancelled(const CancellationToken& token, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<internal::CancellationEventFd>> waker =
      internal::CancellationEventFd::Create(token.state());
  if (absl::IsCancelled(waker.status())) return true;
  if (!waker.ok()) return false;
  struct pollfd fd = {(*waker)->fd(), POLLIN, 0};
  return poll(&fd, 1, absl::ToInt64Milliseconds(timeout)) == 1;
}

int VoluntaryContextSwitchesOfThisThread() {
  const std::string status = ReadFileOrEmpty("/proc/thread-self/status");
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (absl::ConsumePrefix(&line, "voluntary_ctxt_switches:")) {
      int count = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &count)) {
        return count;
      }
    }
  }
  return -1;
}

// A child holding the lock at `path` from `ready` until `release`.
Child HoldInChild(const std::string& path, Pipe& ready, Pipe& release,
                  SoftLockOptions options = {}) {
  return Child::Fork([&, options] {
    absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path, options);
    if (!lock.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return lock->Release().ok() ? 0 : 3;
  });
}

class SoftFileLockTest : public ::testing::Test {
 protected:
  const std::string dir_ = MakeTempDir();
  const std::string path_ = dir_ + "/job.lock";
};

// The heartbeat thread blocks the process's signals from its first
// instruction: a SIGCHLD it took would be discarded, and `onlyone run
// --soft` would never see its command end. It once blocked them as its
// first statement, too late when it had not run yet; right after Acquire()
// returns is when that showed.
TEST_F(SoftFileLockTest, TheHeartbeatThreadIsBornWithSignalsBlocked) {
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_);
    ASSERT_TRUE(lock.ok()) << lock.status();
    const auto masks = OtherThreadsBlockedSignals();
    ASSERT_FALSE(masks.empty());  // the heartbeat
    for (const auto& [tid, mask] : masks) {
      ASSERT_TRUE(BlocksProcessSignals(mask))
          << "acquisition " << i << ": thread " << tid << " blocks "
          << absl::StrFormat("%016x", mask);
    }
    ASSERT_TRUE(lock->Release().ok());
  }
}

TEST_F(SoftFileLockTest, ARefusalNamesThePathAndTheHolder) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<SoftFileLock> refused = SoftFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(refused.status())) << refused.status();
  const std::string message(refused.status().message());
  EXPECT_THAT(message, HasSubstr(path_));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("pid ", holder.pid())));
  EXPECT_THAT(message,
              HasSubstr(internal::CachedSelfIdentity().record.hostname));
  EXPECT_THAT(message, HasSubstr(" since 20"));
  EXPECT_THAT(message, HasSubstr("soft_file_lock_test"));
  absl::StatusOr<std::optional<SoftLockHolder>> seen =
      SoftFileLock::Holder(path_);
  ASSERT_TRUE(seen.ok()) << seen.status();
  ASSERT_TRUE(seen->has_value());
  EXPECT_TRUE((*seen)->record_readable);
  EXPECT_EQ((*seen)->pid, holder.pid());
  EXPECT_TRUE((*seen)->on_this_host);
  EXPECT_TRUE((*seen)->alive);
  EXPECT_FALSE((*seen)->stale);
  EXPECT_EQ((*seen)->nonce.size(), 32u);
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  seen = SoftFileLock::Holder(path_);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_FALSE(seen->has_value());
  // Nothing left behind: no lock, record, break or grave files.
  EXPECT_EQ(RunShell(absl::StrCat("test -z \"$(ls -A '", dir_, "')\"")), 0);
}

TEST_F(SoftFileLockTest, TheRecordNamesTheRecordedCommandWhenGiven) {
  SoftLockOptions options;
  options.recorded_command_line = {"backup.sh", "--full"};
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  absl::StatusOr<std::optional<SoftLockHolder>> seen =
      SoftFileLock::Holder(path_);
  ASSERT_TRUE(seen.ok() && seen->has_value()) << seen.status();
  EXPECT_EQ((*seen)->command_line,
            std::vector<std::string>({"backup.sh", "--full"}));
  EXPECT_EQ((*seen)->pid, getpid());
  const absl::StatusOr<SoftFileLock> refused =
      SoftFileLock::Acquire(path_, TryOnce());
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("(backup.sh --full)"));
  EXPECT_TRUE(lock->Release().ok());
}

TEST_F(SoftFileLockTest, AKilledHolderIsBrokenAtOnceByATry) {
  Pipe ready, release;
  Child holder = HoldInChild(path_, ready, release);
  ASSERT_EQ(ready.Receive(), '.');
  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);
  const struct stat left = StatOrDie(path_);
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_NE(StatOrDie(path_).st_ino, left.st_ino);
}

TEST_F(SoftFileLockTest, AStoppedHolderHereIsNeverBrokenHoweverOld) {
  Pipe ready, release;
  SoftLockOptions short_lived;
  short_lived.stale_after = absl::Milliseconds(300);
  Child holder = HoldInChild(path_, ready, release, short_lived);
  ASSERT_EQ(ready.Receive(), '.');
  holder.Kill(SIGSTOP);
  // Its heartbeat has stopped, and its file looks an hour old.
  SetAge(path_, dir_, absl::Hours(1));
  absl::StatusOr<SoftFileLock> lock =
      SoftFileLock::Acquire(path_, TryOnce(absl::Milliseconds(300)));
  EXPECT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  SoftLockOptions waiting = TryOnce(absl::Milliseconds(300));
  waiting.timeout = absl::Seconds(1);
  lock = SoftFileLock::Acquire(path_, waiting);
  EXPECT_TRUE(absl::IsDeadlineExceeded(lock.status())) << lock.status();
  holder.Kill(SIGCONT);
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(SoftFileLockTest, AFreshRecordFromAnotherHostHolds) {
  WriteFile(path_, internal::EncodeSoftLockRecord(OtherHostRecord()));
  SetAge(path_, dir_, absl::Seconds(5));
  absl::StatusOr<SoftFileLock> lock =
      SoftFileLock::Acquire(path_, TryOnce(absl::Seconds(30)));
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr("pid 4242 (/usr/bin/backup --full) on host "
                        "far-away-host"));
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr("last heartbeat 5"));
  absl::StatusOr<std::optional<SoftLockHolder>> seen =
      SoftFileLock::Holder(path_);
  ASSERT_TRUE(seen.ok() && seen->has_value()) << seen.status();
  EXPECT_EQ((*seen)->host, kOtherHost);
  EXPECT_FALSE((*seen)->on_this_host);
  EXPECT_FALSE((*seen)->stale);
  EXPECT_GE((*seen)->heartbeat_age, absl::Seconds(5));
  EXPECT_LT((*seen)->heartbeat_age, absl::Seconds(60));
}

TEST_F(SoftFileLockTest, AnExpiredRecordFromAnotherHostIsBroken) {
  WriteFile(path_, internal::EncodeSoftLockRecord(OtherHostRecord()));
  SetAge(path_, dir_, absl::Seconds(31));
  const struct stat planted = StatOrDie(path_);
  absl::StatusOr<SoftFileLock> lock =
      SoftFileLock::Acquire(path_, TryOnce(absl::Seconds(30)));
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_NE(StatOrDie(path_).st_ino, planted.st_ino);
  EXPECT_TRUE(lock->held());
}

TEST_F(SoftFileLockTest, AWaiterTakesAnotherHostsLockOnlyOnceItIsStale) {
  WriteFile(path_, internal::EncodeSoftLockRecord(OtherHostRecord()));
  const absl::Time planted = FilesystemNow(dir_);
  SoftLockOptions options;
  options.stale_after = absl::Milliseconds(600);
  options.remote_poll_interval = absl::Milliseconds(100);
  options.timeout = absl::Seconds(10);
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  const absl::Duration waited = FilesystemNow(dir_) - planted;
  EXPECT_GE(waited, absl::Milliseconds(600));
  EXPECT_LT(waited, absl::Seconds(3));
}

TEST_F(SoftFileLockTest, ConcurrentBreakersNeverBothHold) {
  SharedCounters* shared = MapSharedCounters();
  ASSERT_NE(shared, nullptr);
  constexpr int kRounds = 15, kBreakers = 6;
  for (int round = 0; round < kRounds; ++round) {
    // A lock of a dead holder on this host, or an expired one from another.
    internal::SoftLockRecord record = OtherHostRecord();
    if (round % 2 == 0) {
      record = internal::SelfSoftLockRecord(internal::NewNonce(), absl::Now());
      record.owner.start_ticks += 1;  // a process that is not this one
    }
    WriteFile(path_, internal::EncodeSoftLockRecord(record));
    SetAge(path_, dir_, absl::Minutes(2));
    Pipe start, results, release;
    std::vector<Child> breakers;
    for (int i = 0; i < kBreakers; ++i) {
      breakers.push_back(Child::Fork([&] {
        start.CloseWrite();
        release.CloseWrite();
        start.Receive(absl::Seconds(10));  // end of file: everyone starts
        absl::StatusOr<SoftFileLock> lock =
            SoftFileLock::Acquire(path_, TryOnce());
        if (!lock.ok()) {
          results.Send(absl::IsUnavailable(lock.status()) ? 'L' : 'E');
          return 0;
        }
        shared->Enter();
        results.Send('W');
        release.Receive(absl::Seconds(30));
        shared->Leave();
        return lock->Release().ok() ? 0 : 3;
      }));
    }
    start.CloseWrite();
    std::string outcomes;
    for (int i = 0; i < kBreakers; ++i) outcomes += results.Receive();
    std::sort(outcomes.begin(), outcomes.end());
    EXPECT_EQ(outcomes, "LLLLLW") << "round " << round;
    release.CloseWrite();
    for (Child& breaker : breakers) EXPECT_EQ(breaker.Wait(), 0);
    ASSERT_NE(access(path_.c_str(), F_OK), 0) << "released in round " << round;
  }
  EXPECT_EQ(shared->most_inside.load(), 1);
  munmap(shared, sizeof(SharedCounters));
}

TEST_F(SoftFileLockTest, AnUnreadableRecordIsBrokenOnlyAfterStaleAfter) {
  for (const std::string& contents :
       {std::string(), std::string("onlyone-owner 1 999 not-a-checksum\n")}) {
    WriteFile(path_, contents);
    absl::StatusOr<SoftFileLock> lock =
        SoftFileLock::Acquire(path_, TryOnce(absl::Seconds(30)));
    ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
    EXPECT_THAT(std::string(lock.status().message()),
                HasSubstr("record cannot be read"));
    SetAge(path_, dir_, absl::Seconds(31));
    lock = SoftFileLock::Acquire(path_, TryOnce(absl::Seconds(30)));
    ASSERT_TRUE(lock.ok()) << lock.status();
    ASSERT_TRUE(lock->Release().ok());
  }
}

TEST_F(SoftFileLockTest, AnotherUsersRecordIsNotBelieved) {
  // It names a process of this host that is gone, which would be broken at
  // once if believed; from another user it is only an unreadable record.
  internal::SoftLockRecord record =
      internal::SelfSoftLockRecord(internal::NewNonce(), absl::Now());
  record.owner.start_ticks += 1;
  WriteFile(path_, internal::EncodeSoftLockRecord(record));
  ASSERT_EQ(chown(path_.c_str(), kNobodyUid, kNobodyUid), 0);
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr("record cannot be read"));
  EXPECT_EQ(StatOrDie(path_).st_uid, kNobodyUid);
}

TEST_F(SoftFileLockTest, SomeonesDataIsRefusedAndLeftUntouched) {
  WriteFile(path_, "precious data\n");
  SetAge(path_, dir_, absl::Hours(2));
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, TryOnce());
  ASSERT_TRUE(absl::IsFailedPrecondition(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr(path_));
  EXPECT_EQ(ReadFileOrEmpty(path_), "precious data\n");
}

TEST_F(SoftFileLockTest, ABrokenHolderLearnsItAndKeepsItsSuccessorsLock) {
  SoftLockOptions options;
  options.stale_after = absl::Milliseconds(300);
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  const CancellationToken lost = lock->lost();
  // Another host judged it stale: moved it away and took the path.
  ASSERT_EQ(rename(path_.c_str(), (dir_ + "/moved").c_str()), 0);
  unlink((dir_ + "/moved").c_str());
  WriteFile(path_, internal::EncodeSoftLockRecord(OtherHostRecord()));
  const struct stat successor = StatOrDie(path_);
  EXPECT_TRUE(WaitCancelled(lost, absl::Seconds(2)))
      << "the heartbeat (every 100 ms) did not notice";
  EXPECT_FALSE(lock->held());
  const absl::Status released = lock->Release();
  EXPECT_TRUE(absl::IsAborted(released)) << released;
  EXPECT_THAT(std::string(released.message()), HasSubstr(path_));
  EXPECT_EQ(StatOrDie(path_).st_ino, successor.st_ino);
  EXPECT_TRUE(lock->Release().ok()) << "a second Release() is OK";
}

TEST_F(SoftFileLockTest, ReleaseNeverDeletesASuccessorsLock) {
  // No heartbeat before the release (every 10 s): Release() itself must
  // see that the path is no longer its file.
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok()) << lock.status();
  ASSERT_EQ(unlink(path_.c_str()), 0);
  WriteFile(path_, internal::EncodeSoftLockRecord(OtherHostRecord()));
  const struct stat successor = StatOrDie(path_);
  const absl::Status released = lock->Release();
  EXPECT_TRUE(absl::IsAborted(released)) << released;
  ASSERT_EQ(access(path_.c_str(), F_OK), 0) << "the successor's lock is gone";
  EXPECT_EQ(StatOrDie(path_).st_ino, successor.st_ino);
  EXPECT_TRUE(lock->lost().IsCancelled());
}

TEST_F(SoftFileLockTest, HeldTurnsFalseAtOnceWhenBroken) {
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_TRUE(lock->held());
  ASSERT_EQ(unlink(path_.c_str()), 0);
  EXPECT_FALSE(lock->held());
  EXPECT_TRUE(lock->lost().IsCancelled());
}

TEST_F(SoftFileLockTest, TheHeartbeatKeepsALongHolderFresh) {
  SoftLockOptions options;
  options.stale_after = absl::Milliseconds(300);
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_, options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  SetAge(path_, dir_, absl::Hours(1));
  // The next beat (within 100 ms) sets the time back to now.
  const absl::Time deadline = absl::Now() + absl::Seconds(3);
  absl::Duration age = absl::Hours(1);
  while (absl::Now() < deadline) {
    age = FilesystemNow(dir_) - absl::TimeFromTimespec(StatOrDie(path_).st_mtim);
    if (age < absl::Seconds(1)) break;
    absl::SleepFor(absl::Milliseconds(20));  // sampling, not synchronising
  }
  EXPECT_LT(age, absl::Seconds(1));
  EXPECT_TRUE(lock->held());
}

TEST_F(SoftFileLockTest, AReleaseWakesAWaiterPromptlyWithoutPolling) {
  Pipe ready, release;
  struct Shared {
    std::atomic<int64_t> released_ns{0};
  };
  auto* shared = static_cast<Shared*>(mmap(nullptr, sizeof(Shared),
                                           PROT_READ | PROT_WRITE,
                                           MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(shared, MAP_FAILED);
  new (shared) Shared();
  Child holder = Child::Fork([&] {
    absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_);
    if (!lock.ok()) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    shared->released_ns = absl::GetCurrentTimeNanos();
    return lock->Release().ok() ? 0 : 3;
  });
  ASSERT_EQ(ready.Receive(), '.');
  int switches = -1;
  int64_t acquired_ns = 0;
  absl::Status status;
  std::thread waiter([&] {
    const int before = VoluntaryContextSwitchesOfThisThread();
    absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_);
    acquired_ns = absl::GetCurrentTimeNanos();
    switches = VoluntaryContextSwitchesOfThisThread() - before;
    status = lock.status();
  });
  // A window in which a polling waiter would wake many times.
  absl::SleepFor(absl::Milliseconds(700));
  release.Send();
  waiter.join();
  EXPECT_EQ(holder.Wait(), 0);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_LT(absl::Nanoseconds(acquired_ns - shared->released_ns.load()),
            absl::Milliseconds(200));
  // Blocked in poll(2) once or twice (other files' events in the directory
  // may wake it); a poller backing off from 10 ms would have woken 6 times.
  EXPECT_LE(switches, 4);
  munmap(shared, sizeof(Shared));
}

TEST_F(SoftFileLockTest, SymlinksDirectoriesAndFifosAreRefusedUntouched) {
  const std::string target = dir_ + "/target";
  WriteFile(target, "keep\n");
  const std::string link_path = dir_ + "/link.lock";
  ASSERT_EQ(symlink(target.c_str(), link_path.c_str()), 0);
  const std::string directory = dir_ + "/dir.lock";
  ASSERT_EQ(mkdir(directory.c_str(), 0700), 0);
  const std::string fifo = dir_ + "/fifo.lock";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& path : {link_path, directory, fifo}) {
    const struct stat before = StatOrDie(path);
    absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path, TryOnce());
    ASSERT_TRUE(absl::IsInvalidArgument(lock.status())) << lock.status();
    EXPECT_THAT(std::string(lock.status().message()), HasSubstr(path));
    const struct stat after = StatOrDie(path);
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(after.st_mode, before.st_mode);
  }
  EXPECT_EQ(ReadFileOrEmpty(target), "keep\n");
}

TEST_F(SoftFileLockTest, AHeldSymlinkAtTheBreakLockStopsARelease) {
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path_);
  ASSERT_TRUE(lock.ok()) << lock.status();
  const std::string break_path = path_ + ".break";
  ASSERT_EQ(symlink("/etc/passwd", break_path.c_str()), 0);
  const absl::Status released = lock->Release();
  EXPECT_TRUE(absl::IsInvalidArgument(released)) << released;
  EXPECT_THAT(std::string(released.message()), HasSubstr(break_path));
  char target[64] = {};
  EXPECT_GT(readlink(break_path.c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "/etc/passwd");
  unlink(break_path.c_str());
}

TEST_F(SoftFileLockTest, BadArgumentsAreInvalid) {
  EXPECT_TRUE(absl::IsInvalidArgument(SoftFileLock::Acquire("").status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(SoftFileLock::Acquire(dir_ + "/").status()));
  SoftLockOptions options;
  options.stale_after = absl::ZeroDuration();
  EXPECT_TRUE(
      absl::IsInvalidArgument(SoftFileLock::Acquire(path_, options).status()));
  options = SoftLockOptions();
  options.timeout = -absl::Seconds(1);
  EXPECT_TRUE(
      absl::IsInvalidArgument(SoftFileLock::Acquire(path_, options).status()));
  absl::StatusOr<SoftFileLock> missing =
      SoftFileLock::Acquire(dir_ + "/no/such/dir.lock");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
}

TEST_F(SoftFileLockTest, TwoLocksOnOnePathExcludeEachOtherInOneThread) {
  absl::StatusOr<SoftFileLock> first = SoftFileLock::Acquire(path_);
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<SoftFileLock> second = SoftFileLock::Acquire(path_, TryOnce());
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  SoftFileLock moved = *std::move(first);
  EXPECT_TRUE(moved.held());
  ASSERT_TRUE(moved.Release().ok());
  second = SoftFileLock::Acquire(path_, TryOnce());
  EXPECT_TRUE(second.ok()) << second.status();
}

}  // namespace
}  // namespace onlyone::testing
