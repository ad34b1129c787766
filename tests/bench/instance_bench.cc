// instance_bench: the cost of SingleInstance next to the raw system calls
// that do the same job, in one run. Prints each figure (p50 and p99) with its
// ratio to the raw floor, the target and PASS/MISS.
//
//   bazel run -c opt //tests/bench:instance_bench [-- --flag=value ...]
//
// Flags (all optional):
//   --iterations=N  warm Acquire+Release per round               (20000)
//   --rounds=N      interleaved rounds of the warm test          (5)
//   --starts=N      fresh processes per variant, cold and exec   (300)
//   --messages=N    message round trips per variant              (3000)
//   --fail_on_miss  exit 1 when a target is missed (default: report only)
//
// What is measured (all in the per-user scope, XDG_RUNTIME_DIR pointing at a
// fresh private directory, so the directory checks run as they would for a
// user):
//  1. Warm: SingleInstance::Acquire(name) + Release() repeated in one
//     process: name check, geteuid and the lstat of the runtime directory,
//     open+flock+fstat of the lock file, the owner record (one pwrite; its
//     size is measured first and printed) and close: 7 system calls. The
//     raw floor is open(O_CREAT) + flock(LOCK_EX|LOCK_NB) + pwrite(as many
//     bytes) + flock(LOCK_UN) + close: 5. Each operation is timed on its own; rounds alternate the variants.
//     A reference row times the lock layer alone (ScopedFileLock::Acquire +
//     the same pwrite + Release), to show which part of the difference is
//     the lock's and which SingleInstance's; another row (no target) times
//     the user scope without a runtime directory, in /tmp/onlyone-UID, which
//     takes two more calls (the missing runtime directory's lstat, and the
//     stat of /tmp before the lstat of our directory in it).
//  2. Cold (for information): the first Acquire+Release in a freshly forked
//     process, where the process's identity (start time, boot id,
//     executable, command line, user name) is not yet cached and none of the
//     library's code pages are mapped in the child yet; the raw floor
//     likewise in a fresh process. The child times its own call (fork is not
//     counted) and counts its minor page faults, which dominate on machines
//     where a fault is slow (virtual machines).
//  3. Program start: fork + exec of this binary in a child mode that does
//     one Acquire+Release (or the raw calls) and exits, timed from fork to
//     waitpid: what a program pays for onlyone at start, loader included.
//  4. Message round trip: Send() from this process to a primary in another
//     process whose on_message returns at once: connect, request, handler,
//     reply (the acknowledgement), close. The raw floor is a unix-socket
//     client (socket + connect + write + read + close) against a server that
//     accepts, reads the request and writes a one-byte reply.
//
// Targets (on the p50 ratio): warm acquire+release <= 2x the raw floor (what
// each call costs); program start <= 2x (what a program pays, start to
// exit); message round trip <= 2x. The cold row, the fallback row and the
// lock-layer reference row are for information: the first call in a process
// also reads the process's identity from /proc and /etc/passwd (about a
// dozen system calls the floor does not make) and touches the library's code
// for the first time.

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "onlyone/internal/instance_paths.h"
#include "onlyone/single_instance.h"
#include "tests/bench/bench_util.h"

