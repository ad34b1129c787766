#include "onlyone/scoped_semaphore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "onlyone/internal/cancellation_state.h"
#include "onlyone/internal/file_kind.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/interruptible_wait.h"
#include "onlyone/internal/lock_table.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/printable.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/internal/retry.h"
#include "onlyone/internal/small_file.h"
#include "onlyone/internal/thread_signals.h"

namespace onlyone {
namespace {

using internal::PosixError;
using internal::RetryOnEintr;

constexpr char kSlotCountSuffix[] = ".slots";
constexpr char kGateSuffix[] = ".gate.lock";

absl::Status ValidateRequest(absl::string_view path, int slots,
                             const SemaphoreOptions& options) {
  if (path.empty()) {
    return absl::InvalidArgumentError("semaphore path is empty");
  }
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "semaphore path contains a NUL byte: ", absl::CEscape(path)));
  }
  const size_t slash = path.rfind('/');
  const absl::string_view name =
      slash == absl::string_view::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": a semaphore path is DIRECTORY/NAME, and \"", name,
        "\" is not a name"));
  }
  if (slots < 1 || slots > kMaxSemaphoreSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", slots, " slots; a semaphore has 1 to ",
                     kMaxSemaphoreSlots));
  }
  if (options.timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": negative timeout ", absl::FormatDuration(options.timeout)));
  }
  if ((options.file_mode & ~static_cast<mode_t>(07777)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": file mode ", absl::StrFormat("%o", options.file_mode),
        " has bits outside 07777"));
  }
  return absl::OkStatus();
}

// Reads the slot-count record: nullopt when there is none.
absl::StatusOr<std::optional<int>> ReadSlotCount(const std::string& record) {
  const int fd = RetryOnEintr([&] {
    return open(record.c_str(),
                O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  });
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == ENOENT) return std::optional<int>();
    return PosixError(absl::StrCat(record, ": open"), error_number);
  }
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat status;
  if (fstat(fd, &status) != 0) {
    return PosixError(absl::StrCat(record, ": fstat"), errno);
  }
  if (const char* kind = internal::NonRegularFileKind(status.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(record, " is ", kind, ", not a slot-count record"));
  }
  char buffer[32];
  const ssize_t got =
      RetryOnEintr([&] { return pread(fd, buffer, sizeof buffer, 0); });
  if (got < 0) return PosixError(absl::StrCat(record, ": read"), errno);
  const absl::string_view text =
      absl::StripAsciiWhitespace(absl::string_view(buffer, got));
  int count;
  if (!absl::SimpleAtoi(text, &count) || count < 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        record, ": not a slot-count record (\"", absl::CEscape(text),
        "\"); remove it while no permit is held"));
  }
  return std::optional<int>(count);
}

// Publishes `slots` as the record, complete or not at all: a temporary file
// of ours, hard-linked to the record's name. Returns false if another
// caller's record was there first.
absl::StatusOr<bool> PublishSlotCount(const std::string& record, int slots,
                                      mode_t file_mode) {
  static std::atomic<unsigned> sequence{0};
  const std::string temporary =
      absl::StrCat(record, ".", getpid(), ".", sequence++, ".tmp");
  const int fd = RetryOnEintr([&] {
    return open(temporary.c_str(),
                O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                file_mode);
  });
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          record, ": the directory for the semaphore does not exist"));
    }
    return PosixError(absl::StrCat(temporary, ": open"), error_number);
  }
  // The temporary file is ours: removed whatever happens.
  absl::Cleanup remove = [&temporary] { unlink(temporary.c_str()); };
  const std::string text = absl::StrCat(slots, "\n");
  const bool written =
      RetryOnEintr([&] { return write(fd, text.data(), text.size()); }) ==
      static_cast<ssize_t>(text.size());
  int error_number = written ? 0 : errno;
  if (written && fchmod(fd, file_mode) != 0) error_number = errno;
  close(fd);
  if (error_number != 0) {
    return PosixError(absl::StrCat(temporary, ": write"), error_number);
  }
  if (link(temporary.c_str(), record.c_str()) != 0) {
    error_number = errno;
    if (error_number == EEXIST) return false;
    return PosixError(absl::StrCat(record, ": link"), error_number);
  }
  return true;
}

