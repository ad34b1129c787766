#include "tests/test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/holder_info.h"
#include "onlyone/internal/instance_paths.h"

namespace onlyone::testing {
namespace {

// Waits for `fd` to become readable; false on timeout.
bool WaitReadable(int fd, absl::Duration timeout) {
  struct pollfd poll_fd = {fd, POLLIN, 0};
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    const int remaining_ms = static_cast<int>(
        absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (remaining_ms < 0) return false;
    const int ready = poll(&poll_fd, 1, remaining_ms);
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace

Pipe::Pipe() {
  if (pipe2(fds_, O_CLOEXEC) != 0) {
    perror("pipe2");
    abort();
  }
}

Pipe::~Pipe() {
  CloseRead();
  CloseWrite();
}

void Pipe::Send(char byte) {
  while (write(fds_[1], &byte, 1) != 1) {
    if (errno != EINTR) {
      perror("pipe write");
      abort();
    }
  }
}

char Pipe::Receive(absl::Duration timeout) {
  if (!WaitReadable(fds_[0], timeout)) return '\0';
  char byte;
  ssize_t got;
  do {
    got = read(fds_[0], &byte, 1);
  } while (got < 0 && errno == EINTR);
  return got == 1 ? byte : '\0';
}

std::string Pipe::ReadAll(absl::Duration timeout) {
  std::string text;
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    if (!WaitReadable(fds_[0], deadline - absl::Now())) return text;
    char buffer[4096];
    const ssize_t got = read(fds_[0], buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return text;
    text.append(buffer, got);
  }
}

void Pipe::CloseRead() {
  if (fds_[0] >= 0) close(fds_[0]);
  fds_[0] = -1;
}

void Pipe::CloseWrite() {
  if (fds_[1] >= 0) close(fds_[1]);
  fds_[1] = -1;
}

Child Child::Fork(const std::function<int()>& body) {
  fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    abort();
  }
  if (pid == 0) _exit(body());
  return Child(pid);
}

Child::Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}

Child::~Child() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    Wait();
  }
}

int Child::Wait() {
  if (pid_ <= 0) return -1;
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void Child::Kill(int signal_number) {
  if (pid_ > 0) kill(pid_, signal_number);
}

namespace {

// Re-reads /proc/locks until a line for the file at `path` satisfies
// `matches` on `count` lines. The kernel offers no notification for "a
// waiter blocked" or "a lock was granted", so this polls the condition,
// yielding between reads.
bool WaitForLockLines(const std::string& path, int count,
                      absl::Duration timeout,
                      const std::function<bool(absl::string_view)>& matches) {
  struct stat file;
  if (stat(path.c_str(), &file) != 0) return false;
  // /proc/locks names files as MAJ:MIN:INODE with hexadecimal device numbers.
  const std::string file_id =
      absl::StrFormat(" %02x:%02x:%u ", major(file.st_dev), minor(file.st_dev),
                      static_cast<uint64_t>(file.st_ino));
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream locks("/proc/locks");
    std::string line;
    int matching = 0;
    while (std::getline(locks, line)) {
      if (line.find(file_id) != std::string::npos && matches(line)) ++matching;
    }
    if (matching >= count) return true;
    usleep(200);
  }
  return false;
}

}  // namespace

bool WaitForBlockedWaiters(const std::string& path, int count,
                           absl::Duration timeout) {
  return WaitForLockLines(path, count, timeout, [](absl::string_view line) {
    return absl::StrContains(line, "-> FLOCK");
  });
}

bool WaitForHolder(const std::string& path, pid_t pid,
                   absl::Duration timeout) {
  const std::string holder = absl::StrCat(" ", pid, " ");
  return WaitForLockLines(path, 1, timeout, [&](absl::string_view line) {
    return !absl::StrContains(line, "->") && absl::StrContains(line, "FLOCK") &&
           absl::StrContains(line, holder);
  });
}

Child HoldWithRawFlock(const std::string& path, Pipe& ready, Pipe& release) {
  return Child::Fork([&] {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) return 2;
    ready.Send();
    release.Receive(absl::Hours(1));
    return 0;
  });
}

std::vector<pid_t> CarriedPids(const absl::Status& status) {
  std::vector<pid_t> pids;
  if (std::optional<HolderInfo> carried = HolderFromStatus(status)) {
    for (const LockHolderProcess& process : carried->holders) {
      pids.push_back(process.pid);
    }
  }
  return pids;
}

