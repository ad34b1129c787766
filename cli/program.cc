#include "cli/program.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/exit_codes.h"
#include "cli/supervisor.h"

namespace onlyone::cli {
namespace {

// 0 if `path` is a regular file we may execute; else the errno execve(2)
// would give.
int Executable(const std::string& path) {
  struct stat file;
  if (stat(path.c_str(), &file) != 0) return errno;
  if (!S_ISREG(file.st_mode)) return EACCES;  // what execve says of a directory
  // The effective ids decide, as they do for execve(2).
  if (faccessat(AT_FDCWD, path.c_str(), X_OK, AT_EACCESS) != 0) return errno;
  return 0;
}

std::string Absolute(const std::string& path) {
  if (absl::StartsWith(path, "/")) return path;
  absl::string_view relative(path);
  while (absl::ConsumePrefix(&relative, "./")) {
  }
  char directory[4096];
  if (getcwd(directory, sizeof directory) == nullptr) return path;
  return absl::StrCat(directory, std::string(directory) == "/" ? "" : "/",
                      relative);
}

std::string SearchPath() {
  if (const char* path = getenv("PATH")) return path;
  // What execvp(3) searches without PATH.
  const size_t size = confstr(_CS_PATH, nullptr, 0);
  std::string path(size, '\0');
  if (size == 0 || confstr(_CS_PATH, path.data(), size) == 0) {
    return "/bin:/usr/bin";
  }
  path.resize(size - 1);
  return path;
}

}  // namespace

int FindProgram(const std::string& name, std::string* path) {
  if (name.empty()) return ENOENT;
  if (absl::StrContains(name, '/')) {
    const int error = Executable(name);
    if (error == 0) *path = Absolute(name);
    return error;
  }
  int found_unusable = 0;
  for (absl::string_view directory : absl::StrSplit(SearchPath(), ':')) {
    const std::string candidate =
        absl::StrCat(directory.empty() ? "." : directory, "/", name);
    const int error = Executable(candidate);
    if (error == 0) {
      *path = Absolute(candidate);
      return 0;
    }
    // As execvp(3): a directory that is missing, or is not one, is skipped;
    // a file we may not execute is remembered in case nothing better comes.
    if (error != ENOENT && error != ENOTDIR && found_unusable == 0) {
      found_unusable = error;
    }
  }
  return found_unusable != 0 ? found_unusable : ENOENT;
}

int ExecInPlace(const std::string& path,
                const std::vector<std::string>& command,
                const std::vector<std::string>& environment,
                const sigset_t& signal_mask) {
  std::vector<char*> argv;
  for (const std::string& arg : command) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& entry : environment) {
    envp.push_back(const_cast<char*>(entry.c_str()));
  }
  envp.push_back(nullptr);
  sigset_t current;
  pthread_sigmask(SIG_SETMASK, &signal_mask, &current);
  execve(path.c_str(), argv.data(), envp.data());
  const int error = errno;
  pthread_sigmask(SIG_SETMASK, &current, nullptr);
  return error;
}

int ReportStartError(absl::string_view program, int error, std::ostream& err) {
  const std::string shown = ShellJoin({std::string(program)});
  if (error == ENOENT) {
    err << "onlyone: " << shown
        << (absl::StrContains(program, '/') ? ": no such file"
                                            : ": command not found")
        << "\n";
    return kExitNotFound;
  }
  if (error == EAGAIN || error == ENOMEM) {
    err << "onlyone: cannot start " << shown << ": " << strerror(error)
        << "\n";
    return kExitOsError;
  }
  err << "onlyone: " << shown << ": cannot execute: " << strerror(error)
      << "\n";
  return kExitCannotExecute;
}

}  // namespace onlyone::cli
