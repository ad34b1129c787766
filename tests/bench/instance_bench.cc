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
//     process: directory checks (lstat of the runtime directory and of
//     onlyone/), name check, open+flock of the lock file, the owner record
//     (pwrite of ~400 bytes), unlock and close. The raw floor is
//     open(O_CREAT) + flock(LOCK_EX|LOCK_NB) + pwrite(same size) +
//     flock(LOCK_UN) + close. Each operation is timed on its own; rounds
//     alternate the variants. A reference row times the lock layer alone
//     (ScopedFileLock::Acquire + the same pwrite + Release), to show which
//     part of the difference is the lock's and which SingleInstance's.
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
// Targets (on the p50 ratio): warm acquire+release <= 2x the raw floor;
// program start <= 2x; message round trip <= 2x. The cold row and the
// lock-layer reference row are for information. The warm figure is bounded
// below by the checks the design requires at every call: lstat(2) of the
// runtime directory and of onlyone/, geteuid(2), and fstat(2) of the locked
// file (hard-link check) before writing the record, i.e. 10 system calls
// against the floor's 5.

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "lib/single_instance.h"

namespace onlyone {
namespace {

constexpr char kName[] = "bench-instance";
// About the size of a real owner record, for the raw floor's pwrite.
constexpr size_t kRecordBytes = 420;
constexpr char kChildModeFlag[] = "--child_mode=";

struct Config {
  int iterations = 20000;
  int rounds = 5;
  int starts = 300;
  int messages = 3000;
  bool fail_on_miss = false;
};

[[noreturn]] void Die(const std::string& what) {
  fprintf(stderr, "instance_bench: %s\n", what.c_str());
  exit(2);
}

int64_t NowNs() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Nearest-rank percentile, p in (0, 100].
double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * v.size()));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

// ---------------------------------------------------------------------------
// The two things being compared, as a child mode too.

std::string RawPath() {
  return absl::StrCat(getenv("XDG_RUNTIME_DIR"), "/raw-floor.lock");
}

bool RawOnce(const std::string& path) {
  static const std::string record(kRecordBytes, 'r');
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  bool ok = flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            pwrite(fd, record.data(), record.size(), 0) ==
                static_cast<ssize_t>(record.size()) &&
            flock(fd, LOCK_UN) == 0;
  return close(fd) == 0 && ok;
}

bool LockLayerOnce(const std::string& path) {
  static const std::string record(kRecordBytes, 'r');
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

// ---------------------------------------------------------------------------
// Results table.

struct Row {
  std::string metric;
  std::string onlyone;
  std::string raw;
  std::string ratio;
  std::string target;
  std::string verdict;  // PASS, MISS or "-"
};

std::string Us(double ns) { return absl::StrFormat("%.1f", ns / 1000.0); }

std::string Ratio(double a, double b) {
  return b <= 0 ? "n/a" : absl::StrFormat("%.2f", a / b);
}

void PrintTable(const std::vector<Row>& rows) {
  const std::vector<std::string> header = {"metric (us)", "onlyone", "raw",
                                           "ratio",       "target",  "result"};
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const Row& r : rows) {
    const std::string* cells[] = {&r.metric, &r.onlyone, &r.raw,
                                  &r.ratio,  &r.target,  &r.verdict};
    for (size_t i = 0; i < header.size(); ++i) {
      width[i] = std::max(width[i], cells[i]->size());
    }
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line = "|";
    for (size_t i = 0; i < cells.size(); ++i) {
      const std::string pad(width[i] - cells[i].size(), ' ');
      absl::StrAppend(&line, " ", i == 0 ? cells[i] + pad : pad + cells[i],
                      " |");
    }
    printf("%s\n", line.c_str());
  };
  print_row(header);
  std::string rule = "|";
  for (size_t w : width) absl::StrAppend(&rule, std::string(w + 2, '-'), "|");
  printf("%s\n", rule.c_str());
  for (const Row& r : rows) {
    print_row({r.metric, r.onlyone, r.raw, r.ratio, r.target, r.verdict});
  }
}

