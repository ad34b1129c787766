#include "tests/named_holder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace onlyone::testing {

Child HoldLockAs(const std::string& path, const std::string& process_name,
                 Pipe& ready, Pipe& release) {
  return Child::Fork([&]() -> int {
    if (prctl(PR_SET_NAME, process_name.c_str(), 0, 0, 0) != 0) {
      perror("prctl(PR_SET_NAME)");
      return 1;
    }
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
      perror(path.c_str());
      return 2;
    }
    ready.Send();
    release.Receive(absl::Minutes(10));
    return 0;
  });
}

std::string TerminalControlsIn(absl::string_view text) {
  std::string found;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char byte = static_cast<unsigned char>(text[i]);
    const unsigned char next =
        i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if ((byte < 0x20 && byte != '\n') || byte == 0x7f) {
      absl::StrAppendFormat(&found, "%s0x%02x", found.empty() ? "" : " ", byte);
    } else if (byte == 0xc2 && next >= 0x80 && next <= 0x9f) {
      absl::StrAppendFormat(&found, "%sU+00%02X", found.empty() ? "" : " ",
                            next);
      ++i;
    }
  }
  return found;
}

}  // namespace onlyone::testing