// Holds the caller to the recorded slot count (recording it first if none
// is), once per thread and path: a record is never rewritten by onlyone.
absl::Status CheckSlotCount(const std::string& path, int slots,
                            mode_t file_mode) {
  // Per thread, so neither a mutex (which fork() could inherit locked) nor
  // a system call is needed after the first check.
  thread_local absl::flat_hash_map<std::string, int> checked;
  if (auto it = checked.find(path); it != checked.end() && it->second == slots) {
    return absl::OkStatus();
  }
  const std::string record = absl::StrCat(path, kSlotCountSuffix);
  for (;;) {
    absl::StatusOr<std::optional<int>> recorded = ReadSlotCount(record);
    if (!recorded.ok()) return recorded.status();
    if (recorded->has_value()) {
      if (**recorded != slots) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, ": asked for ", slots, " slots, but ", record, " says ",
            **recorded,
            "; every caller must use the same count (remove the record while "
            "no permit is held to change it)"));
      }
      checked[path] = slots;
      return absl::OkStatus();
    }
    absl::StatusOr<bool> published = PublishSlotCount(record, slots, file_mode);
    if (!published.ok()) return published.status();
    // Either ours is there now, or another caller's came first: read it.
  }
}

LockOptions SlotLockOptions(const SemaphoreFileOptions& file,
                            absl::Duration timeout,
                            std::optional<CancellationToken> cancellation) {
  LockOptions options;
  options.timeout = timeout;
  options.cancellation = std::move(cancellation);
  options.file_mode = file.file_mode;
  options.inheritable = file.inheritable;
  return options;
}

// Whether the calling thread holds the lock on `file` itself (ScopedFileLock
// refuses to wait for that with FailedPrecondition; for a semaphore it is
// just a taken slot).
bool HeldByCallingThread(const std::string& file) {
  struct stat status;
  if (lstat(file.c_str(), &status) != 0) return false;
  // Not recursive: a pure query, nothing is counted.
  return internal::AddAcquisitionIfHeldByCallingThread(
             status.st_dev, status.st_ino, /*recursive=*/false,
             /*want_exclusive=*/true)
             .outcome == internal::Reacquisition::Outcome::kWouldDeadlock;
}

struct Permit {
  int slot;
  ScopedFileLock lock;
};

// Tries every slot once, in order; nullopt when all are taken.
absl::StatusOr<std::optional<Permit>> TryEverySlot(
    const std::string& path, int slots, const SemaphoreFileOptions& file) {
  const LockOptions options =
      SlotLockOptions(file, absl::ZeroDuration(), std::nullopt);
  for (int slot = 0; slot < slots; ++slot) {
    const std::string slot_path = ScopedSemaphore::SlotPath(path, slot);
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(slot_path, options);
    if (lock.ok()) return std::optional<Permit>(Permit{slot, *std::move(lock)});
    if (absl::IsUnavailable(lock.status())) continue;
    if (absl::IsFailedPrecondition(lock.status()) &&
        HeldByCallingThread(slot_path)) {
      continue;
    }
    return lock.status();
  }
  return std::optional<Permit>();
}

absl::Time BootTime() {
  std::string stat;
  if (!internal::ReadSmallFile("/proc/stat", 1 << 20, &stat)) {
    return absl::InfinitePast();
  }
  const size_t at = stat.find("\nbtime ");
  int64_t seconds;
  if (at == std::string::npos ||
      !absl::SimpleAtoi(
          absl::string_view(stat).substr(at + 7, stat.find('\n', at + 7) -
                                                     (at + 7)),
          &seconds)) {
    return absl::InfinitePast();
  }
  return absl::FromUnixSeconds(seconds);
}

std::string DescribeSlotHolder(const SemaphoreSlotHolder& holder) {
  std::string text = absl::StrCat("pid ", holder.pid);
  if (!holder.command.empty()) {
    absl::StrAppend(&text, " (", internal::Printable(holder.command), ")");
  }
  if (holder.started.has_value()) {
    absl::StrAppend(&text, " started ",
                    absl::FormatTime("%Y-%m-%d %H:%M:%S", *holder.started,
                                     absl::LocalTimeZone()));
  }
  return text;
}