// Adds a p50 and a p99 row; the target (0: none, for information) applies
// to the p50 ratio.
void AddRows(std::vector<Row>& rows, const std::string& metric,
             const std::vector<double>& ours, const std::vector<double>& raw,
             double target) {
  const double ours50 = Percentile(ours, 50), raw50 = Percentile(raw, 50);
  const double ours99 = Percentile(ours, 99), raw99 = Percentile(raw, 99);
  rows.push_back({metric + " p50", Us(ours50), Us(raw50), Ratio(ours50, raw50),
                  target > 0 ? absl::StrFormat("ratio <= %.2f", target) : "-",
                  target <= 0                ? "-"
                  : ours50 <= target * raw50 ? "PASS"
                                             : "MISS"});
  rows.push_back(
      {metric + " p99", Us(ours99), Us(raw99), Ratio(ours99, raw99), "-", "-"});
}

// ---------------------------------------------------------------------------
// 1. Warm.

enum class Variant { kRaw, kLockLayer, kOnlyone };

void BenchWarm(const Config& cfg, std::vector<Row>& rows) {
  const std::string raw_path = RawPath();
  const std::string layer_path =
      absl::StrCat(getenv("XDG_RUNTIME_DIR"), "/lock-layer.lock");
  std::vector<double> times[3];
  for (auto& t : times) t.reserve(size_t(cfg.iterations) * cfg.rounds);
  auto run = [&](Variant variant, int n, bool record) {
    for (int i = 0; i < n; ++i) {
      const int64_t start = NowNs();
      const bool ok = variant == Variant::kOnlyone ? OnlyoneOnce()
                      : variant == Variant::kLockLayer
                          ? LockLayerOnce(layer_path)
                          : RawOnce(raw_path);
      const int64_t took = NowNs() - start;
      if (!ok) Die("warm: acquire/release failed");
      if (record) times[int(variant)].push_back(static_cast<double>(took));
    }
  };
  const Variant order[3] = {Variant::kRaw, Variant::kLockLayer,
                            Variant::kOnlyone};
  // Warm-up: caches, dentries, the process identity.
  for (Variant v : order) run(v, cfg.iterations / 10 + 1, false);
  for (int round = 0; round < cfg.rounds; ++round) {
    for (int k = 0; k < 3; ++k)
      run(order[(round + k) % 3], cfg.iterations, true);
  }
  const auto& raw = times[int(Variant::kRaw)];
  AddRows(rows, "warm acquire+release", times[int(Variant::kOnlyone)], raw,
          2.0);
  AddRows(rows, "  reference: ScopedFileLock+pwrite alone",
          times[int(Variant::kLockLayer)], raw, 0);
}

// ---------------------------------------------------------------------------
// 2. Cold: the first call in a fresh process.

struct ColdResult {
  std::atomic<int64_t> ns{0};
  std::atomic<int64_t> faults{0};
};

int64_t MinorFaults() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

