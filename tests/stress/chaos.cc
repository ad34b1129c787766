// chaos: contended critical sections across processes, random SIGKILLs of
// holders and waiters, and an overlap detector that does not trust the lock.
//
//   bazel run -c opt //tests/stress:chaos -- --variant=all --seconds=60
//   bazel run -c opt //tests/stress:chaos -- --short          (CI: ~60 s)
//   bazel run -c opt //tests/stress:chaos -- --sections=1000000 --seconds=900
//
// docs/testing.md describes the variants and the figures. In short:
// every process (or thread) that believes it holds the lock marks its slot
// in a shared-memory page as "inside" (exclusive or shared) right after the
// lock is granted and clears it right before releasing; on entry it scans
// every other slot. A conflicting slot that is marked, whose process is
// alive and was not being SIGKILLed by us, is an overlap: the lock let two
// holders in. The page is a memfd mapped MAP_SHARED before anything forks,
// and passed by descriptor to the programs `onlyone run` executes, so the
// detector sees every holder whatever the lock says.
//
// Exit status: 0 when every variant had no overlap, no hang, no unexpected
// error and (fork variant) no child holding a lock; 1 otherwise; 2 on a usage
// error. The run is bounded: --seconds (split between the variants), the
// hang watchdog, and a final SIGKILL of every process it started (it is a
// child subreaper, so even orphaned commands of `onlyone run` come back to
// it). It works in a private temporary directory that it removes, with
// ONLYONE_TEST_ROOT pointing into it, so no real lock directory is used.

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/cancellation.h"
#include "onlyone/scoped_file_lock.h"
#include "onlyone/scoped_semaphore.h"
#include "onlyone/single_instance.h"
#include "onlyone/soft_file_lock.h"

