// lock_bench: measures onlyone next to the raw flock(2) system calls that do
// the same job, in one run, and prints each figure with its ratio to the raw
// baseline, the target and PASS/MISS. See docs/performance.md.
//
//   bazel run -c opt //tests/bench:lock_bench [-- --flag=value ...]
//
// Flags (all optional):
//   --iterations=N  uncontended Acquire+Release per round      (200000)
//   --rounds=N      interleaved rounds of the uncontended test   (5)
//   --handoffs=N    hand-offs per variant                        (2000)
//   --hold_ms=N     how long the CPU-time waiters are blocked    (1000)
//   --workers=N     processes in the counter test                (4)
//   --sections=N    critical sections per process                (2000)
//   --handoff_cpus=LIST  hand-off placements, comma-separated, each measured
//                   in turn: split (holder and waiter pinned to two different
//                   CPUs), free (left to the scheduler), same (both pinned to
//                   one CPU)                                (split,free,same)
//   --only=LIST     run only these parts, comma-separated: uncontended,
//                   handoff, cpu, counter                       (all)
//   --fail_on_miss  exit 1 when a target is missed (default: report only)
//
// Exit status: 0 when every measurement ran and the shared counter was exact,
// 1 when the counter was wrong (or --fail_on_miss and a target was missed),
// 2 on any setup or system-call failure.
//
// Method, per figure:
//  1. Uncontended: Acquire+Release of an existing lock file vs open(2) +
//     flock(LOCK_EX) + flock(LOCK_UN) + close(2), in rounds that alternate
//     the two (and which goes first); the median round of each is reported.
//  2. Hand-off: the parent holds the lock, a forked waiter process blocks in
//     acquire; the parent waits until the kernel lists the waiter as blocked
//     on the file in /proc/locks ("->" line) AND the waiter's state in
//     /proc/PID/stat is 'S' (asleep), then reads CLOCK_MONOTONIC and
//     releases. The waiter reads CLOCK_MONOTONIC as soon as its acquire
//     returns; the difference goes through shared memory. No sleeps are used
//     to synchronise. A fourth variant, raw plus the lstat(2) that a
//     correct Acquire() must make after a wait, is the floor for any
//     implementation. The variants run in interleaved blocks of 100. Holder
//     and waiter are pinned to two CPUs by default: left to the scheduler,
//     a run lands on one CPU or on two at random, and the raw baseline then
//     changes by 2x between runs (waking an idle virtual CPU costs ~5 us).
//  3. Waiter CPU: three forked waiters block at once for --hold_ms (timed
//     Acquire with a 10 s timeout, released by the holder; a cancellable
//     Acquire cancelled by another thread; raw blocking flock). Each reports
//     CLOCK_THREAD_CPUTIME_ID and its minor page faults around its wait.
//     Each waiter does it twice: "cold" is the first wait of a freshly forked
//     process (first use of the library's code and data), "warm" the second.
//     The parent also collects each child's whole rusage with wait4(2).
//  4. Throughput: --workers processes each run --sections critical sections
//     that pread a counter from the lock file, increment it and pwrite it
//     back; the counter must end at workers * sections. Raw plus that
//     lstat inside the critical section is measured too, as the floor.

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "onlyone/cancellation.h"
#include "onlyone/scoped_file_lock.h"
#include "tests/bench/bench_util.h"

