#include "onlyone/internal/instance_process.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <utility>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "onlyone/internal/interruptible_wait.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/small_file.h"
#include "onlyone/internal/user_name.h"
#include "onlyone/version.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

namespace onlyone::internal {
namespace {

std::optional<uint64_t> StartTicksFromStat(absl::string_view stat) {
  // "PID (COMM) STATE PPID ..." where COMM may contain spaces and ')': the
  // fields after the last ')' start with field 3 (state).
  const size_t paren = stat.rfind(')');
  if (paren == absl::string_view::npos) return std::nullopt;
  const std::vector<absl::string_view> fields =
      absl::StrSplit(stat.substr(paren + 1), ' ', absl::SkipEmpty());
  constexpr size_t kStartTimeIndex = 22 - 3;
  uint64_t ticks;
  if (fields.size() <= kStartTimeIndex ||
      !absl::SimpleAtoi(fields[kStartTimeIndex], &ticks)) {
    return std::nullopt;
  }
  return ticks;
}

// The wall-clock time at which a process started `ticks` after boot:
// /proc's start time counts CLOCK_BOOTTIME (suspend included).
absl::Time StartTimeFromTicks(uint64_t ticks) {
  struct timespec boottime;
  clock_gettime(CLOCK_BOOTTIME, &boottime);
  const absl::Time now = absl::Now();
  const long clock_ticks = sysconf(_SC_CLK_TCK);
  const uint64_t ticks_per_second = clock_ticks > 0 ? clock_ticks : 100;
  const absl::Duration since_boot = absl::DurationFromTimespec(boottime);
  // Integer arithmetic: exact, and no floating-point library on the path.
  const absl::Duration start_after_boot =
      absl::Seconds(ticks / ticks_per_second) +
      absl::Nanoseconds((ticks % ticks_per_second) * 1'000'000'000 /
                        ticks_per_second);
  return now - (since_boot - start_after_boot);
}

OwnerRecord ComputeSelfRecord() {
  OwnerRecord record;
  record.pid = getpid();
  record.locker_pid = record.pid;
  std::string stat;
  if (ReadSmallFile("/proc/self/stat", 4096, &stat)) {
    if (std::optional<uint64_t> ticks = StartTicksFromStat(stat)) {
      record.start_ticks = *ticks;
      record.process_start_time = StartTimeFromTicks(*ticks);
    }
  }
  record.boot_id = BootId();
  struct utsname names;
  if (uname(&names) == 0) record.hostname = names.nodename;
  record.uid = geteuid();
  record.user = UserName(record.uid);
  char executable[PATH_MAX];
  const ssize_t length =
      readlink("/proc/self/exe", executable, sizeof executable);
  if (length > 0) record.executable.assign(executable, length);
  std::string command_line;
  // One byte more than the bound tells whether anything was cut off.
  if (ReadSmallFile("/proc/self/cmdline", kMaxCommandLineBytes + 1,
                    &command_line) &&
      !command_line.empty()) {
    if (command_line.back() == '\0') command_line.pop_back();
    record.command_line = absl::StrSplit(command_line, '\0');
    record.command_line_truncated = TruncateCommandLine(record.command_line) ||
                                    command_line.size() > kMaxCommandLineBytes;
  }
  record.version = kVersion;
  return record;
}

// The cached identity of this process. Never freed: a reader on another
// thread may still use an older one (a fork()ed child that acquires makes
// one more, so the leak is bounded). Lock-free, so that a fork() child never
// finds a mutex held by a thread it does not have.
std::atomic<const SelfIdentity*> cached_self{nullptr};

// Runs in the fork() child: async-signal-safe (an atomic store).
void ForgetSelfInChild() { cached_self.store(nullptr); }

}  // namespace




std::optional<uint64_t> ProcessStartTicks(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  std::string stat;
  if (!ReadSmallFile(path, 4096, &stat)) return std::nullopt;
  return StartTicksFromStat(stat);
}

const std::string& BootId() {
  static const std::string* const boot_id = [] {
    std::string text;
    ReadSmallFile("/proc/sys/kernel/random/boot_id", 128, &text);
    return new std::string(absl::StripAsciiWhitespace(text));
  }();
  return *boot_id;
}

const SelfIdentity& CachedSelfIdentity() {
  static absl::once_flag once;
  absl::call_once(once,
                  [] { pthread_atfork(nullptr, nullptr, ForgetSelfInChild); });
  const SelfIdentity* cached = cached_self.load(std::memory_order_acquire);
  if (cached != nullptr) return *cached;
  auto* fresh = new SelfIdentity{ComputeSelfRecord(), {}};
  fresh->encoded = EncodeIdentity(fresh->record);
  if (cached_self.compare_exchange_strong(cached, fresh,
                                          std::memory_order_acq_rel)) {
    return *fresh;
  }
  delete fresh;  // another thread was first
  return *cached;
}

OwnerRecord SelfRecord(uid_t euid) {
  OwnerRecord record = CachedSelfIdentity().record;
  // The effective uid may have changed since (setuid(2) after the first use).
  if (record.uid != euid) {
    record.uid = euid;
    record.user = UserName(euid);
  }
  return record;
}

bool RecordedProcessIsAlive(const OwnerRecord& record) {
  if (record.boot_id != BootId() || record.boot_id.empty()) return false;
  std::optional<uint64_t> ticks = ProcessStartTicks(record.pid);
  return ticks.has_value() && *ticks == record.start_ticks;
}

absl::StatusOr<int> OpenPidfd(pid_t pid) {
  const long fd = syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == ENOSYS) {
      return absl::UnimplementedError(
          "pidfd_open: not supported by the kernel");
    }
    if (error_number == ESRCH) {
      return absl::NotFoundError(absl::StrCat("pid ", pid, " has exited"));
    }
    return PosixError(absl::StrCat("pid ", pid, ": pidfd_open"), error_number);
  }
  // pidfd_open(2) sets close-on-exec itself.
  return static_cast<int>(fd);
}

absl::Status SignalPidfd(int pidfd, pid_t pid, int signal) {
  if (syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) != 0) {
    const int error_number = errno;
    if (error_number == ESRCH) {
      return absl::NotFoundError(absl::StrCat("pid ", pid, " has exited"));
    }
    return PosixError(absl::StrCat("pid ", pid, ": sending signal ", signal),
                      error_number);
  }
  return absl::OkStatus();
}

bool WaitForExit(int pidfd, absl::Duration timeout) {
  const absl::Time deadline = MonotonicNow() + timeout;
  for (;;) {
    const absl::Duration left = deadline - MonotonicNow();
    int timeout_ms = -1;
    if (left != absl::InfiniteDuration()) {
      if (left <= absl::ZeroDuration()) {
        timeout_ms = 0;
      } else {
        timeout_ms = static_cast<int>(std::min<int64_t>(
            absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
            INT_MAX));
      }
    }
    struct pollfd exited = {pidfd, POLLIN, 0};
    const int ready = poll(&exited, 1, timeout_ms);
    if (ready > 0) return true;
    if (ready == 0 && timeout_ms == 0) return false;
    if (ready < 0 && errno != EINTR) return false;
    if (ready == 0 && MonotonicNow() >= deadline) return false;
  }
}

}  // namespace onlyone::internal