namespace onlyone::chaos {
namespace {

// ---------------------------------------------------------------------------
// Time and randomness.

int64_t NowNs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

void SleepNs(int64_t ns) {
  if (ns <= 0) return;
  struct timespec pause = {static_cast<time_t>(ns / 1000000000),
                           static_cast<long>(ns % 1000000000)};
  while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
  }
}

// xorshift64*: reproducible per (seed, worker, generation), no locks.
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ULL + 1) {}
  uint64_t Next() {
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545f4914f6cdd1dULL;
  }
  // Uniform in [0, bound).
  uint64_t Below(uint64_t bound) { return bound == 0 ? 0 : Next() % bound; }
  double Unit() { return (Next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------
// The shared page: the independent view of who is inside the section.

constexpr uint64_t kModeExclusive = 1;
constexpr uint64_t kModeShared = 2;

// A slot's state in one word, so a reader never sees a pid from one holder
// and a mode from another: bits 0-31 pid, 32-33 mode (0 = outside).
uint64_t Pack(pid_t pid, uint64_t mode) {
  return uint64_t{static_cast<uint32_t>(pid)} | mode << 32;
}
pid_t PidOf(uint64_t word) { return static_cast<pid_t>(word & 0xffffffffu); }
uint64_t ModeOf(uint64_t word) { return (word >> 32) & 3; }

constexpr int kMaxProcesses = 32;
constexpr int kThreadsPerForkWorker = 2;
// Worker slots first (one per process, or per locking thread), then the
// slots that the commands of `onlyone run` claim for themselves.
constexpr int kHelperSlotBase = kMaxProcesses * kThreadsPerForkWorker;
constexpr int kHelperSlots = 64;
constexpr int kSlots = kHelperSlotBase + kHelperSlots;
constexpr int kWaitBuckets = 40;  // log2 of microseconds
constexpr int kRecords = 8;
constexpr int kKillRing = 4096;
// A kill older than this is not looked up: pids are reused (pid_max is often
// 32768, and the onlyone and fork variants start thousands of processes a
// second), but never within this long.
constexpr int64_t kKillMemoryNs = int64_t{10} * 1000000000;

struct Slot {
  std::atomic<uint64_t> word;
};

// A SIGKILL the supervisor sent, recorded before it sent it.
struct Kill {
  std::atomic<pid_t> pid;
  std::atomic<int64_t> time_ns;
};

struct Shared {
  std::atomic<int> stop;
  // Set when the supervisor starts killing everything at the end: from then
  // on a holder may be killed without a record in the kill ring.
  std::atomic<int> ending;
  std::atomic<int64_t> sections;
  std::atomic<int64_t> last_progress_ns;
  std::atomic<int64_t> overlaps;
  std::atomic<int64_t> stale_slots;
  std::atomic<int64_t> errors;
  std::atomic<int64_t> retries;
  std::atomic<int64_t> free_since_ns;
  std::atomic<int64_t> longest_wait_ns;
  std::atomic<int64_t> waits_measured;
  std::atomic<int64_t> wait_histogram[kWaitBuckets];
  std::atomic<int64_t> max_shared_together;
  std::atomic<int64_t> max_permits_together;
  std::atomic<uint64_t> entry_sequence;
  std::atomic<int64_t> forks;
  std::atomic<int64_t> children_holding_lock;
  std::atomic<int> leak_sample_taken;
  char leak_sample[512];
  std::atomic<int> overlap_records;
  char overlap_text[kRecords][200];
  std::atomic<int> error_records;
  char error_text[kRecords][300];
  // The `onlyone` process each onlyone-variant worker is running now.
  std::atomic<pid_t> onlyone_pid[kMaxProcesses];
  Slot slots[kSlots];
  std::atomic<int64_t> kill_count;
  Kill kills[kKillRing];
};

void FetchMax(std::atomic<int64_t>& value, int64_t candidate) {
  int64_t seen = value.load();
  while (seen < candidate && !value.compare_exchange_weak(seen, candidate)) {
  }
}

template <size_t N>
void Record(std::atomic<int>& count, char (&texts)[kRecords][N],
            absl::string_view text) {
  const int index = count.fetch_add(1);
  if (index >= kRecords) return;
  const size_t length = std::min(text.size(), N - 1);
  memcpy(texts[index], text.data(), length);
  texts[index][length] = '\0';
}

void RecordError(Shared& shared, absl::string_view text) {
  shared.errors.fetch_add(1);
  Record(shared.error_records, shared.error_text, text);
}

// Whether `pid` is a live process (not a zombie): read from /proc, because
// a SIGKILLed holder has dropped its locks by the time it is a zombie.
bool ProcessAlive(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char text[512];
  const ssize_t got = read(fd, text, sizeof text - 1);
  close(fd);
  if (got <= 0) return false;
  text[got] = '\0';
  const char* paren = strrchr(text, ')');
  if (paren == nullptr || paren[1] == '\0' || paren[2] == '\0') return false;
  const char state = paren[2];
  return state != 'Z' && state != 'X' && state != 'x';
}

// When the supervisor sent `pid` a SIGKILL (recently); 0 if it did not.
int64_t KilledAt(Shared& shared, pid_t pid) {
  const int64_t now = NowNs();
  for (const Kill& kill : shared.kills) {
    if (kill.pid.load() != pid) continue;
    const int64_t when = kill.time_ns.load();
    if (when != 0 && now - when < kKillMemoryNs) return when;
  }
  return 0;
}

// Records a SIGKILL about to be sent (single writer: the supervisor).
void RecordKill(Shared& shared, pid_t pid, int64_t when) {
  Kill& kill = shared.kills[shared.kill_count.fetch_add(1) % kKillRing];
  kill.pid.store(0);
  kill.time_ns.store(when);
  kill.pid.store(pid);
}

// Waits (bounded) until a process we SIGKILLed is gone; false if it lives on.
bool WaitUntilDead(pid_t pid) {
  const int64_t deadline = NowNs() + 5 * int64_t{1000000000};
  while (ProcessAlive(pid)) {
    if (NowNs() > deadline) return false;
    SleepNs(100000);
  }
  return true;
}

// The view of one process (or thread) that enters the section.
struct Entrant {
  Shared* shared;
  int slot;
  pid_t pid;
  int hold_us;
};

// Marks the slot inside and checks every other slot. `attempt_start_ns` is
// when the entrant began trying for this section, `acquired_ns` when the
// lock was granted.
void Enter(const Entrant& me, uint64_t mode, int64_t attempt_start_ns,
           int64_t acquired_ns) {
  Shared& shared = *me.shared;
  shared.slots[me.slot].word.store(Pack(me.pid, mode));
  int64_t freed_by_kill_ns = 0;
  int co_holders = 0;
  for (int i = 0; i < kSlots; ++i) {
    if (i == me.slot) continue;
    const uint64_t word = shared.slots[i].word.load();
    const uint64_t other_mode = ModeOf(word);
    if (other_mode == 0) continue;
    if (mode == kModeShared && other_mode == kModeShared) {
      ++co_holders;
      continue;
    }
    const pid_t other = PidOf(word);
    if (const int64_t killed_at = KilledAt(shared, other); killed_at != 0) {
      // A holder we killed: its lock goes when it dies, and whether we
      // entered just before or just after cannot be told apart (the blind
      // spot of this detector, one kill delivery long).
      if (!WaitUntilDead(other)) {
        shared.overlaps.fetch_add(1);
        Record(shared.overlap_records, shared.overlap_text,
               absl::StrCat("pid ", me.pid, " slot ", me.slot,
                            " entered while pid ", other,
                            " (being killed) stayed alive in slot ", i));
        continue;
      }
      freed_by_kill_ns = std::max(freed_by_kill_ns, killed_at);
      continue;
    }
    if (shared.ending.load()) continue;
    if (!ProcessAlive(other)) {
      shared.stale_slots.fetch_add(1);
      continue;
    }
    shared.overlaps.fetch_add(1);
    Record(shared.overlap_records, shared.overlap_text,
           absl::StrCat("pid ", me.pid, " (", mode == kModeExclusive ? "x" : "s",
                        ", slot ", me.slot, ") entered while pid ", other, " (",
                        other_mode == kModeExclusive ? "x" : "s", ", slot ", i,
                        ") was inside"));
  }
  if (mode == kModeShared) FetchMax(shared.max_shared_together, co_holders + 1);
  if (co_holders > 0) return;  // the lock was not free, only shareable
  const int64_t freed_ns =
      std::max(freed_by_kill_ns, shared.free_since_ns.load());
  const int64_t wait_ns =
      std::max<int64_t>(0, acquired_ns - std::max(freed_ns, attempt_start_ns));
  FetchMax(shared.longest_wait_ns, wait_ns);
  shared.waits_measured.fetch_add(1);
  int bucket = 0;
  for (int64_t us = wait_ns / 1000; us > 0 && bucket < kWaitBuckets - 1;
       us >>= 1) {
    ++bucket;
  }
  shared.wait_histogram[bucket].fetch_add(1);
}

// Marks the slot inside as one of at most `permits` holders of a semaphore,
// and counts the other holders. One pass over the slots is not a snapshot
// (a holder seen early may have left, and another entered, before the pass
// ends), so the pass is repeated until a second pass reads every marked
// word unchanged; each word carries a sequence number of its entry, so an
// unchanged word is the same entry, and all of them were inside at once,
// between the two passes. More than `permits` - 1 such holders alive is an
// overlap; a holder we are killing counts until it is dead. The wait is
// measured only when the entrant took the last permit, from the latest
// release.
void EnterSemaphore(const Entrant& me, int permits, int64_t attempt_start_ns,
                    int64_t acquired_ns) {
  Shared& shared = *me.shared;
  constexpr uint64_t kSequenceMask = (uint64_t{1} << 30) - 1;
  shared.slots[me.slot].word.store(
      Pack(me.pid, kModeShared) |
      (shared.entry_sequence.fetch_add(1) & kSequenceMask) << 34);
  std::vector<uint64_t> inside;
  bool settled = false;
  for (int pass = 0; pass < 100 && !settled; ++pass) {
    inside.clear();
    std::vector<int> where;
    for (int i = 0; i < kSlots; ++i) {
      if (i == me.slot) continue;
      const uint64_t word = shared.slots[i].word.load();
      if (ModeOf(word) == 0) continue;
      inside.push_back(word);
      where.push_back(i);
    }
    settled = true;
    for (size_t k = 0; k < where.size(); ++k) {
      if (shared.slots[where[k]].word.load() != inside[k]) settled = false;
    }
  }
  if (!settled) return;  // too busy to tell; the next entrant checks again
  int64_t freed_by_kill_ns = 0;
  int others = 0;
  std::string seen;
  for (const uint64_t word : inside) {
    const pid_t other = PidOf(word);
    if (const int64_t killed_at = KilledAt(shared, other); killed_at != 0) {
      if (WaitUntilDead(other)) {
        freed_by_kill_ns = std::max(freed_by_kill_ns, killed_at);
        continue;
      }
    } else if (shared.ending.load()) {
      continue;
    } else if (!ProcessAlive(other)) {
      shared.stale_slots.fetch_add(1);
      continue;
    }
    ++others;
    absl::StrAppend(&seen, seen.empty() ? "" : ",", other);
  }
  FetchMax(shared.max_permits_together, others + 1);
  if (others + 1 > permits) {
    shared.overlaps.fetch_add(1);
    Record(shared.overlap_records, shared.overlap_text,
           absl::StrCat("pid ", me.pid, " (slot ", me.slot,
                        ") entered while ", others, " holders (pids ", seen,
                        ") had the ", permits, " permits"));
  }
  if (others + 1 != permits) return;
  const int64_t freed_ns =
      std::max(freed_by_kill_ns, shared.free_since_ns.load());
  const int64_t wait_ns =
      std::max<int64_t>(0, acquired_ns - std::max(freed_ns, attempt_start_ns));
  FetchMax(shared.longest_wait_ns, wait_ns);
  shared.waits_measured.fetch_add(1);
  int bucket = 0;
  for (int64_t us = wait_ns / 1000; us > 0 && bucket < kWaitBuckets - 1;
       us >>= 1) {
    ++bucket;
  }
  shared.wait_histogram[bucket].fetch_add(1);
}

// Holds the section for a random time up to hold_us.
void Hold(const Entrant& me, Random& random) {
  SleepNs(static_cast<int64_t>(random.Below(me.hold_us + 1)) * 1000);
}

// Marks the slot outside; called right before the lock is released.
void Leave(const Entrant& me) {
  Shared& shared = *me.shared;
  FetchMax(shared.free_since_ns, NowNs());
  shared.slots[me.slot].word.store(Pack(me.pid, 0));
  shared.sections.fetch_add(1);
  shared.last_progress_ns.store(NowNs());
}

// Clears the slot of a process that died: a holder we killed freed the lock
// at its kill (at the latest), which is where the next wait starts.
void RetireSlot(Shared& shared, int index, uint64_t word) {
  if (ModeOf(word) != 0) {
    if (const int64_t killed_at = KilledAt(shared, PidOf(word))) {
      FetchMax(shared.free_since_ns, killed_at);
    }
  }
  shared.slots[index].word.compare_exchange_strong(word, 0);
}

// ---------------------------------------------------------------------------
// Variants.

enum class Variant {
  kBlocking,
  kTimed,
  kTryLoop,
  kCancellable,
  kSharedMix,
  kSingleInstance,
  kOnlyoneRun,
  kForkDuringAcquire,
  kSemaphore,
  kSoftLock,
  // The detector's own checks, not in "all": entrants take no lock (no
  // permit) at all, so the run must report overlaps and fail.
  kNoLock,
  kSemaphoreNoLock,
};

constexpr Variant kAllVariants[] = {
    Variant::kBlocking,       Variant::kTimed,      Variant::kTryLoop,
    Variant::kCancellable,    Variant::kSharedMix,  Variant::kSingleInstance,
    Variant::kOnlyoneRun,     Variant::kForkDuringAcquire,
    Variant::kSemaphore,      Variant::kSoftLock,
};

const char* VariantName(Variant variant) {
  switch (variant) {
    case Variant::kBlocking: return "blocking";
    case Variant::kTimed: return "timed";
    case Variant::kTryLoop: return "try-loop";
    case Variant::kCancellable: return "cancellable";
    case Variant::kSharedMix: return "shared-mix";
    case Variant::kSingleInstance: return "single-instance";
    case Variant::kOnlyoneRun: return "onlyone-run";
    case Variant::kForkDuringAcquire: return "fork-during-acquire";
    case Variant::kSemaphore: return "semaphore";
    case Variant::kSoftLock: return "soft-lock";
    case Variant::kNoLock: return "no-lock";
    case Variant::kSemaphoreNoLock: return "semaphore-no-lock";
  }
  return "?";
}

struct Config {
  std::vector<Variant> variants;
  int processes = 4;
  int64_t sections = 0;  // 0: no bound but time
  double seconds = 60;
  double kill_rate = 20;  // SIGKILLs per second
  uint64_t seed = 0;
  int hold_us = 200;
  double hang_seconds = 10;
  std::string onlyone;
};

// What a worker needs; set before the workers fork.
struct Context {
  Config config;
  Shared* shared = nullptr;
  int shared_fd = -1;
  std::string self_exe;
  std::string lock_path;
  std::string instance_directory;
};

bool Expected(Variant variant, const absl::Status& status) {
  switch (variant) {
    case Variant::kTimed:
    case Variant::kSingleInstance:
    case Variant::kSoftLock:
      return absl::IsDeadlineExceeded(status);
    case Variant::kTryLoop:
      return absl::IsUnavailable(status);
    case Variant::kCancellable:
      return absl::IsCancelled(status);
    case Variant::kForkDuringAcquire:
      return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
    default:
      return false;
  }
}

// Cancels whatever token the worker thread waits with, at random moments.
class RandomCanceller {
 public:
  explicit RandomCanceller(uint64_t seed, const std::atomic<int>& stop)
      : random_(seed), stop_(stop), thread_([this] { Run(); }) {}
  ~RandomCanceller() { thread_.join(); }

  CancellationToken NewToken() {
    std::lock_guard<std::mutex> lock(mutex_);
    current_ = CancellationToken();
    return *current_;
  }
  void Done() {
    std::lock_guard<std::mutex> lock(mutex_);
    current_.reset();
  }

 private:
  void Run() {
    while (!stop_.load()) {
      SleepNs(static_cast<int64_t>(random_.Below(3000)) * 1000);
      std::lock_guard<std::mutex> lock(mutex_);
      if (current_.has_value()) current_->Cancel();
    }
  }

  Random random_;
  const std::atomic<int>& stop_;
  std::mutex mutex_;
  std::optional<CancellationToken> current_;  // guarded by mutex_
  std::thread thread_;
};

// One acquisition as the variant does it, retrying expected refusals.
absl::StatusOr<ScopedFileLock> AcquireForVariant(Variant variant,
                                                 const Context& context,
                                                 LockMode mode, Random& random,
                                                 RandomCanceller* canceller) {
  Shared& shared = *context.shared;
  for (;;) {
    LockOptions options;
    options.mode = mode;
    int kind = static_cast<int>(variant);
    if (variant == Variant::kForkDuringAcquire) {
      kind = static_cast<int>(random.Below(3) == 0   ? Variant::kBlocking
                              : random.Below(2) == 0 ? Variant::kTryLoop
                                                     : Variant::kTimed);
    }
    switch (static_cast<Variant>(kind)) {
      case Variant::kTimed:
        options.timeout = absl::Microseconds(500 + random.Below(20000));
        break;
      case Variant::kTryLoop:
        options.timeout = absl::ZeroDuration();
        break;
      case Variant::kCancellable:
        options.cancellation = canceller->NewToken();
        break;
      default:
        break;
    }
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(context.lock_path, options);
    if (canceller != nullptr) canceller->Done();
    if (lock.ok() || !Expected(variant, lock.status())) return lock;
    shared.retries.fetch_add(1);
    if (shared.stop.load()) return lock;
    if (static_cast<Variant>(kind) == Variant::kTryLoop) {
      SleepNs(static_cast<int64_t>(random.Below(200)) * 1000);
    }
  }
}

// Processes of the ScopedFileLock variants: section after section until
// told to stop.
int RunLockWorker(Variant variant, const Context& context, int worker,
                  uint64_t seed) {
  Shared& shared = *context.shared;
  Random random(seed);
  std::optional<RandomCanceller> canceller;
  if (variant == Variant::kCancellable) {
    canceller.emplace(random.Next(), shared.stop);
  }
  const Entrant me{&shared, worker, getpid(), context.config.hold_us};
  while (!shared.stop.load()) {
    const bool exclusive =
        variant != Variant::kSharedMix || random.Below(3) == 0;
    const LockMode mode = exclusive ? LockMode::kExclusive : LockMode::kShared;
    const int64_t start = NowNs();
    if (variant == Variant::kNoLock) {
      Enter(me, kModeExclusive, start, NowNs());
      Hold(me, random);
      Leave(me);
      continue;
    }
    absl::StatusOr<ScopedFileLock> lock = AcquireForVariant(
        variant, context, mode, random,
        canceller.has_value() ? &*canceller : nullptr);
    if (!lock.ok()) {
      if (shared.stop.load()) break;
      RecordError(shared, lock.status().ToString());
      SleepNs(1000000);
      continue;
    }
    Enter(me, exclusive ? kModeExclusive : kModeShared, start, NowNs());
    Hold(me, random);
    Leave(me);
    if (absl::Status released = lock->Release(); !released.ok()) {
      RecordError(shared, released.ToString());
    }
  }
  return 0;
}

// The semaphore variant's permits: half the workers, so that about half of
// them wait at any time.
int SemaphorePermits(const Config& config) {
  return std::max(1, config.processes / 2);
}

// Processes of the semaphore variant: section after section, each permit
// taken blocking, timed (0.5-20 ms, retried), by tries (retried after a
// pause of up to 200 us) or cancellable (cancelled at random, retried).
// Without `take_permits` (the detector's check) it enters without any.
int RunSemaphoreWorker(const Context& context, int worker, uint64_t seed,
                       bool take_permits) {
  Shared& shared = *context.shared;
  Random random(seed);
  RandomCanceller canceller(random.Next(), shared.stop);
  const int permits = SemaphorePermits(context.config);
  const Entrant me{&shared, worker, getpid(), context.config.hold_us};
  while (!shared.stop.load()) {
    const int64_t start = NowNs();
    if (!take_permits) {
      EnterSemaphore(me, permits, start, NowNs());
      Hold(me, random);
      Leave(me);
      continue;
    }
    absl::StatusOr<ScopedSemaphore> permit;
    for (;;) {
      SemaphoreOptions options;
      const uint64_t kind = random.Below(4);
      if (kind == 1) options.timeout = absl::Microseconds(500 + random.Below(20000));
      if (kind == 2) options.timeout = absl::ZeroDuration();
      if (kind == 3) options.cancellation = canceller.NewToken();
      permit = ScopedSemaphore::Acquire(context.lock_path, permits, options);
      canceller.Done();
      const bool expected =
          (kind == 1 && absl::IsDeadlineExceeded(permit.status())) ||
          (kind == 2 && absl::IsUnavailable(permit.status())) ||
          (kind == 3 && absl::IsCancelled(permit.status()));
      if (!expected || shared.stop.load()) break;
      shared.retries.fetch_add(1);
      if (kind == 2) SleepNs(static_cast<int64_t>(random.Below(200)) * 1000);
    }
    if (!permit.ok()) {
      if (shared.stop.load()) break;
      RecordError(shared, permit.status().ToString());
      SleepNs(1000000);
      continue;
    }
    EnterSemaphore(me, permits, start, NowNs());
    Hold(me, random);
    Leave(me);
    if (absl::Status released = permit->Release(); !released.ok()) {
      RecordError(shared, released.ToString());
    }
  }
  return 0;
}

int RunSingleInstanceWorker(const Context& context, int worker,
                            uint64_t seed) {
  Shared& shared = *context.shared;
  Random random(seed);
  const Entrant me{&shared, worker, getpid(), context.config.hold_us};
  while (!shared.stop.load()) {
    InstanceOptions options;
    options.directory = context.instance_directory;
    options.on_conflict = ConflictPolicy::kWait;
    if (random.Below(2) == 0) {
      options.wait_timeout = absl::Microseconds(1000 + random.Below(30000));
    }
    const int64_t start = NowNs();
    absl::StatusOr<SingleInstance> instance;
    for (;;) {
      instance = SingleInstance::Acquire("chaos", options);
      if (instance.ok() || !absl::IsDeadlineExceeded(instance.status()) ||
          shared.stop.load()) {
        break;
      }
      shared.retries.fetch_add(1);
    }
    if (!instance.ok()) {
      if (shared.stop.load()) break;
      RecordError(shared, instance.status().ToString());
      SleepNs(1000000);
      continue;
    }
    Enter(me, kModeExclusive, start, NowNs());
    Hold(me, random);
    Leave(me);
    if (absl::Status released = instance->Release(); !released.ok()) {
      RecordError(shared, released.ToString());
    }
  }
  return 0;
}

// SoftFileLock (no kernel lock) at its own path beside the kernel lock's:
// a killed holder's file stays until the next acquirer sees its pid gone
// and breaks it; waits are blocking or timed at random.
int RunSoftLockWorker(const Context& context, int worker, uint64_t seed) {
  Shared& shared = *context.shared;
  Random random(seed);
  const Entrant me{&shared, worker, getpid(), context.config.hold_us};
  const std::string path = context.lock_path + ".soft";
  while (!shared.stop.load()) {
    SoftLockOptions options;
    if (random.Below(2) == 0) {
      options.timeout = absl::Microseconds(1000 + random.Below(30000));
    }
    const int64_t start = NowNs();
    absl::StatusOr<SoftFileLock> lock;
    for (;;) {
      lock = SoftFileLock::Acquire(path, options);
      if (lock.ok() || !Expected(Variant::kSoftLock, lock.status()) ||
          shared.stop.load()) {
        break;
      }
      shared.retries.fetch_add(1);
    }
    if (!lock.ok()) {
      if (shared.stop.load()) break;
      RecordError(shared, lock.status().ToString());
      SleepNs(1000000);
      continue;
    }
    Enter(me, kModeExclusive, start, NowNs());
    Hold(me, random);
    Leave(me);
    if (absl::Status released = lock->Release(); !released.ok()) {
      RecordError(shared, released.ToString());
    }
  }
  return 0;
}

// In a child forked by a multi-threaded worker: how many of its descriptors
// hold a flock(2) lock ("lock:" lines in /proc/self/fdinfo/N list the locks
// held through that very open file description). Raw system calls only; the
// first finding is copied into the shared page.
int CountLockedDescriptors(Shared& shared) {
  const int directory = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory < 0) return 0;
  int found = 0;
  char entries[2048];
  for (;;) {
    const long got = syscall(SYS_getdents64, directory, entries, sizeof entries);
    if (got <= 0) break;
    for (long offset = 0; offset < got;) {
      struct Entry {
        uint64_t inode;
        int64_t next;
        unsigned short length;
        unsigned char type;
        char name[1];
      };
      const Entry* entry = reinterpret_cast<const Entry*>(entries + offset);
      offset += entry->length;
      if (entry->name[0] < '0' || entry->name[0] > '9') continue;
      char path[64] = "/proc/self/fdinfo/";
      size_t at = strlen(path);
      for (const char* c = entry->name; *c != '\0' && at < sizeof path - 1; ++c) {
        path[at++] = *c;
      }
      path[at] = '\0';
      const int info = open(path, O_RDONLY | O_CLOEXEC);
      if (info < 0) continue;
      char text[1024];
      const ssize_t length = read(info, text, sizeof text - 1);
      close(info);
      if (length <= 0) continue;
      text[length] = '\0';
      if (strstr(text, "lock:") == nullptr) continue;
      ++found;
      int expected = 0;
      if (shared.leak_sample_taken.compare_exchange_strong(expected, 1)) {
        const size_t copied =
            std::min<size_t>(length, sizeof shared.leak_sample - 1);
        memcpy(shared.leak_sample, text, copied);
        shared.leak_sample[copied] = '\0';
      }
    }
  }
  close(directory);
  return found;
}

// Fork torture: two threads lock and unlock as fast as the variant lets
// them while a third forks children that report any locked descriptor they
// inherited. A child must never hold its parent's lock (see the fork()
// rules in lib/scoped_file_lock.h), including one forked in the middle of
// an Acquire() or a Release().
int RunForkWorker(const Context& context, int worker, uint64_t seed) {
  Shared& shared = *context.shared;
  std::vector<std::thread> lockers;
  for (int t = 0; t < kThreadsPerForkWorker; ++t) {
    lockers.emplace_back([&, t] {
      Random random(seed * 31 + t);
      const Entrant me{&shared, worker * kThreadsPerForkWorker + t, getpid(),
                       context.config.hold_us};
      while (!shared.stop.load()) {
        const int64_t start = NowNs();
        absl::StatusOr<ScopedFileLock> lock =
            AcquireForVariant(Variant::kForkDuringAcquire, context,
                              LockMode::kExclusive, random, nullptr);
        if (!lock.ok()) {
          if (shared.stop.load()) break;
          RecordError(shared, lock.status().ToString());
          SleepNs(1000000);
          continue;
        }
        Enter(me, kModeExclusive, start, NowNs());
        Hold(me, random);
        Leave(me);
        if (absl::Status released = lock->Release(); !released.ok()) {
          RecordError(shared, released.ToString());
        }
      }
    });
  }
  while (!shared.stop.load()) {
    const pid_t child = fork();
    if (child < 0) {
      RecordError(shared, absl::StrCat("fork: ", strerror(errno)));
      SleepNs(1000000);
      continue;
    }
    if (child == 0) {
      // Once at once, and again after a moment: a descriptor that was only
      // opened when we forked gets locked later by the parent's wait.
      int found = CountLockedDescriptors(shared);
      SleepNs(1000000);
      found += CountLockedDescriptors(shared);
      _exit(found > 0 ? 1 : 0);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    shared.forks.fetch_add(1);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1) {
      shared.children_holding_lock.fetch_add(1);
    }
  }
  for (std::thread& locker : lockers) locker.join();
  return 0;
}

// Runs `onlyone run --lock PATH ... -- chaos --section-helper` again and
// again; the helper enters the section as the command.
int RunOnlyoneWorker(const Context& context, int worker, uint64_t seed) {
  Shared& shared = *context.shared;
  Random random(seed);
  while (!shared.stop.load()) {
    const int64_t start = NowNs();
    std::vector<std::string> argv = {context.config.onlyone, "run", "--lock",
                                     context.lock_path, "--quiet"};
    if (random.Below(2) == 0) {
      argv.push_back("--on-conflict");
      argv.push_back("wait");
    } else {
      argv.push_back("--wait");
      argv.push_back(absl::StrCat(5 + random.Below(50), "ms"));
    }
    argv.insert(argv.end(),
                {"--", context.self_exe, "--section-helper",
                 absl::StrCat("--shared_fd=", context.shared_fd),
                 absl::StrCat("--start_ns=", start),
                 absl::StrCat("--hold_us=", context.config.hold_us),
                 absl::StrCat("--seed=", random.Next())});
    std::vector<char*> args;
    for (std::string& arg : argv) args.push_back(arg.data());
    args.push_back(nullptr);
    const pid_t pid = fork();
    if (pid < 0) {
      RecordError(shared, absl::StrCat("fork: ", strerror(errno)));
      SleepNs(1000000);
      continue;
    }
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execv(args[0], args.data());
      _exit(127);
    }
    shared.onlyone_pid[worker].store(pid);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    shared.onlyone_pid[worker].store(0);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) continue;  // ours
    if (!WIFEXITED(status)) {
      RecordError(shared, absl::StrCat("onlyone ended by signal ",
                                       WTERMSIG(status)));
      continue;
    }
    const int code = WEXITSTATUS(status);
    // 0: the helper's section; 75: --wait ran out; 137: we killed the helper.
    if (code == 75) {
      shared.retries.fetch_add(1);
    } else if (code != 0 && code != 128 + SIGKILL) {
      RecordError(shared, absl::StrCat("onlyone run exited ", code));
    }
  }
  return 0;
}