namespace onlyone::bench {
namespace {

struct Config {
  int iterations = 200000;
  int rounds = 5;
  int handoffs = 2000;
  int hold_ms = 1000;
  int workers = 4;
  int sections = 2000;
  bool fail_on_miss = false;
  // Hand-off CPU placements, measured in turn: "split" (holder and waiter on
  // two different CPUs), "free" (the scheduler's choice), "same" (on one CPU).
  std::vector<std::string> handoff_cpus = {"split", "free", "same"};
  // Which parts to run; all by default.
  bool uncontended = true, handoff = true, cpu = true, counter = true;
};

// ---------------------------------------------------------------------------
// Seeing a waiter block.

// Whether /proc/locks lists `pid` as blocked ("->") on a flock(2) lock.
bool ListedAsFlockWaiter(pid_t pid) {
  const std::string locks = ReadWholeFile("/proc/locks");
  for (absl::string_view line : absl::StrSplit(locks, '\n')) {
    // "3: -> FLOCK  ADVISORY  WRITE 9516 fe:00:10952733 0 EOF"
    size_t arrow = line.find("-> ");
    if (arrow == absl::string_view::npos) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line.substr(arrow + 3), ' ', absl::SkipEmpty());
    if (fields.size() < 4 || fields[0] != "FLOCK") continue;
    int listed = 0;
    if (absl::SimpleAtoi(fields[3], &listed) && listed == pid) return true;
  }
  return false;
}

// The state letter from /proc/PID/stat ('R', 'S', 'D', ...), or '?'.
char ProcessState(pid_t pid) {
  const std::string stat = ReadWholeFile(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return '?';
  return stat[paren + 2];
}

// Returns once `pid` is asleep in the kernel waiting for a flock(2) lock:
// listed as a waiter in /proc/locks and in state 'S'. Polls (yielding the
// CPU) rather than sleeping; dies after 10 s.
void WaitUntilBlockedInFlock(pid_t pid) {
  const int64_t give_up = NowNs() + 10'000'000'000;
  for (;;) {
    if (ListedAsFlockWaiter(pid) && ProcessState(pid) == 'S') return;
    if (NowNs() > give_up) {
      Die(absl::StrFormat("pid %d never blocked in flock(2)", pid));
    }
    sched_yield();
  }
}

void CreateFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) DieErrno(absl::StrCat("create ", path));
  close(fd);
}

// What a correct Acquire() must do after a wait, done by hand: look the
// path up again (lstat), since the holder may have removed or replaced the
// file meanwhile. Raw code plus this is the floor for any implementation.
void ReCheckPath(const std::string& path) {
  struct stat now;
  if (lstat(path.c_str(), &now) != 0) DieErrno(absl::StrCat("lstat ", path));
}

// ---------------------------------------------------------------------------
// The two ways of taking the lock that every figure compares.

int RawLock(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) DieErrno(absl::StrCat("open ", path));
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) DieErrno("flock(LOCK_EX)");
  }
  return fd;
}

void RawUnlock(int fd) {
  if (flock(fd, LOCK_UN) != 0) DieErrno("flock(LOCK_UN)");
  if (close(fd) != 0) DieErrno("close");
}

ScopedFileLock OnlyoneLock(const std::string& path,
                           const LockOptions& options = {}) {
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path, options);
  if (!lock.ok()) Die(lock.status().ToString());
  return *std::move(lock);
}

void OnlyoneUnlock(ScopedFileLock& lock) {
  absl::Status released = lock.Release();
  if (!released.ok()) Die(released.ToString());
}

// Printed under the table: signs that the machine was busy during the run.
std::vector<std::string>& Warnings() {
  static auto* warnings = new std::vector<std::string>();
  return *warnings;
}

// ---------------------------------------------------------------------------
// 1. Uncontended Acquire + Release.

void BenchUncontended(const Config& cfg, TempDir& dir, std::vector<Row>& rows) {
  const std::string path = dir.File("uncontended.lock");
  CreateFile(path);

  auto raw_loop = [&](int n) {
    for (int i = 0; i < n; ++i) RawUnlock(RawLock(path));
  };
  auto onlyone_loop = [&](int n) {
    for (int i = 0; i < n; ++i) {
      ScopedFileLock lock = OnlyoneLock(path);
      OnlyoneUnlock(lock);
    }
  };
  auto ns_per_op = [&](const std::function<void(int)>& loop) {
    const int64_t start = NowNs();
    loop(cfg.iterations);
    return static_cast<double>(NowNs() - start) / cfg.iterations;
  };

  // Warm up caches, the dentry and the lock table's one-time set-up.
  raw_loop(std::max(1, cfg.iterations / 20));
  onlyone_loop(std::max(1, cfg.iterations / 20));

  std::vector<double> raw_rounds, onlyone_rounds;
  for (int round = 0; round < cfg.rounds; ++round) {
    if (round % 2 == 0) {
      raw_rounds.push_back(ns_per_op(raw_loop));
      onlyone_rounds.push_back(ns_per_op(onlyone_loop));
    } else {
      onlyone_rounds.push_back(ns_per_op(onlyone_loop));
      raw_rounds.push_back(ns_per_op(raw_loop));
    }
  }
  const double raw = Median(raw_rounds);
  const double ours = Median(onlyone_rounds);
  std::string raw_detail, ours_detail;
  for (int i = 0; i < cfg.rounds; ++i) {
    absl::StrAppend(&raw_detail, i ? " " : "",
                    absl::StrFormat("%.0f", raw_rounds[i]));
    absl::StrAppend(&ours_detail, i ? " " : "",
                    absl::StrFormat("%.0f", onlyone_rounds[i]));
  }
  absl::PrintF("  uncontended rounds (ns/op): onlyone [%s]  raw [%s]\n",
               ours_detail, raw_detail);
  for (const auto* r : {&raw_rounds, &onlyone_rounds}) {
    const auto [lo, hi] = std::minmax_element(r->begin(), r->end());
    if (*hi > 1.2 * *lo) {
      Warnings().push_back(absl::StrFormat(
          "uncontended: %s rounds differ by %.0f%%; other load disturbed the "
          "run",
          r == &raw_rounds ? "raw" : "onlyone", (*hi / *lo - 1) * 100));
    }
  }
  rows.push_back(RatioRow("uncontended acquire+release (ns/op, median round)",
                          absl::StrFormat("%.0f", ours),
                          absl::StrFormat("%.0f", raw), ours, raw, 1.3));
}