namespace onlyone::bench {
namespace {

constexpr char kName[] = "bench-instance";
constexpr char kChildModeFlag[] = "--child_mode=";
// The size of onlyone's owner record in this run, measured by main() and
// passed to exec'd children: the raw floor writes as many bytes.
constexpr char kRecordBytesEnv[] = "INSTANCE_BENCH_RECORD_BYTES";

struct Config {
  int iterations = 20000;
  int rounds = 5;
  int starts = 300;
  int messages = 3000;
  bool fail_on_miss = false;
};

// ---------------------------------------------------------------------------
// The two things being compared, as a child mode too.

// The machine the benchmark runs on, below its TempDir (ONLYONE_TEST_ROOT),
// so that it never touches the real /run/lock: BASE is its run/lock, as on
// Debian. The raw floor's files sit in the user directory SingleInstance
// uses, so both pay for the same filesystem.
constexpr char kTestRootEnv[] = "ONLYONE_TEST_ROOT";

std::string FloorDirectory() {
  return absl::StrCat(getenv(kTestRootEnv), "/run/lock/onlyone-", geteuid());
}

std::string RawPath() { return FloorDirectory() + "/raw-floor.lock"; }

size_t FloorRecordBytes() {
  const char* bytes = getenv(kRecordBytesEnv);
  size_t parsed = 0;
  if (bytes == nullptr || !absl::SimpleAtoi(bytes, &parsed) || parsed == 0) {
    Die("the owner record's size was not measured");
  }
  return parsed;
}

bool RawOnce(const std::string& path) {
  static const std::string record(FloorRecordBytes(), 'r');
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            pwrite(fd, record.data(), record.size(), 0) ==
                static_cast<ssize_t>(record.size()) &&
            flock(fd, LOCK_UN) == 0;
  return close(fd) == 0 && ok;
}

bool LockLayerOnce(const std::string& path) {
  static const std::string record(FloorRecordBytes(), 'r');
  LockOptions options;
  options.timeout = absl::ZeroDuration();
  options.file_mode = 0600;
  absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(path, options);
  if (!lock.ok()) return false;
  if (pwrite(lock->fd(), record.data(), record.size(), 0) !=
      static_cast<ssize_t>(record.size())) {
    return false;
  }
  return lock->Release().ok();
}

bool OnlyoneOnce() {
  absl::StatusOr<SingleInstance> instance = SingleInstance::Acquire(kName);
  if (!instance.ok()) {
    fprintf(stderr, "instance_bench: %s\n",
            std::string(instance.status().message()).c_str());
    return false;
  }
  return instance->Release().ok();
}

int RunChildMode(absl::string_view mode) {
  if (mode == "raw") return RawOnce(RawPath()) ? 0 : 1;
  if (mode == "onlyone") return OnlyoneOnce() ? 0 : 1;
  return 2;
}

// Adds the "METRIC p50" and "METRIC p99" rows; the target (0: none, for
// information) applies to the p50 ratio.
void AddRows(std::vector<Row>& rows, const std::string& metric,
             const std::vector<double>& ours, const std::vector<double>& raw,
             double target) {
  AddLatencyRows(rows, metric + " p50", metric + " p99", ours, raw, target);
}

// ---------------------------------------------------------------------------
// 1. Warm.

// kOnlyoneFallback: a machine whose /run/lock is not writable by everyone
// (Fedora, Arch), so BASE is /tmp: the usual lstat finds nothing, and the
// base is chosen at every call.
enum class Variant { kRaw, kLockLayer, kOnlyone, kOnlyoneFallback };
constexpr int kVariants = 4;

void BenchWarm(const Config& cfg, std::vector<Row>& rows) {
  const std::string machine = getenv(kTestRootEnv);
  const std::string raw_path = RawPath();
  const std::string layer_path = FloorDirectory() + "/lock-layer.lock";
  std::vector<double> times[kVariants];
  for (auto& t : times) t.reserve(size_t(cfg.iterations) * cfg.rounds);
  auto run = [&](Variant variant, int n, bool record) {
    if (variant == Variant::kOnlyoneFallback) {
      setenv(kTestRootEnv, (machine + "-tmp-base").c_str(), 1);
      internal::RereadTestRootForTesting();
    }
    for (int i = 0; i < n; ++i) {
      const int64_t start = NowNs();
      bool ok = false;
      switch (variant) {
        case Variant::kRaw:
          ok = RawOnce(raw_path);
          break;
        case Variant::kLockLayer:
          ok = LockLayerOnce(layer_path);
          break;
        case Variant::kOnlyone:
        case Variant::kOnlyoneFallback:
          ok = OnlyoneOnce();
          break;
      }
      const int64_t took = NowNs() - start;
      if (!ok) Die("warm: acquire/release failed");
      if (record) times[int(variant)].push_back(static_cast<double>(took));
    }
    setenv(kTestRootEnv, machine.c_str(), 1);
    internal::RereadTestRootForTesting();
  };
  const Variant order[kVariants] = {Variant::kRaw, Variant::kLockLayer,
                                    Variant::kOnlyone,
                                    Variant::kOnlyoneFallback};
  // Warm-up: caches, dentries, the process identity.
  for (Variant v : order) run(v, cfg.iterations / 10 + 1, false);
  for (int round = 0; round < cfg.rounds; ++round) {
    for (int k = 0; k < kVariants; ++k)
      run(order[(round + k) % kVariants], cfg.iterations, true);
  }
  const auto& raw = times[int(Variant::kRaw)];
  AddRows(rows, "warm acquire+release", times[int(Variant::kOnlyone)], raw,
          2.0);
  AddRows(rows, "  reference: ScopedFileLock+pwrite alone",
          times[int(Variant::kLockLayer)], raw, 0);
  AddRows(rows, "  BASE /tmp (/run/lock not writable by all)",
          times[int(Variant::kOnlyoneFallback)], raw, 0);
}

// ---------------------------------------------------------------------------
// 2. Cold: the first call in a fresh process.

struct ColdResult {
  std::atomic<int64_t> ns{0};
  std::atomic<int64_t> faults{0};
};

void BenchCold(const Config& cfg, std::vector<Row>& rows) {
  auto* shared = MapShared<ColdResult>();
  const std::string raw_path = RawPath();
  std::vector<double> ours, raw, ours_faults, raw_faults;
  for (int i = 0; i < 2 * cfg.starts; ++i) {
    const bool onlyone = i % 2 == 0;
    const pid_t child = ForkChild([&] {
      const int64_t faults = MinorFaults();
      const int64_t start = NowNs();
      const bool ok = onlyone ? OnlyoneOnce() : RawOnce(raw_path);
      shared->ns.store(NowNs() - start);
      shared->faults.store(MinorFaults() - faults);
      return ok ? 0 : 1;
    });
    WaitChild(child, "cold: child");
    (onlyone ? ours : raw).push_back(static_cast<double>(shared->ns.load()));
    (onlyone ? ours_faults : raw_faults)
        .push_back(static_cast<double>(shared->faults.load()));
  }
  UnmapShared(shared);
  AddRows(rows, "cold: first call in a forked child", ours, raw, 0);
  printf(
      "  cold: minor page faults during the call, p50: onlyone %.0f, raw "
      "%.0f\n",
      Percentile(ours_faults, 50), Percentile(raw_faults, 50));
}

// ---------------------------------------------------------------------------
// 3. Program start: fork + exec + one call + exit.

void BenchProgramStart(const Config& cfg, std::vector<Row>& rows) {
  std::vector<double> ours, raw;
  const std::string self = "/proc/self/exe";
  char executable[4096];
  const ssize_t length =
      readlink(self.c_str(), executable, sizeof executable - 1);
  if (length <= 0) Die("readlink /proc/self/exe");
  executable[length] = '\0';
  for (int i = 0; i < 2 * cfg.starts; ++i) {
    const bool onlyone = i % 2 == 1;
    const std::string flag =
        absl::StrCat(kChildModeFlag, onlyone ? "onlyone" : "raw");
    fflush(nullptr);
    const int64_t start = NowNs();
    // fork(2) itself, not ForkChild: the child only execs, as a program
    // being started would, and all of it is timed.
    const pid_t child = fork();
    if (child < 0) DieErrno("fork");
    if (child == 0) {
      execl(executable, executable, flag.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    WaitChild(child, "program start: child");
    (onlyone ? ours : raw).push_back(static_cast<double>(NowNs() - start));
  }
  AddRows(rows, "program start (fork+exec+call+exit)", ours, raw, 2.0);
}

// ---------------------------------------------------------------------------
// 4. Message round trip.

int RawServer(const std::string& path, int ready_fd) {
  const int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  unlink(path.c_str());
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) !=
          0 ||
      listen(listener, 64) != 0) {
    return 1;
  }
  WriteByte(ready_fd, 'r');
  close(ready_fd);
  char buffer[4096];
  for (;;) {
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    const ssize_t got = read(fd, buffer, sizeof buffer);
    if (got > 0 && write(fd, "k", 1) != 1) return 1;
    close(fd);
  }
}

bool RawRoundTrip(const std::string& path, const std::string& request) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  char reply;
  const bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      write(fd, request.data(), request.size()) ==
          static_cast<ssize_t>(request.size()) &&
      read(fd, &reply, 1) == 1;
  close(fd);
  return ok;
}

void BenchMessages(const Config& cfg, std::vector<Row>& rows) {
  Pipe ready = MakePipe();  // one byte from each server once it listens
  const std::string raw_socket =
      FloorDirectory() + "/raw-floor.sock";
  const pid_t primary = ForkChild([&] {
    InstanceOptions options;
    options.listen = true;
    options.on_message = [](const InstanceMessage&) { return std::string(); };
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("bench-primary", options);
    if (!instance.ok()) return 1;
    WriteByte(ready.write_end, 'p');
    close(ready.write_end);
    pause();
    return 0;
  });
  const pid_t server =
      ForkChild([&] { return RawServer(raw_socket, ready.write_end); });
  // Each server closes the write end once it has said it is ready, so one
  // that fails shows as end of file rather than as a wait for ever.
  close(ready.write_end);
  if (ReadByte(ready.read_end) == 0 || ReadByte(ready.read_end) == 0) {
    Die("message servers did not start");
  }

  InstanceMessage message;
  message.arguments = {"/usr/bin/editor", "--new-window", "notes.txt"};
  message.working_directory = "/home/someone";
  // The raw client sends as many bytes as the real request.
  const std::string raw_request(120, 'q');
  std::vector<double> ours, raw;
  for (int i = 0; i < cfg.messages / 10 + 1; ++i) {  // warm-up
    if (!SingleInstance::Send("bench-primary", message).ok() ||
        !RawRoundTrip(raw_socket, raw_request)) {
      Die("message warm-up failed");
    }
  }
  for (int i = 0; i < 2 * cfg.messages; ++i) {
    const bool onlyone = (i / 100) % 2 == 0;  // blocks of 100
    const int64_t start = NowNs();
    const bool ok = onlyone
                        ? SingleInstance::Send("bench-primary", message).ok()
                        : RawRoundTrip(raw_socket, raw_request);
    const int64_t took = NowNs() - start;
    if (!ok) Die("message round trip failed");
    (onlyone ? ours : raw).push_back(static_cast<double>(took));
  }
  kill(primary, SIGKILL);
  kill(server, SIGKILL);
  waitpid(primary, nullptr, 0);
  waitpid(server, nullptr, 0);
  close(ready.read_end);
  AddRows(rows, "message round trip", ours, raw, 2.0);
}

// One acquisition tells how many bytes the owner record takes here; the
// raw floor (here and in exec'd children) writes as many.
// ROOT/run/lock with `run_lock_mode` and ROOT/tmp (01777): what onlyone
// looks at below ONLYONE_TEST_ROOT.
void MakeMachine(const std::string& root, mode_t run_lock_mode) {
  struct Directory {
    std::string path;
    mode_t mode;
  };
  for (const Directory& directory :
       {Directory{root, 0755}, Directory{root + "/run", 0755},
        Directory{root + "/run/lock", run_lock_mode},
        Directory{root + "/tmp", 01777}}) {
    if (mkdir(directory.path.c_str(), 0700) != 0 ||
        chmod(directory.path.c_str(), directory.mode) != 0) {
      Die(absl::StrCat("making ", directory.path));
    }
  }
}

void MeasureRecordSize() {
  if (!OnlyoneOnce()) Die("the first acquisition failed");
  struct stat written;
  const absl::StatusOr<std::string> lock_path = SingleInstance::LockPath(kName);
  if (!lock_path.ok() || stat(lock_path->c_str(), &written) != 0) {
    Die("the lock file of the first acquisition");
  }
  setenv(kRecordBytesEnv, absl::StrCat(written.st_size).c_str(), 1);
}

Config ParseFlags(int argc, char** argv) {
  Config cfg;
  ParseCommandLine(argc, argv, cfg.fail_on_miss,
                   {
                       {"--iterations=", &cfg.iterations},
                       {"--rounds=", &cfg.rounds},
                       {"--starts=", &cfg.starts},
                       {"--messages=", &cfg.messages},
                   });
  return cfg;
}

}  // namespace
}  // namespace onlyone::bench