// `chaos --section-helper`: the COMMAND of `onlyone run`. It holds the lock
// through the descriptor onlyone passed down, claims a helper slot of the
// shared page and runs one section.
int SectionHelperMain(int shared_fd, int64_t start_ns, int hold_us,
                      uint64_t seed) {
  void* page = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE,
                    MAP_SHARED, shared_fd, 0);
  if (page == MAP_FAILED) {
    perror("chaos --section-helper: mmap");
    return 3;
  }
  Shared& shared = *static_cast<Shared*>(page);
  const int64_t acquired = NowNs();
  const pid_t self = getpid();
  int slot = -1;
  for (int i = kHelperSlotBase; i < kSlots && slot < 0; ++i) {
    uint64_t word = shared.slots[i].word.load();
    if (word != 0 && ProcessAlive(PidOf(word))) continue;
    if (word != 0) RetireSlot(shared, i, word);
    uint64_t free = 0;
    if (shared.slots[i].word.compare_exchange_strong(free, Pack(self, 0))) {
      slot = i;
    }
  }
  if (slot < 0) {
    RecordError(shared, "section helper: no free helper slot");
    return 4;
  }
  Random random(seed);
  const Entrant me{&shared, slot, self, hold_us};
  Enter(me, kModeExclusive, start_ns, acquired);
  Hold(me, random);
  Leave(me);
  shared.slots[slot].word.store(0);
  return 0;
}