// ---------------------------------------------------------------------------
// 2. Hand-off latency between processes.

struct HandoffShared {
  std::atomic<int64_t> acquired_ns{0};  // written by the waiter
};

enum Variant : char {
  kBlocking = 'a',  // Acquire with default options
  kTimed = 'b',     // Acquire with a 10 s timeout
  kRaw = 'c',       // open(2) + flock(LOCK_EX)
  // Raw plus the one check a correct Acquire() must make after a wait (the
  // lstat(2) that re-validates the path): the floor for any implementation.
  kRawChecked = 'd',
};

// The waiter process: on each command byte, says "about to block" ('r'),
// acquires (blocking, since the parent holds the lock), stamps the time,
// releases and says done ('d'). 'q' or EOF ends it.
int HandoffWaiter(const std::string& path, HandoffShared* shared,
                  int command_fd, int reply_fd) {
  LockOptions timed;
  timed.timeout = absl::Seconds(10);
  for (;;) {
    const char variant = ReadByte(command_fd);
    if (variant == 'q' || variant == 0) return 0;
    WriteByte(reply_fd, 'r');
    switch (variant) {
      case kBlocking:
      case kTimed: {
        absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(
            path, variant == kTimed ? timed : LockOptions{});
        const int64_t now = NowNs();
        if (!lock.ok()) Die(lock.status().ToString());
        shared->acquired_ns.store(now, std::memory_order_release);
        OnlyoneUnlock(*lock);
        break;
      }
      case kRaw:
      case kRawChecked: {
        int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) DieErrno("open");
        while (flock(fd, LOCK_EX) != 0) {
          if (errno != EINTR) DieErrno("flock");
        }
        if (variant == kRawChecked) ReCheckPath(path);
        const int64_t now = NowNs();
        shared->acquired_ns.store(now, std::memory_order_release);
        RawUnlock(fd);
        break;
      }
      default:
        Die(absl::StrFormat("waiter: unknown variant %d", variant));
    }
    WriteByte(reply_fd, 'd');
  }
}