int main(int argc, char** argv) {
  using namespace onlyone::bench;  // NOLINT
  if (argc == 2) {
    absl::string_view mode = argv[1];
    if (absl::ConsumePrefix(&mode, kChildModeFlag)) return RunChildMode(mode);
  }
  const Config cfg = ParseFlags(argc, argv);
  signal(SIGPIPE, SIG_IGN);

  // Two machines of the benchmark's own (see FloorDirectory()), inherited by
  // the exec'd children. Under /tmp rather than $TMPDIR, which may be long:
  // the raw server's socket path must fit in sun_path.
  TempDir dir("instance_bench", "/tmp");
  MakeMachine(dir.File("m"), /*run_lock_mode=*/01777);
  MakeMachine(dir.File("m-tmp-base"), /*run_lock_mode=*/0755);
  setenv(kTestRootEnv, dir.File("m").c_str(), 1);
  onlyone::internal::RereadTestRootForTesting();
  MeasureRecordSize();

  printf("instance_bench: %s\n", MachineSummary().c_str());
  printf("  iterations=%d rounds=%d starts=%d messages=%d\n", cfg.iterations,
         cfg.rounds, cfg.starts, cfg.messages);
  printf("  owner record: %s bytes, as many for the raw floor's pwrite\n",
         getenv(kRecordBytesEnv));
  printf("  load average at start: %s", LoadAverage().c_str());
  const int64_t start = NowNs();
  std::vector<Row> rows;
  BenchWarm(cfg, rows);
  BenchCold(cfg, rows);
  BenchProgramStart(cfg, rows);
  BenchMessages(cfg, rows);
  printf("\n");
  PrintTable("metric (us)", rows);
  const int missed = CountMisses(rows);
  printf("\n%d target(s) missed; took %.1f s; load average at end: %s", missed,
         (NowNs() - start) / 1e9, LoadAverage().c_str());
  return missed > 0 && cfg.fail_on_miss ? 1 : 0;
}