// ---------------------------------------------------------------------------
// The supervisor: workers, kills, watchdog, and the end of every process.

struct Result {
  Variant variant;
  int64_t sections = 0;
  int64_t holder_kills = 0;
  int64_t waiter_kills = 0;
  int64_t onlyone_kills = 0;
  int64_t overlaps = 0;
  int64_t hangs = 0;
  int64_t errors = 0;
  int64_t retries = 0;
  int64_t stale_slots = 0;
  int64_t longest_wait_ns = 0;
  int64_t p99_wait_bound_us = 0;
  int64_t waits_measured = 0;
  int64_t max_shared_together = 0;
  int64_t max_permits_together = 0;
  int permits = 0;  // the semaphore variant's
  int64_t forks = 0;
  int64_t children_holding_lock = 0;
  double seconds = 0;
  std::vector<std::string> notes;

  bool failed() const {
    return overlaps > 0 || hangs > 0 || errors > 0 ||
           children_holding_lock > 0;
  }
};

std::atomic<int> interrupted{0};

std::string ReadFile(const std::string& path) {
  std::string text;
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return text;
  char buffer[4096];
  ssize_t got;
  while ((got = read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, got);
  close(fd);
  return text;
}

pid_t ParentOf(pid_t pid) {
  const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return -1;
  std::vector<absl::string_view> fields =
      absl::StrSplit(absl::string_view(stat).substr(paren + 2), ' ');
  int parent = -1;
  if (fields.size() < 2 || !absl::SimpleAtoi(fields[1], &parent)) return -1;
  return parent;
}

// Every process whose parent is this one (with the subreaper, orphans of
// our descendants come here too).
std::vector<pid_t> Children() {
  std::vector<pid_t> children;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return children;
  const pid_t self = getpid();
  while (struct dirent* entry = readdir(proc)) {
    int pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid)) continue;
    if (ParentOf(pid) == self) children.push_back(pid);
  }
  closedir(proc);
  return children;
}