// "slot 0: pid 10 (a) started ..., slot 1: pid 11 (b) ..." for the slots
// below `slots`, and the held slots beyond them named as such.
std::string DescribeHolders(const std::string& path, int slots) {
  const std::vector<SemaphoreSlotHolder> holders =
      ScopedSemaphore::Holders(path, slots);
  std::vector<std::string> ours, beyond;
  for (const SemaphoreSlotHolder& holder : holders) {
    std::string entry =
        absl::StrCat("slot ", holder.slot, ": ", DescribeSlotHolder(holder));
    (holder.slot < slots ? ours : beyond).push_back(std::move(entry));
  }
  std::string text = ours.empty() ? "holders not visible in /proc/locks"
                                   : absl::StrJoin(ours, ", ");
  if (!beyond.empty()) {
    absl::StrAppend(&text, "; and slot files beyond ", slots,
                    " are held (a caller uses a larger count): ",
                    absl::StrJoin(beyond, ", "));
  }
  return text;
}

// One thread per slot blocks in flock(2) on it; the first to take its slot
// wins. The winner wakes the caller first and then cancels the others; they
// are not waited for: each gives back what it took and ends on its own
// (holding the race alive through a shared_ptr), with a status that reads
// nothing from /proc, so that a hand-off costs the winner's wake-up and the
// caller's, not the losers' interruption.
class SlotRace : public std::enable_shared_from_this<SlotRace> {
 public:
  SlotRace(std::string path, int slots, const SemaphoreFileOptions& file)
      : path_(std::move(path)), slots_(slots), file_(file) {}

  // Waits for any slot until `deadline` (absl::Now() clock) or
  // `cancellation` (may be null). After a win, the caller must call Leave().
  absl::StatusOr<Permit> Run(absl::Time deadline,
                             internal::CancellationState* cancellation) {
    absl::Status started;
    try {
      // A process's signals are the application's, not these threads'.
      internal::NewThreadsBlockSignals blocked;
      for (int slot = 0; slot < slots_; ++slot) {
        std::thread([self = shared_from_this(), slot] {
          self->WaitForSlot(slot);
        }).detach();
      }
    } catch (const std::system_error& error) {
      started = absl::ResourceExhaustedError(absl::StrCat(
          path_, ": cannot start a thread to wait for a slot: ",
          error.what()));
    }
    absl::Status waited;
    std::optional<Permit> winner;
    absl::Status failure;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (started.ok()) {
        waited = internal::WaitCancellable(
            lock, decided_,
            [this] { return winner_.has_value() || !failure_.ok(); },
            deadline, cancellation);
      }
      over_ = true;
      winner = std::move(winner_);
      winner_.reset();
      failure = failure_;
    }
    // A slot taken by the time the wait ended is kept even if the deadline
    // passed at the same moment. Its thread cancels the others when the
    // caller calls Leave().
    if (winner.has_value()) return *std::move(winner);
    stop_.Cancel();
    if (!started.ok()) return started;
    if (!failure.ok()) return failure;
    return waited;
  }

  // Tells the winning thread that the caller is done with the race, so that
  // it cancels the other slots' threads.
  void Leave() {
    {
      std::lock_guard<std::mutex> hold(mu_);
      caller_left_ = true;
    }
    caller_left_cv_.notify_all();
  }

 private:
  void WaitForSlot(int slot) {
    absl::StatusOr<ScopedFileLock> lock;
    {
      internal::UnreportedCancellationScope nobody_reads_our_status;
      lock = ScopedFileLock::Acquire(
          ScopedSemaphore::SlotPath(path_, slot),
          SlotLockOptions(file_, absl::InfiniteDuration(), stop_));
    }
    bool won = false;
    bool failed = false;
    {
      std::lock_guard<std::mutex> hold(mu_);
      if (over_ || winner_.has_value()) {
        // Another slot won, or the wait is over: `lock` is released on
        // return.
      } else if (lock.ok()) {
        winner_.emplace(Permit{slot, *std::move(lock)});
        won = true;
      } else if (failure_.ok()) {
        failure_ = lock.status();
        failed = true;
      }
    }
    // Notified after unlocking, so that the caller does not wake into a
    // mutex we still hold.
    if (won || failed) decided_.notify_all();
    if (!won) return;
    // The losers are woken only once the caller is on its way out of
    // Acquire(): on a machine with few CPUs their wake-ups would otherwise
    // delay the caller's.
    {
      std::unique_lock<std::mutex> hold(mu_);
      caller_left_cv_.wait(hold, [this] { return caller_left_; });
    }
    stop_.Cancel();
  }

  const std::string path_;
  const int slots_;
  const SemaphoreFileOptions file_;
  CancellationToken stop_;
  std::mutex mu_;
  std::condition_variable decided_;
  std::condition_variable caller_left_cv_;
  bool caller_left_ ABSL_GUARDED_BY(mu_) = false;
  bool over_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Permit> winner_ ABSL_GUARDED_BY(mu_);
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string ScopedSemaphore::SlotPath(absl::string_view path, int slot) {
  // Every Acquire() builds one; StrFormat cost a tenth of an uncontended
  // acquisition.
  return absl::StrCat(path, ".", absl::Dec(slot, absl::kZeroPad2), ".lock");
}