void BenchHandoff(const Config& cfg, const std::string& placement,
                  TempDir& dir, std::vector<Row>& rows) {
  const std::string path = dir.File("handoff.lock");
  CreateFile(path);
  auto* shared = MapShared<HandoffShared>();
  Pipe command = MakePipe();
  Pipe reply = MakePipe();
  // Pins the calling process to `cpu`.
  auto pin = [](int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      DieErrno(absl::StrCat("sched_setaffinity to CPU ", cpu));
    }
  };
  cpu_set_t saved_affinity;
  if (sched_getaffinity(0, sizeof saved_affinity, &saved_affinity) != 0) {
    DieErrno("sched_getaffinity");
  }
  std::vector<int> allowed;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &saved_affinity)) allowed.push_back(cpu);
  }
  const int holder_cpu = allowed.empty() ? -1 : allowed[0];
  int waiter_cpu = -1;
  if (holder_cpu >= 0 && placement == "same") waiter_cpu = holder_cpu;
  if (holder_cpu >= 0 && placement == "split") {
    waiter_cpu = allowed.size() > 1 ? allowed[1] : holder_cpu;
  }
  const pid_t waiter = ForkChild([&] {
    if (waiter_cpu >= 0) pin(waiter_cpu);
    close(command.write_end);
    close(reply.read_end);
    return HandoffWaiter(path, shared, command.read_end, reply.write_end);
  });
  close(command.read_end);
  close(reply.write_end);
  if (waiter_cpu >= 0) pin(holder_cpu);
  absl::PrintF("  hand-off placement: %s (holder CPU %d, waiter CPU %d; -1 = "
               "unpinned)\n",
               placement, waiter_cpu >= 0 ? holder_cpu : -1,
               waiter_cpu);

  // One hand-off: hold, let the waiter block, release, return the latency.
  auto handoff_ns = [&](Variant variant) -> double {
    // The holder takes the lock the same way as the waiter will.
    int raw_fd = -1;
    std::optional<ScopedFileLock> held;
    if (variant == kRaw || variant == kRawChecked) {
      raw_fd = RawLock(path);
    } else {
      held.emplace(OnlyoneLock(path));
    }
    WriteByte(command.write_end, variant);
    ExpectByte(reply.read_end, 'r', "hand-off");
    WaitUntilBlockedInFlock(waiter);
    const int64_t released_ns = NowNs();
    if (variant == kRaw || variant == kRawChecked) {
      RawUnlock(raw_fd);
    } else {
      OnlyoneUnlock(*held);
    }
    ExpectByte(reply.read_end, 'd', "hand-off");
    return static_cast<double>(
        shared->acquired_ns.load(std::memory_order_acquire) - released_ns);
  };

  const Variant variants[] = {kBlocking, kTimed, kRaw, kRawChecked};
  constexpr int kVariants = sizeof variants / sizeof variants[0];
  // Warm-up, discarded.
  for (int i = 0; i < 50; ++i) {
    for (Variant v : variants) handoff_ns(v);
  }
  std::vector<double> latency[kVariants];
  const int block = std::max(1, std::min(100, cfg.handoffs));
  for (int done = 0; done < cfg.handoffs; done += block) {
    const int n = std::min(block, cfg.handoffs - done);
    for (int v = 0; v < kVariants; ++v) {
      for (int i = 0; i < n; ++i) latency[v].push_back(handoff_ns(variants[v]));
    }
  }
  WriteByte(command.write_end, 'q');
  WaitChild(waiter, "hand-off waiter");
  if (sched_setaffinity(0, sizeof saved_affinity, &saved_affinity) != 0) {
    DieErrno("restoring the CPU affinity");
  }
  close(command.write_end);
  close(reply.read_end);
  UnmapShared(shared);

  for (auto& l : latency) std::sort(l.begin(), l.end());
  const double raw_p50 = Percentile(latency[2], 50) / 1000;
  const double raw_p99 = Percentile(latency[2], 99) / 1000;
  absl::PrintF(
      "  hand-off, %s (us) min/p50/p90/p99/max: blocking %.1f/%.1f/%.1f/%.1f/%.1f"
      "  timed %.1f/%.1f/%.1f/%.1f/%.1f  raw %.1f/%.1f/%.1f/%.1f/%.1f\n",
      placement, latency[0].front() / 1000, Percentile(latency[0], 50) / 1000,
      Percentile(latency[0], 90) / 1000, Percentile(latency[0], 99) / 1000,
      latency[0].back() / 1000, latency[1].front() / 1000,
      Percentile(latency[1], 50) / 1000, Percentile(latency[1], 90) / 1000,
      Percentile(latency[1], 99) / 1000, latency[1].back() / 1000,
      latency[2].front() / 1000, raw_p50, Percentile(latency[2], 90) / 1000,
      raw_p99, latency[2].back() / 1000);
  if (raw_p50 > 2 * latency[2].front() / 1000) {
    Warnings().push_back(absl::StrFormat(
        "hand-off, %s: the raw p50 (%.1f us) is %.1fx its minimum; other "
        "load disturbed the run, rerun on an idle machine",
        placement, raw_p50, raw_p50 * 1000 / latency[2].front()));
  }
  const double checked_p50 = Percentile(latency[3], 50) / 1000;
  absl::PrintF(
      "  hand-off p50 added by onlyone, %s: blocking %+.1f us, timed %+.1f "
      "us; by the re-check alone (raw + lstat, %.1f us): %+.1f us\n",
      placement, Percentile(latency[0], 50) / 1000 - raw_p50,
      Percentile(latency[1], 50) / 1000 - raw_p50, checked_p50,
      checked_p50 - raw_p50);
  const char* names[] = {"blocking Acquire", "timed Acquire (10 s)"};
  for (int v = 0; v < 2; ++v) {
    AddLatencyRows(
        rows, absl::StrFormat("hand-off p50, %s, %s (us)", names[v], placement),
        absl::StrFormat("hand-off p99, %s, %s (us)", names[v], placement),
                   latency[v], latency[2], 1.5);
  }
  rows.push_back(RatioRow(
      absl::StrFormat("hand-off p50, raw + lstat (floor), %s (us)", placement),
      absl::StrFormat("%.1f", checked_p50), absl::StrFormat("%.1f", raw_p50),
      checked_p50, raw_p50, 0));
}