// SIGKILLs and reaps every descendant until none is left (bounded).
void KillDescendants() {
  const int64_t deadline = NowNs() + 20 * int64_t{1000000000};
  for (;;) {
    for (pid_t child : Children()) kill(child, SIGKILL);
    int status;
    const pid_t reaped = waitpid(-1, &status, WNOHANG);
    if (reaped < 0 && errno == ECHILD) return;
    if (reaped == 0) SleepNs(1000000);
    if (NowNs() > deadline) {
      fprintf(stderr, "chaos: could not reap every descendant\n");
      return;
    }
  }
}

class Supervisor {
 public:
  Supervisor(Context& context, Variant variant, int64_t sections_target,
             double seconds, uint64_t seed)
      : context_(context),
        shared_(*context.shared),
        variant_(variant),
        sections_target_(sections_target),
        seconds_(seconds),
        random_(seed),
        seed_(seed),
        workers_(context.config.processes, -1) {}

  Result Run();

 private:
  void Spawn(int worker);
  int WorkerBody(int worker, uint64_t seed);
  void ReapAll();
  bool KillOne();
  void SweepHelperSlots();
  void Diagnose(absl::string_view why);
  bool AnyWorkerAlive() const;

  Context& context_;
  Shared& shared_;
  const Variant variant_;
  const int64_t sections_target_;
  const double seconds_;
  Random random_;
  const uint64_t seed_;
  std::vector<pid_t> workers_;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::optional<bool> kill_command_next_;
  Result result_;
};

int Supervisor::WorkerBody(int worker, uint64_t seed) {
  switch (variant_) {
    case Variant::kSingleInstance:
      return RunSingleInstanceWorker(context_, worker, seed);
    case Variant::kOnlyoneRun:
      return RunOnlyoneWorker(context_, worker, seed);
    case Variant::kForkDuringAcquire:
      return RunForkWorker(context_, worker, seed);
    case Variant::kSoftLock:
      return RunSoftLockWorker(context_, worker, seed);
    case Variant::kSemaphore:
    case Variant::kSemaphoreNoLock:
      return RunSemaphoreWorker(context_, worker, seed,
                                variant_ == Variant::kSemaphore);
    default:
      return RunLockWorker(variant_, context_, worker, seed);
  }
}

void Supervisor::Spawn(int worker) {
  const uint64_t seed = seed_ ^ (uint64_t(worker) << 40) ^ ++generation_;
  fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    RecordError(shared_, absl::StrCat("fork: ", strerror(errno)));
    return;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    _exit(WorkerBody(worker, seed));
  }
  workers_[worker] = pid;
}