std::vector<SemaphoreSlotHolder> ScopedSemaphore::Holders(
    absl::string_view path, int slots) {
  std::vector<SemaphoreSlotHolder> holders;
  const absl::Time boot = BootTime();
  const long ticks_per_second = sysconf(_SC_CLK_TCK);
  for (int slot = 0; slot < kMaxSemaphoreSlots; ++slot) {
    const std::string file = SlotPath(path, slot);
    struct stat status;
    if (lstat(file.c_str(), &status) != 0) {
      if (slot < slots) continue;  // never used yet
      break;                       // no larger count in use
    }
    for (const internal::FlockHolder& holder :
         internal::FlockHolders(status.st_dev, status.st_ino)) {
      SemaphoreSlotHolder entry;
      entry.slot = slot;
      entry.file = file;
      entry.pid = holder.pid;
      entry.command = internal::ProcessName(holder.pid);
      if (std::optional<uint64_t> ticks =
              internal::ProcessStartTicks(holder.pid);
          ticks.has_value() && boot != absl::InfinitePast() &&
          ticks_per_second > 0) {
        entry.started =
            boot + absl::Milliseconds(static_cast<int64_t>(
                       *ticks * 1000 / static_cast<uint64_t>(ticks_per_second)));
      }
      holders.push_back(std::move(entry));
    }
  }
  return holders;
}

absl::StatusOr<ScopedSemaphore> ScopedSemaphore::Acquire(
    absl::string_view path_view, int slots, const SemaphoreOptions& options) {
  if (absl::Status valid = ValidateRequest(path_view, slots, options);
      !valid.ok()) {
    return valid;
  }
  std::string path(path_view);  // moved into the permit on success
  const absl::Time deadline = options.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.timeout;
  if (absl::Status counted = CheckSlotCount(path, slots, options.file_mode);
      !counted.ok()) {
    return counted;
  }
  absl::StatusOr<std::optional<Permit>> tried =
      TryEverySlot(path, slots, options);
  if (!tried.ok()) return tried.status();
  if (tried->has_value()) {
    return ScopedSemaphore(std::move(path), slots, (*tried)->slot,
                           std::move((*tried)->lock));
  }
  if (options.timeout == absl::ZeroDuration()) {
    return absl::UnavailableError(
        absl::StrCat(path, ": all ", slots, " permits are taken; ",
                     DescribeHolders(path, slots)));
  }
  auto remaining = [&deadline] {
    return deadline == absl::InfiniteFuture()
               ? absl::InfiniteDuration()
               : std::max(deadline - absl::Now(), absl::ZeroDuration());
  };
  auto still_taken = [&] {
    return absl::DeadlineExceededError(absl::StrCat(
        path, ": all ", slots, " permits are still taken after waiting ",
        absl::FormatDuration(options.timeout), "; ",
        DescribeHolders(path, slots)));
  };
  // A wait whose deadline passed before its gate or slot wait began makes
  // that wait a try: its refusal means the time ran out.
  auto timed_out = [&](const absl::Status& status) {
    return absl::IsDeadlineExceeded(status) || absl::IsUnavailable(status);
  };
  auto cancelled = [&] {
    return absl::CancelledError(absl::StrCat(
        path, ": cancelled while waiting for one of ", slots, " permits"));
  };
  if (slots == 1) {
    // One slot: the plain blocking lock is the whole wait.
    absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(
        SlotPath(path, 0),
        SlotLockOptions(options, remaining(), options.cancellation));
    if (lock.ok()) return ScopedSemaphore(path, slots, 0, *std::move(lock));
    if (timed_out(lock.status())) return still_taken();
    if (absl::IsCancelled(lock.status())) return cancelled();
    return lock.status();
  }

  // Waiters queue on the gate; only its holder races for the slots.
  absl::StatusOr<ScopedFileLock> gate = ScopedFileLock::Acquire(
      absl::StrCat(path, kGateSuffix),
      SlotLockOptions(SemaphoreFileOptions{options.file_mode, false},
                      remaining(), options.cancellation));
  if (!gate.ok()) {
    if (timed_out(gate.status())) return still_taken();
    if (absl::IsCancelled(gate.status())) return cancelled();
    return gate.status();
  }
  // Slots freed while we queued need no thread.
  tried = TryEverySlot(path, slots, options);
  if (!tried.ok()) return tried.status();
  if (tried->has_value()) {
    return ScopedSemaphore(std::move(path), slots, (*tried)->slot,
                           std::move((*tried)->lock));
  }
  auto race = std::make_shared<SlotRace>(path, slots, options);
  absl::StatusOr<Permit> won = race->Run(
      deadline, options.cancellation.has_value()
                    ? &options.cancellation->state()
                    : nullptr);
  if (won.ok()) {
    ScopedSemaphore permit(path, slots, won->slot, std::move(won->lock));
    // The next waiter may start its race while we return. As in the gate's
    // destructor, a failed close is not the caller's concern: it has its
    // permit, and the gate's lock is gone with the descriptor either way.
    gate->Release().IgnoreError();
    race->Leave();
    return permit;
  }
  if (absl::IsDeadlineExceeded(won.status())) return still_taken();
  if (absl::IsCancelled(won.status())) return cancelled();
  return won.status();
}