// ---------------------------------------------------------------------------
// 3. CPU used by a blocked waiter.

struct WaitReport {
  std::atomic<int64_t> wall_ns{0};
  std::atomic<int64_t> thread_cpu_ns{0};
  std::atomic<int64_t> minor_faults{0};
  std::atomic<int> status_code{-1};  // absl::StatusCode of the acquire
};

// Round 0 is the first wait in a freshly forked process (cold: first use of
// the library's code and data pages, the signal and timer set-up); round 1
// repeats it in the same process (warm).
constexpr int kCpuRounds = 2;

struct CpuShared {
  WaitReport timed[kCpuRounds], cancellable[kCpuRounds], raw[kCpuRounds];
};

int64_t ThreadCpuNs() { return NowNs(CLOCK_THREAD_CPUTIME_ID); }

// User plus system CPU time of a whole process, from wait4(2).
int64_t RusageCpuNs(const struct rusage& u) {
  return (int64_t{u.ru_utime.tv_sec} + u.ru_stime.tv_sec) * 1000000000 +
         (int64_t{u.ru_utime.tv_usec} + u.ru_stime.tv_usec) * 1000;
}

// Measures the calling thread while `wait` runs.
template <typename Fn>
void MeasureWait(WaitReport& report, Fn wait) {
  const int64_t faults = MinorFaults(RUSAGE_THREAD);
  const int64_t wall = NowNs(), cpu = ThreadCpuNs();
  const absl::StatusCode code = wait();
  report.thread_cpu_ns = ThreadCpuNs() - cpu;
  report.wall_ns = NowNs() - wall;
  report.minor_faults = MinorFaults(RUSAGE_THREAD) - faults;
  report.status_code = static_cast<int>(code);
}