// Commands killed inside the section leave their slot marked; clear it
// while their pid cannot have been reused yet.
void Supervisor::SweepHelperSlots() {
  for (int i = kHelperSlotBase; i < kSlots; ++i) {
    const uint64_t word = shared_.slots[i].word.load();
    if (word != 0 && !ProcessAlive(PidOf(word))) RetireSlot(shared_, i, word);
  }
}

void Supervisor::ReapAll() {
  for (;;) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    auto it = std::find(workers_.begin(), workers_.end(), pid);
    if (it == workers_.end()) continue;  // an orphan that came to us
    const int worker = static_cast<int>(it - workers_.begin());
    *it = -1;
    const bool killed_by_us =
        WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (!killed_by_us && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      RecordError(shared_, absl::StrCat("worker ", pid, " ended with status ",
                                        status));
    }
    if (!killed_by_us && !stopping_) {
      RecordError(shared_, absl::StrCat("worker ", pid, " exited on its own"));
    }
    for (int i = 0; i < kHelperSlotBase; ++i) {
      const uint64_t word = shared_.slots[i].word.load();
      if (word != 0 && PidOf(word) == pid) RetireSlot(shared_, i, word);
    }
    if (!stopping_) Spawn(worker);
  }
}

// Sends one SIGKILL; false when the victim chosen at random (in the
// onlyone variant: a command, or an onlyone) does not exist right now.
bool Supervisor::KillOne() {
  const int64_t now = NowNs();
  if (variant_ == Variant::kOnlyoneRun) {
    std::vector<pid_t> onlyones, commands;
    for (int w = 0; w < context_.config.processes; ++w) {
      if (pid_t pid = shared_.onlyone_pid[w].load(); pid > 0) {
        onlyones.push_back(pid);
      }
    }
    for (int i = kHelperSlotBase; i < kSlots; ++i) {
      const uint64_t word = shared_.slots[i].word.load();
      if (word != 0) commands.push_back(PidOf(word));
    }
    // The choice stands until such a victim exists: commands live a
    // fraction of each cycle, and would otherwise be chosen rarely.
    if (!kill_command_next_.has_value()) {
      kill_command_next_ = random_.Below(2) == 0;
    }
    const bool at_command = *kill_command_next_;
    std::vector<pid_t>& victims = at_command ? commands : onlyones;
    if (victims.empty()) return false;
    kill_command_next_.reset();
    const pid_t victim = victims[random_.Below(victims.size())];
    RecordKill(shared_, victim, now);
    if (kill(victim, SIGKILL) == 0) {
      ++(at_command ? result_.holder_kills : result_.onlyone_kills);
    }
    return true;
  }
  // Half of the kills go to a holder when there is one, the rest to any
  // worker (mostly waiters).
  std::vector<pid_t> holders, any;
  for (pid_t pid : workers_) {
    if (pid > 0) any.push_back(pid);
  }
  for (int i = 0; i < kHelperSlotBase; ++i) {
    const uint64_t word = shared_.slots[i].word.load();
    if (ModeOf(word) != 0) holders.push_back(PidOf(word));
  }
  if (any.empty()) return false;
  const bool at_holder = !holders.empty() && random_.Below(2) == 0;
  const pid_t victim = at_holder ? holders[random_.Below(holders.size())]
                                 : any[random_.Below(any.size())];
  bool inside = false;
  for (int i = 0; i < kHelperSlotBase; ++i) {
    const uint64_t word = shared_.slots[i].word.load();
    if (PidOf(word) == victim && ModeOf(word) != 0) inside = true;
  }
  RecordKill(shared_, victim, now);
  if (kill(victim, SIGKILL) == 0) {
    ++(inside ? result_.holder_kills : result_.waiter_kills);
  }
  return true;
}

bool Supervisor::AnyWorkerAlive() const {
  for (pid_t pid : workers_) {
    if (pid > 0) return true;
  }
  return false;
}

// Prints what the processes are doing when something went wrong.
void Supervisor::Diagnose(absl::string_view why) {
  fprintf(stderr, "chaos: %s: %s\n", VariantName(variant_),
          std::string(why).c_str());
  for (int i = 0; i < kSlots; ++i) {
    const uint64_t word = shared_.slots[i].word.load();
    if (word == 0) continue;
    fprintf(stderr, "  slot %d: pid %d mode %d%s\n", i, PidOf(word),
            static_cast<int>(ModeOf(word)),
            KilledAt(shared_, PidOf(word)) != 0 ? " (killed)" : "");
  }
  for (pid_t pid : workers_) {
    if (pid <= 0) continue;
    const std::string stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
    fprintf(stderr, "  worker %d: %s wchan %s\n", pid,
            stat.substr(0, stat.find(' ', stat.rfind(')') + 2)).c_str(),
            ReadFile(absl::StrCat("/proc/", pid, "/wchan")).c_str());
  }
  std::vector<std::string> lock_files = {context_.lock_path};
  if (variant_ == Variant::kSemaphore) {
    lock_files.push_back(absl::StrCat(context_.lock_path, ".gate.lock"));
    for (int i = 0; i < SemaphorePermits(context_.config); ++i) {
      lock_files.push_back(ScopedSemaphore::SlotPath(context_.lock_path, i));
    }
  }
  for (const std::string& file : lock_files) {
    struct stat lock_file;
    if (stat(file.c_str(), &lock_file) != 0) continue;
    const std::string inode = absl::StrCat(":", lock_file.st_ino, " ");
    for (absl::string_view line :
         absl::StrSplit(ReadFile("/proc/locks"), '\n')) {
      if (absl::StrContains(line, inode)) {
        fprintf(stderr, "  /proc/locks: %s\n", std::string(line).c_str());
      }
    }
  }
}