std::string MakeTempDir() {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(base ? base : "/tmp", "/onlyone.XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    perror("mkdtemp");
    abort();
  }
  return pattern;
}

std::string MakeTempDirOtherUsersCanReach() {
  std::string pattern = "/tmp/onlyone-test.XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr || chmod(pattern.c_str(), 0755) != 0) {
    perror("mkdtemp");
    abort();
  }
  return pattern;
}

bool BecomeNobody() {
  return setgroups(0, nullptr) == 0 && setgid(kNobodyUid) == 0 &&
         setuid(kNobodyUid) == 0;
}

void ForgetTestRunnerFiles() {
  for (const char* name :
       {"TEST_PREMATURE_EXIT_FILE", "XML_OUTPUT_FILE", "TEST_SHARD_STATUS_FILE",
        "TEST_UNDECLARED_OUTPUTS_DIR"}) {
    unsetenv(name);
  }
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::vector<std::pair<pid_t, uint64_t>> OtherThreadsBlockedSignals() {
  std::vector<std::pair<pid_t, uint64_t>> masks;
  const pid_t self = gettid();
  DIR* tasks = opendir("/proc/self/task");
  if (tasks == nullptr) return masks;
  while (const dirent* entry = readdir(tasks)) {
    pid_t tid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &tid) || tid == self) continue;
    for (absl::string_view line : absl::StrSplit(
             ReadFileOrEmpty(absl::StrCat("/proc/self/task/", tid, "/status")),
             '\n')) {
      uint64_t mask = 0;
      if (absl::ConsumePrefix(&line, "SigBlk:\t") &&
          absl::SimpleHexAtoi(line, &mask)) {
        masks.emplace_back(tid, mask);
      }
    }
  }
  closedir(tasks);
  return masks;
}

bool BlocksProcessSignals(uint64_t mask) {
  const uint64_t must =
      (uint64_t{1} << (SIGCHLD - 1)) | (uint64_t{1} << (SIGTERM - 1));
  return (mask & must) == must;
}