absl::StatusOr<ScopedSemaphore> ScopedSemaphore::AdoptInherited(
    absl::string_view path_view, int slots) {
  if (absl::Status valid = ValidateRequest(path_view, slots, {}); !valid.ok()) {
    return valid;
  }
  const std::string path(path_view);
  for (int slot = 0; slot < slots; ++slot) {
    const std::string slot_path = SlotPath(path, slot);
    struct stat status;
    if (lstat(slot_path.c_str(), &status) != 0) continue;  // never used
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::AdoptInherited(slot_path);
    if (lock.ok()) return ScopedSemaphore(path, slots, slot, *std::move(lock));
    if (!absl::IsNotFound(lock.status())) return lock.status();
  }
  return absl::NotFoundError(absl::StrCat(
      path, ": no permit of its ", slots, " slots was inherited"));
}

ScopedSemaphore::ScopedSemaphore(std::string path, int slots, int slot,
                                 ScopedFileLock lock)
    : path_(std::move(path)),
      slots_(slots),
      slot_(slot),
      lock_(std::move(lock)) {}

ScopedSemaphore::ScopedSemaphore(ScopedSemaphore&& other) noexcept
    : path_(std::move(other.path_)),
      slots_(other.slots_),
      slot_(std::exchange(other.slot_, -1)),
      lock_(std::move(other.lock_)) {
  other.lock_.reset();
}

ScopedSemaphore& ScopedSemaphore::operator=(ScopedSemaphore&& other) noexcept {
  if (this != &other) {
    Release().IgnoreError();  // as in the destructor
    path_ = std::move(other.path_);
    slots_ = other.slots_;
    slot_ = std::exchange(other.slot_, -1);
    lock_ = std::move(other.lock_);
    other.lock_.reset();
  }
  return *this;
}

ScopedSemaphore::~ScopedSemaphore() { Release().IgnoreError(); }

absl::Status ScopedSemaphore::Release() {
  if (!lock_.has_value()) return absl::OkStatus();
  absl::Status released = lock_->Release();
  lock_.reset();
  slot_ = -1;
  return released;
}

bool ScopedSemaphore::held() const {
  return lock_.has_value() && lock_->held();
}

absl::StatusOr<std::optional<int>> ScopedSemaphore::RecordedSlots(
    absl::string_view path) {
  return ReadSlotCount(absl::StrCat(path, kSlotCountSuffix));
}

std::string ScopedSemaphore::GatePath(absl::string_view path) {
  return absl::StrCat(path, kGateSuffix);
}

}  // namespace onlyone