Result Supervisor::Run() {
  result_.variant = variant_;
  memset(static_cast<void*>(&shared_), 0, sizeof shared_);
  const int64_t start = NowNs();
  shared_.last_progress_ns.store(start);
  shared_.free_since_ns.store(start);
  const int64_t deadline = start + static_cast<int64_t>(seconds_ * 1e9);
  const int64_t hang_ns =
      static_cast<int64_t>(context_.config.hang_seconds * 1e9);
  for (int w = 0; w < context_.config.processes; ++w) Spawn(w);
  const double kill_rate = context_.config.kill_rate;
  auto next_kill_after = [&] {
    return static_cast<int64_t>(-std::log(1 - random_.Unit()) / kill_rate *
                                1e9);
  };
  int64_t next_kill = kill_rate > 0 ? start + next_kill_after() : INT64_MAX;
  int64_t next_report = start + 30 * int64_t{1000000000};
  for (;;) {
    ReapAll();
    SweepHelperSlots();
    const int64_t now = NowNs();
    if (interrupted.load()) {
      result_.notes.push_back("interrupted");
      break;
    }
    if (sections_target_ > 0 && shared_.sections.load() >= sections_target_) {
      break;
    }
    if (now >= deadline) break;
    if (AnyWorkerAlive() && now - shared_.last_progress_ns.load() > hang_ns) {
      ++result_.hangs;
      Diagnose(absl::StrFormat("no section completed for %.0f s",
                               context_.config.hang_seconds));
      break;
    }
    if (now >= next_kill && KillOne()) next_kill = now + next_kill_after();
    if (now >= next_report) {
      fprintf(stderr, "chaos: %s: %.0f s, %lld sections\n",
              VariantName(variant_), (now - start) / 1e9,
              static_cast<long long>(shared_.sections.load()));
      next_report += 30 * int64_t{1000000000};
    }
    SleepNs(1000000);
  }
  // Stop: workers finish their section and exit; waiters get the lock as
  // the others leave. Those that do not within the bound count as a hang.
  stopping_ = true;
  shared_.stop.store(1);
  const int64_t stop_deadline = NowNs() + static_cast<int64_t>(
      std::max(5.0, context_.config.hang_seconds) * 1e9);
  while (AnyWorkerAlive() && NowNs() < stop_deadline) {
    ReapAll();
    SleepNs(1000000);
  }
  if (AnyWorkerAlive() && !interrupted.load()) {
    ++result_.hangs;
    Diagnose("workers did not stop");
  }
  shared_.ending.store(1);
  KillDescendants();
  std::fill(workers_.begin(), workers_.end(), -1);

  result_.seconds = (NowNs() - start) / 1e9;
  result_.sections = shared_.sections.load();
  result_.overlaps = shared_.overlaps.load();
  result_.errors = shared_.errors.load();
  result_.retries = shared_.retries.load();
  result_.stale_slots = shared_.stale_slots.load();
  result_.longest_wait_ns = shared_.longest_wait_ns.load();
  result_.waits_measured = shared_.waits_measured.load();
  result_.max_shared_together = shared_.max_shared_together.load();
  result_.max_permits_together = shared_.max_permits_together.load();
  result_.permits = SemaphorePermits(context_.config);
  result_.forks = shared_.forks.load();
  result_.children_holding_lock = shared_.children_holding_lock.load();
  int64_t counted = 0;
  for (int b = 0; b < kWaitBuckets; ++b) {
    counted += shared_.wait_histogram[b].load();
    if (counted * 100 >= result_.waits_measured * 99) {
      result_.p99_wait_bound_us = int64_t{1} << b;
      break;
    }
  }
  for (int i = 0; i < std::min(kRecords, shared_.overlap_records.load()); ++i) {
    result_.notes.push_back(absl::StrCat("overlap: ", shared_.overlap_text[i]));
  }
  for (int i = 0; i < std::min(kRecords, shared_.error_records.load()); ++i) {
    result_.notes.push_back(absl::StrCat("error: ", shared_.error_text[i]));
  }
  if (shared_.leak_sample_taken.load()) {
    std::string sample(shared_.leak_sample);
    absl::StrReplaceAll({{"\n", "; "}}, &sample);
    result_.notes.push_back(absl::StrCat("locked descriptor in a child: ", sample));
  }
  return result_;
}

// ---------------------------------------------------------------------------
// Set-up, flags, report.

