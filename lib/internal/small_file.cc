#include "onlyone/internal/small_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include "onlyone/internal/retry.h"

namespace onlyone::internal {

bool ReadSmallFile(absl::string_view path, size_t limit,
                   std::string* contents) {
  const std::string path_string(path);
  const int fd = open(path_string.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false;
  contents->clear();
  char buffer[8192];
  bool ok = true;
  while (contents->size() < limit) {
    const ssize_t got = RetryOnEintr([&] {
      return read(fd, buffer, std::min(sizeof buffer, limit - contents->size()));
    });
    if (got < 0) {
      ok = false;
      break;
    }
    if (got == 0) break;
    contents->append(buffer, static_cast<size_t>(got));
  }
  close(fd);
  return ok;
}

}  // namespace onlyone::internal