void BenchCold(const Config& cfg, std::vector<Row>& rows) {
  auto* shared = static_cast<ColdResult*>(
      mmap(nullptr, sizeof(ColdResult), PROT_READ | PROT_WRITE,
           MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  if (shared == MAP_FAILED) Die("mmap");
  const std::string raw_path = RawPath();
  std::vector<double> ours, raw, ours_faults, raw_faults;
  for (int i = 0; i < 2 * cfg.starts; ++i) {
    const bool onlyone = i % 2 == 0;
    fflush(nullptr);
    const pid_t child = fork();
    if (child < 0) Die("fork");
    if (child == 0) {
      const int64_t faults = MinorFaults();
      const int64_t start = NowNs();
      const bool ok = onlyone ? OnlyoneOnce() : RawOnce(raw_path);
      shared->ns.store(NowNs() - start);
      shared->faults.store(MinorFaults() - faults);
      _exit(ok ? 0 : 1);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      Die("cold: child failed");
    }
    (onlyone ? ours : raw).push_back(static_cast<double>(shared->ns.load()));
    (onlyone ? ours_faults : raw_faults)
        .push_back(static_cast<double>(shared->faults.load()));
  }
  munmap(shared, sizeof(ColdResult));
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
    const pid_t child = fork();
    if (child < 0) Die("fork");
    if (child == 0) {
      execl(executable, executable, flag.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      Die("program start: child failed");
    }
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
  if (write(ready_fd, "r", 1) != 1) return 1;
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
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) Die("pipe2");
  const std::string raw_socket =
      absl::StrCat(getenv("XDG_RUNTIME_DIR"), "/raw-floor.sock");
  fflush(nullptr);
  const pid_t primary = fork();
  if (primary < 0) Die("fork");
  if (primary == 0) {
    InstanceOptions options;
    options.listen = true;
    options.on_message = [](const InstanceMessage&) { return std::string(); };
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("bench-primary", options);
    if (!instance.ok()) _exit(1);
    if (write(ready[1], "p", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  const pid_t server = fork();
  if (server < 0) Die("fork");
  if (server == 0) _exit(RawServer(raw_socket, ready[1]));
  char byte;
  if (read(ready[0], &byte, 1) != 1 || read(ready[0], &byte, 1) != 1) {
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
  close(ready[0]);
  close(ready[1]);
  AddRows(rows, "message round trip", ours, raw, 2.0);
}

Config ParseFlags(int argc, char** argv) {
  Config cfg;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--fail_on_miss") {
      cfg.fail_on_miss = true;
      continue;
    }
    std::pair<absl::string_view, int*> flags[] = {
        {"--iterations=", &cfg.iterations},
        {"--rounds=", &cfg.rounds},
        {"--starts=", &cfg.starts},
        {"--messages=", &cfg.messages},
    };
    bool known = false;
    for (auto& [prefix, value] : flags) {
      absl::string_view rest = arg;
      if (absl::ConsumePrefix(&rest, prefix)) {
        if (!absl::SimpleAtoi(rest, value) || *value <= 0) {
          Die(absl::StrCat("bad value in ", arg));
        }
        known = true;
      }
    }
    if (!known) Die(absl::StrCat("unknown flag ", arg, " (see the source)"));
  }
  return cfg;
}

}  // namespace
}  // namespace onlyone

int main(int argc, char** argv) {
  using namespace onlyone;  // NOLINT
  if (argc == 2) {
    absl::string_view mode = argv[1];
    if (absl::ConsumePrefix(&mode, kChildModeFlag)) return RunChildMode(mode);
  }
  const Config cfg = ParseFlags(argc, argv);
  signal(SIGPIPE, SIG_IGN);

  // A fresh private runtime directory, inherited by the exec'd children.
  char dir[] = "/tmp/instance_bench.XXXXXX";
  if (mkdtemp(dir) == nullptr) Die("mkdtemp");
  setenv("XDG_RUNTIME_DIR", dir, 1);

  struct utsname uts {};
  uname(&uts);
  printf("instance_bench: %ld CPUs, kernel %s\n", sysconf(_SC_NPROCESSORS_ONLN),
         uts.release);
  printf("  iterations=%d rounds=%d starts=%d messages=%d\n", cfg.iterations,
         cfg.rounds, cfg.starts, cfg.messages);
  printf("  load average at start: %s", ReadWholeFile("/proc/loadavg").c_str());
  const int64_t start = NowNs();
  std::vector<Row> rows;
  BenchWarm(cfg, rows);
  BenchCold(cfg, rows);
  BenchProgramStart(cfg, rows);
  BenchMessages(cfg, rows);
  printf("\n");
  PrintTable(rows);
  int missed = 0;
  for (const Row& r : rows) missed += r.verdict == "MISS";
  printf("\n%d target(s) missed; took %.1f s; load average at end: %s", missed,
         (NowNs() - start) / 1e9, ReadWholeFile("/proc/loadavg").c_str());
  if (std::system(absl::StrCat("rm -rf '", dir, "'").c_str()) != 0) {
    fprintf(stderr, "instance_bench: could not remove %s\n", dir);
  }
  return missed > 0 && cfg.fail_on_miss ? 1 : 0;
}