std::string FindOnlyone(const std::string& flag, const std::string& self_exe) {
  std::vector<std::string> candidates;
  if (!flag.empty()) return flag;
  if (const char* srcdir = getenv("TEST_SRCDIR")) {
    candidates.push_back(absl::StrCat(srcdir, "/onlyone/onlyone"));
  }
  if (const char* runfiles = getenv("RUNFILES_DIR")) {
    candidates.push_back(absl::StrCat(runfiles, "/onlyone/onlyone"));
  }
  candidates.push_back(absl::StrCat(self_exe, ".runfiles/onlyone/onlyone"));
  for (const std::string& candidate : candidates) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

void RemoveTree(const std::string& path) {
  nftw(
      path.c_str(),
      [](const char* entry, const struct stat*, int, struct FTW*) {
        remove(entry);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

// A private temporary tree: the lock files, a private instance directory,
// and a stand-in for the machine's system directories (ONLYONE_TEST_ROOT,
// as tests/test_util.cc MakeTestRoot() lays it out).
absl::StatusOr<std::string> MakeWorkTree() {
  const char* base = getenv("TEST_TMPDIR");
  if (base == nullptr) base = getenv("TMPDIR");
  if (base == nullptr || *base == '\0') base = "/tmp";
  std::string root = absl::StrCat(base, "/onlyone_chaos.XXXXXX");
  if (mkdtemp(root.data()) == nullptr) {
    return absl::InternalError(absl::StrCat(root, ": mkdtemp: ", strerror(errno)));
  }
  struct Directory {
    const char* path;
    mode_t mode;
  };
  for (const Directory& directory :
       {Directory{"/instances", 0700}, Directory{"/root", 0755},
        Directory{"/root/run", 0755}, Directory{"/root/run/lock", 01777},
        Directory{"/root/run/user", 0755}, Directory{"/root/tmp", 01777}}) {
    const std::string path = root + directory.path;
    if (mkdir(path.c_str(), 0700) != 0 ||
        chmod(path.c_str(), directory.mode) != 0) {
      const int error_number = errno;
      RemoveTree(root);
      return absl::InternalError(
          absl::StrCat(path, ": mkdir: ", strerror(error_number)));
    }
  }
  return root;
}

std::string FormatWait(int64_t ns) {
  return absl::FormatDuration(
      absl::Trunc(absl::Nanoseconds(ns), absl::Microseconds(1)));
}

void PrintResults(const std::vector<Result>& results) {
  printf("%-20s %9s %6s %15s %8s %12s %9s %5s %6s %s\n", "variant", "sections",
         "secs", "kills(hold/wait)", "overlaps", "longest_wait", "p99_wait",
         "hangs", "errors", "notes");
  Result total;
  for (const Result& r : results) {
    std::string extra;
    if (r.variant == Variant::kOnlyoneRun) {
      extra = absl::StrCat("onlyone kills ", r.onlyone_kills, "; ");
    }
    if (r.variant == Variant::kSharedMix) {
      extra += absl::StrCat("max shared holders together ",
                            r.max_shared_together, "; ");
    }
    if (r.variant == Variant::kSemaphore ||
        r.variant == Variant::kSemaphoreNoLock) {
      extra += absl::StrCat("most holders together ", r.max_permits_together,
                            " of ", r.permits, "; ");
    }
    if (r.variant == Variant::kForkDuringAcquire) {
      extra += absl::StrCat("children forked ", r.forks,
                            ", holding a lock ", r.children_holding_lock, "; ");
    }
    extra += absl::StrCat("retries ", r.retries);
    if (r.stale_slots > 0) extra += absl::StrCat("; stale slots ", r.stale_slots);
    printf("%-20s %9lld %6.1f %7lld (%lld/%lld) %8lld %12s %9s %5lld %6lld %s%s\n",
           VariantName(r.variant), static_cast<long long>(r.sections),
           r.seconds,
           static_cast<long long>(r.holder_kills + r.waiter_kills +
                                  r.onlyone_kills),
           static_cast<long long>(r.holder_kills),
           static_cast<long long>(r.waiter_kills + r.onlyone_kills),
           static_cast<long long>(r.overlaps),
           FormatWait(r.longest_wait_ns).c_str(),
           absl::StrCat("<", r.p99_wait_bound_us, "us").c_str(),
           static_cast<long long>(r.hangs), static_cast<long long>(r.errors),
           extra.c_str(), r.failed() ? "  FAILED" : "");
    for (const std::string& note : r.notes) printf("    %s\n", note.c_str());
    total.sections += r.sections;
    total.holder_kills += r.holder_kills;
    total.waiter_kills += r.waiter_kills + r.onlyone_kills;
    total.overlaps += r.overlaps;
    total.hangs += r.hangs;
    total.errors += r.errors;
    total.children_holding_lock += r.children_holding_lock;
    total.seconds += r.seconds;
    total.longest_wait_ns = std::max(total.longest_wait_ns, r.longest_wait_ns);
  }
  printf("%-20s %9lld %6.1f %7lld (%lld/%lld) %8lld %12s %9s %5lld %6lld %s\n",
         "total", static_cast<long long>(total.sections), total.seconds,
         static_cast<long long>(total.holder_kills + total.waiter_kills),
         static_cast<long long>(total.holder_kills),
         static_cast<long long>(total.waiter_kills),
         static_cast<long long>(total.overlaps),
         FormatWait(total.longest_wait_ns).c_str(), "",
         static_cast<long long>(total.hangs),
         static_cast<long long>(total.errors),
         total.failed() ? "FAILED" : "ok");
  printf(
      "longest_wait: over the sections that found the section empty, the "
      "time from the lock becoming free (the previous holder leaving its "
      "section right before its release, or our SIGKILL of a holder inside "
      "it) to the next holder's entry right after its Acquire returned "
      "(for onlyone-run: the command's start), counted from the entrant's "
      "first attempt if that came later. Kills: SIGKILLs of holders inside "
      "the section / of waiters or of onlyone processes.\n");
}

constexpr char kUsage[] =
    "usage: chaos [--variant=all|NAME[,NAME...]] [--processes=N]\n"
    "             [--sections=N] [--seconds=S] [--kill_rate=PER_SECOND]\n"
    "             [--seed=N] [--hold_us=N] [--hang_seconds=S]\n"
    "             [--onlyone=PATH] [--short]\n"
    "variants: blocking timed try-loop cancellable shared-mix single-instance\n"
    "          onlyone-run fork-during-acquire semaphore\n"
    "          (and no-lock, semaphore-no-lock, not in all: the detector's\n"
    "          checks; they must fail)\n"
    "--sections and --seconds bound the whole run and are split evenly\n"
    "between the variants; --short is --variant=all --seconds=60.\n";

int Usage(absl::string_view problem) {
  fprintf(stderr, "chaos: %s\n%s", std::string(problem).c_str(), kUsage);
  return 2;
}

int Main(int argc, char** argv) {
  Config config;
  config.seed = static_cast<uint64_t>(NowNs());
  std::string variants = "all";
  bool helper = false;
  int shared_fd = -1;
  int64_t start_ns = 0;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    std::pair<absl::string_view, absl::string_view> flag =
        absl::StrSplit(arg, absl::MaxSplits('=', 1));
    const absl::string_view name = flag.first, value = flag.second;
    bool ok = true;
    if (name == "--variant") {
      variants = std::string(value);
    } else if (name == "--processes") {
      ok = absl::SimpleAtoi(value, &config.processes) &&
           config.processes >= 1 && config.processes <= kMaxProcesses;
    } else if (name == "--sections") {
      ok = absl::SimpleAtoi(value, &config.sections) && config.sections >= 0;
    } else if (name == "--seconds") {
      ok = absl::SimpleAtod(value, &config.seconds) && config.seconds > 0;
    } else if (name == "--kill_rate") {
      ok = absl::SimpleAtod(value, &config.kill_rate) && config.kill_rate >= 0;
    } else if (name == "--seed") {
      ok = absl::SimpleAtoi(value, &config.seed);
    } else if (name == "--hold_us") {
      ok = absl::SimpleAtoi(value, &config.hold_us) && config.hold_us >= 0;
    } else if (name == "--hang_seconds") {
      ok = absl::SimpleAtod(value, &config.hang_seconds) &&
           config.hang_seconds > 0;
    } else if (name == "--onlyone") {
      config.onlyone = std::string(value);
    } else if (arg == "--short") {
      variants = "all";
      config.seconds = 60;
    } else if (arg == "--section-helper") {
      helper = true;
    } else if (name == "--shared_fd") {
      ok = absl::SimpleAtoi(value, &shared_fd);
    } else if (name == "--start_ns") {
      ok = absl::SimpleAtoi(value, &start_ns);
    } else if (arg == "--help") {
      fputs(kUsage, stdout);
      return 0;
    } else {
      return Usage(absl::StrCat("unknown argument ", arg));
    }
    if (!ok) return Usage(absl::StrCat("bad value in ", arg));
  }
  if (helper) {
    return SectionHelperMain(shared_fd, start_ns, config.hold_us, config.seed);
  }
  if (variants == "all") {
    config.variants.assign(std::begin(kAllVariants), std::end(kAllVariants));
  } else {
    for (absl::string_view wanted : absl::StrSplit(variants, ',')) {
      bool known = false;
      for (Variant check : {Variant::kNoLock, Variant::kSemaphoreNoLock}) {
        if (wanted == VariantName(check)) {
          config.variants.push_back(check);
          known = true;
        }
      }
      for (Variant variant : kAllVariants) {
        if (wanted == VariantName(variant)) {
          config.variants.push_back(variant);
          known = true;
        }
      }
      if (!known) return Usage(absl::StrCat("unknown variant ", wanted));
    }
  }

  Context context;
  char self[4096];
  const ssize_t self_length = readlink("/proc/self/exe", self, sizeof self - 1);
  if (self_length <= 0) return Usage("cannot read /proc/self/exe");
  context.self_exe.assign(self, self_length);
  for (Variant variant : config.variants) {
    if (variant != Variant::kOnlyoneRun) continue;
    config.onlyone = FindOnlyone(config.onlyone, context.self_exe);
    if (config.onlyone.empty() || access(config.onlyone.c_str(), X_OK) != 0) {
      return Usage(
          "the onlyone-run variant needs the onlyone binary: pass "
          "--onlyone=PATH (bazel run finds it in the runfiles)");
    }
  }
  context.config = config;

  // The page every process of the run maps: a memfd, so that the commands
  // `onlyone run` executes can map it from the descriptor they inherit.
  context.shared_fd = memfd_create("onlyone-chaos", 0);
  if (context.shared_fd < 0 ||
      ftruncate(context.shared_fd, sizeof(Shared)) != 0) {
    perror("chaos: memfd");
    return 1;
  }
  void* page = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE,
                    MAP_SHARED, context.shared_fd, 0);
  if (page == MAP_FAILED) {
    perror("chaos: mmap");
    return 1;
  }
  context.shared = static_cast<Shared*>(page);

  absl::StatusOr<std::string> tree = MakeWorkTree();
  if (!tree.ok()) {
    fprintf(stderr, "chaos: %s\n", tree.status().ToString().c_str());
    return 1;
  }
  setenv("ONLYONE_TEST_ROOT", (*tree + "/root").c_str(), 1);
  context.instance_directory = *tree + "/instances";
  // Orphans of our descendants (commands whose onlyone we killed) are
  // reparented to us, so that the end can find and kill them.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  struct sigaction on_interrupt = {};
  on_interrupt.sa_handler = [](int) { interrupted.store(1); };
  sigaction(SIGINT, &on_interrupt, nullptr);
  sigaction(SIGTERM, &on_interrupt, nullptr);

  printf(
      "chaos: seed=%llu processes=%d kill_rate=%g/s hold<=%dus hang>=%gs "
      "seconds=%g sections=%lld%s%s\n",
      static_cast<unsigned long long>(config.seed), config.processes,
      config.kill_rate, config.hold_us, config.hang_seconds, config.seconds,
      static_cast<long long>(config.sections),
      config.onlyone.empty() ? "" : " onlyone=", config.onlyone.c_str());
  fflush(stdout);

  const int count = static_cast<int>(config.variants.size());
  std::vector<Result> results;
  for (int v = 0; v < count && !interrupted.load(); ++v) {
    const Variant variant = config.variants[v];
    context.lock_path = absl::StrCat(*tree, "/", VariantName(variant), ".lock");
    Supervisor supervisor(context, variant,
                          (config.sections + count - 1) / count,
                          config.seconds / count, config.seed + v);
    results.push_back(supervisor.Run());
  }
  KillDescendants();
  RemoveTree(*tree);
  PrintResults(results);
  bool failed = interrupted.load() != 0;
  for (const Result& result : results) failed |= result.failed();
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace onlyone::chaos

int main(int argc, char** argv) { return onlyone::chaos::Main(argc, argv); }