void BenchWaiterCpu(const Config& cfg, TempDir& dir, std::vector<Row>& rows) {
  const std::string released_path = dir.File("cpu_released.lock");
  const std::string cancelled_path = dir.File("cpu_cancelled.lock");
  CreateFile(released_path);
  CreateFile(cancelled_path);
  auto* shared = MapShared<CpuShared>();
  Pipe go = MakePipe();      // one byte per waiter per round: start waiting
  Pipe done = MakePipe();    // one byte per waiter per round: finished
  Pipe cancel = MakePipe();  // one byte per round: cancel now

  // Runs `wait` once per round, when the parent says go.
  auto waiter = [&](const std::function<absl::StatusCode(int)>& wait) {
    return ForkChild([&] {
      close(go.write_end);
      close(done.read_end);
      close(cancel.write_end);
      for (int round = 0; round < kCpuRounds; ++round) {
        if (ReadByte(go.read_end) != 'g') Die("go pipe");
        wait(round);
        WriteByte(done.write_end, 'd');
      }
      return 0;
    });
  };
  const pid_t timed = waiter([&](int round) {
    LockOptions options;
    options.timeout = absl::Seconds(10);
    MeasureWait(shared->timed[round], [&] {
      return ScopedFileLock::Acquire(released_path, options).status().code();
    });
    return absl::StatusCode::kOk;
  });
  const pid_t cancellable = waiter([&](int round) {
    CancellationToken token;
    std::thread canceller([&] {
      if (ReadByte(cancel.read_end) == 'c') token.Cancel();
    });
    LockOptions options;
    options.cancellation = token;
    MeasureWait(shared->cancellable[round], [&] {
      return ScopedFileLock::Acquire(cancelled_path, options).status().code();
    });
    canceller.join();
    return absl::StatusCode::kOk;
  });
  const pid_t raw = waiter([&](int round) {
    MeasureWait(shared->raw[round], [&] {
      RawUnlock(RawLock(released_path));
      return absl::StatusCode::kOk;
    });
    return absl::StatusCode::kOk;
  });
  close(go.read_end);
  close(done.write_end);
  close(cancel.read_end);

  for (int round = 0; round < kCpuRounds; ++round) {
    // No ScopedFileLock is held across the forks above.
    ScopedFileLock released_hold = OnlyoneLock(released_path);
    ScopedFileLock cancelled_hold = OnlyoneLock(cancelled_path);
    for (int i = 0; i < 3; ++i) WriteByte(go.write_end, 'g');
    for (pid_t pid : {timed, cancellable, raw}) WaitUntilBlockedInFlock(pid);
    // The workload: stay blocked for hold_ms (not a synchronisation).
    struct timespec hold = {cfg.hold_ms / 1000,
                            (cfg.hold_ms % 1000) * 1000000L};
    while (nanosleep(&hold, &hold) != 0 && errno == EINTR) {
    }
    OnlyoneUnlock(released_hold);
    WriteByte(cancel.write_end, 'c');
    for (int i = 0; i < 3; ++i) ExpectByte(done.read_end, 'd', "cpu waiter");
    OnlyoneUnlock(cancelled_hold);
  }
  struct rusage timed_usage, cancellable_usage, raw_usage;
  WaitChild(timed, "timed waiter", &timed_usage);
  WaitChild(cancellable, "cancellable waiter", &cancellable_usage);
  WaitChild(raw, "raw waiter", &raw_usage);

  const double hold_s = cfg.hold_ms / 1000.0;
  for (int round = 0; round < kCpuRounds; ++round) {
    if (shared->timed[round].status_code !=
        static_cast<int>(absl::StatusCode::kOk)) {
      Die(absl::StrCat("timed waiter: status code ",
                       shared->timed[round].status_code.load()));
    }
    if (shared->cancellable[round].status_code !=
        static_cast<int>(absl::StatusCode::kCancelled)) {
      Die(absl::StrCat("cancellable waiter: expected Cancelled, got code ",
                       shared->cancellable[round].status_code.load()));
    }
    const char* name = round == 0 ? "cold" : "warm";
    absl::PrintF(
        "  blocked waiters, %s: wall s / thread CPU us / minor faults: timed "
        "%.3f/%.0f/%d  cancellable %.3f/%.0f/%d  raw %.3f/%.0f/%d\n",
        name, shared->timed[round].wall_ns / 1e9,
        shared->timed[round].thread_cpu_ns / 1e3,
        shared->timed[round].minor_faults.load(),
        shared->cancellable[round].wall_ns / 1e9,
        shared->cancellable[round].thread_cpu_ns / 1e3,
        shared->cancellable[round].minor_faults.load(),
        shared->raw[round].wall_ns / 1e9,
        shared->raw[round].thread_cpu_ns / 1e3,
        shared->raw[round].minor_faults.load());
    const double raw_us = shared->raw[round].thread_cpu_ns / 1e3;
    auto add = [&](absl::string_view kind, const WaitReport& r) {
      const double us = r.thread_cpu_ns / 1e3;
      rows.push_back({absl::StrFormat("waiter CPU, %s, %gs blocked, %s (us)",
                                      kind, hold_s, name),
                      absl::StrFormat("%.0f", us),
                      absl::StrFormat("%.0f", raw_us), Ratio(us, raw_us),
                      "<= 2000 us", Verdict(us <= 2000)});
    };
    add("timed Acquire", shared->timed[round]);
    add("cancelled Acquire", shared->cancellable[round]);
  }
  absl::PrintF(
      "  whole waiter processes (fork to exit, wait4 rusage): timed %.0f us, "
      "cancellable %.0f us, raw %.0f us CPU\n",
      RusageCpuNs(timed_usage) / 1e3, RusageCpuNs(cancellable_usage) / 1e3,
      RusageCpuNs(raw_usage) / 1e3);
  close(go.write_end);
  close(done.read_end);
  close(cancel.write_end);
  UnmapShared(shared);
}

