#include "onlyone/internal/user_name.h"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/small_file.h"

namespace onlyone::internal {
namespace {

// /etc/passwd files larger than this are left to NSS.
constexpr size_t kMaxPasswdFileBytes = 4 << 20;

// The name /etc/passwd gives `uid`, when it lists it; a file too large to
// read whole is left to NSS.
std::optional<std::string> NameFromPasswdFile(uid_t uid) {
  std::string contents;
  if (!ReadSmallFile("/etc/passwd", kMaxPasswdFileBytes, &contents) ||
      contents.size() == kMaxPasswdFileBytes) {
    return std::nullopt;
  }
  return NameFromPasswdText(contents, uid);
}

}  // namespace

std::string UserName(uid_t uid) {
  if (std::optional<std::string> name = NameFromPasswdFile(uid)) {
    return *std::move(name);
  }
  long suggested = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(suggested > 0 ? static_cast<size_t>(suggested)
                                         : 16384);
  struct passwd entry;
  struct passwd* found = nullptr;
  for (;;) {
    const int error_number =
        getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found);
    if (error_number == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (error_number != 0 || found == nullptr) return "";
    return entry.pw_name;
  }
}

std::string DescribeUid(uid_t uid) {
  std::string name = UserName(uid);
  return name.empty() ? absl::StrCat("uid ", uid)
                      : absl::StrCat("uid ", uid, " (", name, ")");
}

std::optional<std::string> NameFromPasswdText(absl::string_view passwd,
                                              uid_t uid) {
  for (absl::string_view line : absl::StrSplit(passwd, '\n')) {
    const size_t name_end = line.find(':');
    if (name_end == 0 || name_end == absl::string_view::npos ||
        line[0] == '+' || line[0] == '-') {
      continue;
    }
    const size_t uid_start = line.find(':', name_end + 1);
    if (uid_start == absl::string_view::npos) continue;
    const size_t uid_end = line.find(':', uid_start + 1);
    if (uid_end == absl::string_view::npos) continue;
    uint32_t listed;
    if (absl::SimpleAtoi(line.substr(uid_start + 1, uid_end - uid_start - 1),
                         &listed) &&
        listed == uid) {
      return std::string(line.substr(0, name_end));
    }
  }
  return std::nullopt;
}

}  // namespace onlyone::internal