int RunShell(const std::string& command_line) {
  const int status = system(command_line.c_str());
  if (status < 0) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string MountBindfs(const std::string& source,
                        const std::string& mount_point) {
  if (access("/dev/fuse", R_OK | W_OK) != 0) {
    return "/dev/fuse is missing or not accessible";
  }
  const bool made = mkdir(mount_point.c_str(), 0700) == 0;
  if (!made && errno != EEXIST) {
    return absl::StrCat("cannot make the mount point ", mount_point);
  }
  const int status = RunShell(absl::StrCat("bindfs --no-allow-other '", source,
                                           "' '", mount_point,
                                           "' 2>/dev/null"));
  if (status != 0) {
    if (made) rmdir(mount_point.c_str());
    return absl::StrCat(
        "bindfs could not mount (exit status ", status,
        "; is bindfs installed and may this user mount FUSE filesystems?)");
  }
  return "";
}

void UnmountBindfs(const std::string& mount_point) {
  if (RunShell(absl::StrCat("fusermount -u '", mount_point, "'")) != 0) {
    umount2(mount_point.c_str(), MNT_DETACH);
  }
  rmdir(mount_point.c_str());
}

std::string MakeTestRoot() {
  std::string root = "/tmp/onlyone-test-root.XXXXXX";
  if (mkdtemp(root.data()) == nullptr || chmod(root.c_str(), 0755) != 0) {
    perror("mkdtemp");
    abort();
  }
  struct Directory {
    const char* path;
    mode_t mode;
  };
  for (const Directory& directory :
       {Directory{"/run", 0755}, Directory{"/run/lock", 01777},
        Directory{"/run/user", 0755}, Directory{"/tmp", 01777}}) {
    const std::string path = root + directory.path;
    if (mkdir(path.c_str(), 0700) != 0 ||
        chmod(path.c_str(), directory.mode) != 0) {
      perror(path.c_str());
      abort();
    }
  }
  return root;
}

SharedCounters* MapSharedCounters() {
  void* memory = mmap(nullptr, sizeof(SharedCounters), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  return new (memory) SharedCounters;
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

ScopedEnv::ScopedEnv(const char* name, std::optional<std::string> value)
    : name_(name) {
  if (const char* old = getenv(name)) old_ = old;
  if (value.has_value()) {
    setenv(name, value->c_str(), 1);
  } else {
    unsetenv(name);
  }
}

ScopedEnv::~ScopedEnv() { Restore(); }

void ScopedEnv::Restore() {
  if (old_.has_value()) {
    setenv(name_, old_->c_str(), 1);
  } else {
    unsetenv(name_);
  }
}

ScopedTestRoot::ScopedTestRoot()
    : root_(MakeTestRoot()), env_("ONLYONE_TEST_ROOT", root_) {
  internal::RereadTestRootForTesting();
}

ScopedTestRoot::~ScopedTestRoot() {
  RemoveTree(root_);
  env_.Restore();
  internal::RereadTestRootForTesting();
}

std::string ScopedTestRoot::operator()(absl::string_view system_path) const {
  return absl::StrCat(root_, system_path);
}

std::string ScopedTestRoot::UserDirectory() const {
  return (*this)(absl::StrCat("/run/lock/onlyone-", geteuid()));
}

namespace {

// The test root of this test binary (see the header), made before main()
// unless the process inherited one (a re-executed test binary, or a program
// a test started), and removed only by the process that made it: forked
// children exit too.
class ProcessTestRoot {
 public:
  ProcessTestRoot() {
    if (getenv("ONLYONE_TEST_ROOT") != nullptr) return;
    root_ = MakeTestRoot();
    owner_ = getpid();
    setenv("ONLYONE_TEST_ROOT", root_.c_str(), 1);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // An ASan or TSan report ends the process without running destructors
    // (halt_on_error): remove the tree then too. (UBSan's runtime has a
    // death callback of its own, which this does not reach.)
    current_ = this;
    __sanitizer_set_death_callback([] { current_->Remove(); });
#endif
  }
  ~ProcessTestRoot() { Remove(); }

 private:
  void Remove() {
    if (!root_.empty() && getpid() == owner_) RemoveTree(root_);
  }

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  static inline ProcessTestRoot* current_ = nullptr;
#endif
  std::string root_;
  pid_t owner_ = 0;
};

const ProcessTestRoot process_test_root;

// Reports of the sanitizers (tools/test --config=asan|tsan) in the programs
// the tests start: see the header. Their runtimes read the options from the
// environment at start-up, so changing it here redirects the reports of the
// programs this process starts, and never its own.
class ChildSanitizerReports : public ::testing::Environment {
 public:
  // Adds log_path to the sanitizer options set for the test (.bazelrc),
  // unless they name one already (a program started by a test).
  static void Install() {
    const char* test_tmpdir = getenv("TEST_TMPDIR");
    if (test_tmpdir == nullptr) return;
    const std::string directory =
        absl::StrCat(test_tmpdir, "/child-sanitizer-reports");
    bool redirected = false;
    for (const char* name :
         {"ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) {
      const char* options = getenv(name);
      if (options == nullptr || absl::StrContains(options, "log_path=")) {
        continue;
      }
      setenv(name,
             absl::StrCat(options, ":log_path=", directory, "/report").c_str(),
             1);
      redirected = true;
    }
    if (!redirected) return;
    if (mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
      perror(directory.c_str());
      abort();
    }
    ::testing::AddGlobalTestEnvironment(new ChildSanitizerReports(directory));
  }

  // Fails the test binary for each report a started program wrote.
  void TearDown() override {
    std::vector<std::string> reports;
    if (DIR* listing = opendir(directory_.c_str())) {
      while (const struct dirent* entry = readdir(listing)) {
        if (entry->d_name[0] != '.') {
          reports.push_back(absl::StrCat(directory_, "/", entry->d_name));
        }
      }
      closedir(listing);
    }
    std::sort(reports.begin(), reports.end());
    for (const std::string& report : reports) {
      ADD_FAILURE() << "a program started by the tests reported a sanitizer "
                       "finding ("
                    << report << "):\n"
                    << ReadFileOrEmpty(report);
    }
  }

 private:
  explicit ChildSanitizerReports(std::string directory)
      : directory_(std::move(directory)) {}

  const std::string directory_;
};

const bool child_sanitizer_reports_installed =
    (ChildSanitizerReports::Install(), true);

}  // namespace

}  // namespace onlyone::testing