// ---------------------------------------------------------------------------
// 4. Contended critical sections updating a shared counter.

struct CounterShared {
  std::atomic<int64_t> end_ns[64];
};

enum class CounterKind { kOnlyone, kRaw, kRawChecked };

// Runs one contended round; returns sections per second and the final count.
std::pair<double, uint64_t> CounterRound(const Config& cfg,
                                         const std::string& path,
                                         CounterKind kind) {
  // Start the counter at zero.
  {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) DieErrno("open counter");
    uint64_t zero = 0;
    if (pwrite(fd, &zero, sizeof zero, 0) != sizeof zero) DieErrno("pwrite");
    close(fd);
  }
  auto* shared = MapShared<CounterShared>();
  Pipe go = MakePipe();
  auto increment = [](int fd) {
    uint64_t value = 0;
    if (pread(fd, &value, sizeof value, 0) != sizeof value) DieErrno("pread");
    ++value;
    if (pwrite(fd, &value, sizeof value, 0) != sizeof value) DieErrno("pwrite");
  };
  std::vector<pid_t> workers;
  for (int w = 0; w < cfg.workers; ++w) {
    workers.push_back(ForkChild([&, w] {
      close(go.write_end);
      if (ReadByte(go.read_end) != 0) Die("go pipe");
      for (int i = 0; i < cfg.sections; ++i) {
        if (kind == CounterKind::kOnlyone) {
          ScopedFileLock lock = OnlyoneLock(path);
          increment(lock.fd());
          OnlyoneUnlock(lock);
        } else {
          int fd = RawLock(path);
          if (kind == CounterKind::kRawChecked) ReCheckPath(path);
          increment(fd);
          RawUnlock(fd);
        }
      }
      shared->end_ns[w] = NowNs();
      return 0;
    }));
  }
  close(go.read_end);
  const int64_t start = NowNs();
  close(go.write_end);  // EOF releases every worker at once
  int64_t end = start;
  for (size_t w = 0; w < workers.size(); ++w) {
    WaitChild(workers[w], "counter worker");
    end = std::max<int64_t>(end, shared->end_ns[w]);
  }
  UnmapShared(shared);

  uint64_t count = 0;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || pread(fd, &count, sizeof count, 0) != sizeof count) {
    DieErrno("read counter");
  }
  close(fd);
  const double seconds = (end - start) / 1e9;
  return {cfg.workers * double{1} * cfg.sections / seconds, count};
}

bool BenchCounter(const Config& cfg, TempDir& dir, std::vector<Row>& rows) {
  if (cfg.workers > 64) Die("--workers is at most 64");
  const std::string ours_path = dir.File("counter_onlyone.lock");
  const std::string raw_path = dir.File("counter_raw.lock");
  const uint64_t expected = uint64_t(cfg.workers) * cfg.sections;
  // onlyone, raw and raw + the re-check, in an order that rotates per round.
  const CounterKind kinds[] = {CounterKind::kOnlyone, CounterKind::kRaw,
                               CounterKind::kRawChecked};
  std::vector<double> rate[3];
  uint64_t shown_count[3] = {expected, expected, expected};
  bool exact = true;
  for (int round = 0; round < 3; ++round) {
    for (int k = 0; k < 3; ++k) {
      const int kind = (round + k) % 3;
      auto [sections_per_second, count] = CounterRound(
          cfg, kind == 0 ? ours_path : raw_path, kinds[kind]);
      rate[kind].push_back(sections_per_second);
      if (count != expected) exact = false;
      // Keep a wrong count visible rather than a later right one.
      if (shown_count[kind] == expected) shown_count[kind] = count;
    }
  }
  const double ours = Median(rate[0]), raw = Median(rate[1]),
               checked = Median(rate[2]);
  rows.push_back(
      RatioRow(absl::StrFormat("%d procs x %d sections/s (median of 3)",
                               cfg.workers, cfg.sections),
               absl::StrFormat("%.0f", ours), absl::StrFormat("%.0f", raw),
               ours, raw, 0));
  rows.push_back(RatioRow(
      absl::StrFormat("%d procs x %d sections/s, raw + lstat (floor)",
                      cfg.workers, cfg.sections),
      absl::StrFormat("%.0f", checked), absl::StrFormat("%.0f", raw), checked,
      raw, 0));
  const uint64_t raw_count =
      shown_count[1] != expected ? shown_count[1] : shown_count[2];
  rows.push_back({"final counter (every round)", absl::StrCat(shown_count[0]),
                  absl::StrCat(raw_count), "-", absl::StrCat("== ", expected),
                  exact ? "PASS" : "FAIL"});
  return exact;
}

// ---------------------------------------------------------------------------

// Takes --handoff_cpus and --only; false for any other argument.
bool TakeOwnFlag(absl::string_view arg, Config& cfg) {
  if (absl::string_view cpus = arg;
      absl::ConsumePrefix(&cpus, "--handoff_cpus=")) {
    cfg.handoff_cpus.clear();
    for (absl::string_view placement : absl::StrSplit(cpus, ',')) {
      if (placement != "free" && placement != "same" && placement != "split") {
        Die(absl::StrCat("bad value in ", arg));
      }
      cfg.handoff_cpus.emplace_back(placement);
    }
    return true;
  }
  if (absl::string_view only = arg; absl::ConsumePrefix(&only, "--only=")) {
    cfg.uncontended = cfg.handoff = cfg.cpu = cfg.counter = false;
    for (absl::string_view part : absl::StrSplit(only, ',')) {
      if (part == "uncontended") {
        cfg.uncontended = true;
      } else if (part == "handoff") {
        cfg.handoff = true;
      } else if (part == "cpu") {
        cfg.cpu = true;
      } else if (part == "counter") {
        cfg.counter = true;
      } else {
        Die(absl::StrCat("unknown part in ", arg));
      }
    }
    return true;
  }
  return false;
}

Config ParseFlags(int argc, char** argv) {
  Config cfg;
  ParseCommandLine(
      argc, argv, cfg.fail_on_miss,
      {
          {"--iterations=", &cfg.iterations},
          {"--rounds=", &cfg.rounds},
          {"--handoffs=", &cfg.handoffs},
          {"--hold_ms=", &cfg.hold_ms},
          {"--workers=", &cfg.workers},
          {"--sections=", &cfg.sections},
      },
      [&cfg](absl::string_view arg) { return TakeOwnFlag(arg, cfg); });
  return cfg;
}

}  // namespace
}  // namespace onlyone::bench

int main(int argc, char** argv) {
  using namespace onlyone::bench;  // NOLINT
  const Config cfg = ParseFlags(argc, argv);
  signal(SIGPIPE, SIG_IGN);  // a dead peer shows up as a write error
  absl::PrintF("lock_bench: %s\n", MachineSummary());
  absl::PrintF(
      "  iterations=%d rounds=%d handoffs=%d hold_ms=%d workers=%d "
      "sections=%d handoff_cpus=%s\n",
      cfg.iterations, cfg.rounds, cfg.handoffs, cfg.hold_ms, cfg.workers,
      cfg.sections, absl::StrJoin(cfg.handoff_cpus, ","));
  absl::PrintF("  load average at start: %s", LoadAverage());
  const int64_t start = NowNs();

  TempDir dir("onlyone_bench");
  std::vector<Row> rows;
  if (cfg.uncontended) BenchUncontended(cfg, dir, rows);
  if (cfg.handoff) {
    for (const std::string& placement : cfg.handoff_cpus) {
      BenchHandoff(cfg, placement, dir, rows);
    }
  }
  if (cfg.cpu) BenchWaiterCpu(cfg, dir, rows);
  const bool exact = !cfg.counter || BenchCounter(cfg, dir, rows);

  absl::PrintF("\n");
  PrintTable("metric", rows);
  for (const std::string& w : Warnings()) absl::PrintF("WARNING: %s\n", w);
  const int missed = CountMisses(rows);
  absl::PrintF("\n%d target(s) missed; counter %s; took %.1f s; load average "
               "at end: %s",
               missed, exact ? "exact" : "WRONG", (NowNs() - start) / 1e9,
               LoadAverage());
  if (!exact) return 1;
  if (missed > 0 && cfg.fail_on_miss) return 1;
  return 0;
}
