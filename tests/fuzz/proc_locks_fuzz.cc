// Fuzz target: the /proc/locks (and fdinfo "lock:") parser,
// internal::ParseFlockHolders (lib/internal/proc_locks.h).
//
// The input is a file id (device numbers, inode), a pid and a lock kind,
// then the text. Properties: parsing any text is safe; the parser reads
// lines independently (the text gives what its lines give one by one); a
// granted flock(2) line for the file, added after any text, adds exactly
// its holder, in /proc/locks' form and in fdinfo's; a waiter's line adds
// nothing.

#include <sys/sysmacros.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/proc_locks.h"
#include "tests/fuzz/fuzz_support.h"

namespace onlyone::fuzz {
namespace {

using ::onlyone::internal::FlockHolder;
using ::onlyone::internal::ParseFlockHolders;

bool SameHolders(const std::vector<FlockHolder>& a,
                 const std::vector<FlockHolder>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].pid != b[i].pid || a[i].exclusive != b[i].exclusive) return false;
  }
  return true;
}

std::string Show(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

void Check(FuzzInput input) {
  // Linux's device numbers: 12-bit major, 20-bit minor.
  const unsigned major_number = input.Integer() % 0x1000;
  const unsigned minor_number = input.Integer() % 0x100000;
  const uint64_t inode = input.Integer();
  const pid_t pid = static_cast<pid_t>(input.Integer() % 0x400000);
  const bool exclusive = input.Bool();
  const absl::string_view text = input.Rest();
  const dev_t device = makedev(major_number, minor_number);

  const std::vector<FlockHolder> holders =
      ParseFlockHolders(text, device, inode);
  std::vector<FlockHolder> line_by_line;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    for (const FlockHolder& holder : ParseFlockHolders(line, device, inode)) {
      line_by_line.push_back(holder);
    }
  }
  FUZZ_CHECK(SameHolders(holders, line_by_line), Show(text));

  // As Linux prints them (fs/locks.c, lock_get_status()).
  const std::string lock = absl::StrFormat(
      "FLOCK  ADVISORY  %s %d %02x:%02x:%u 0 EOF",
      exclusive ? "WRITE" : "READ ", pid, major_number, minor_number, inode);
  std::vector<FlockHolder> expected = holders;
  expected.push_back(FlockHolder{pid, exclusive});
  for (const std::string& line :
       {absl::StrCat("7: ", lock), absl::StrCat("lock:\t7: ", lock)}) {
    const std::string with_holder = absl::StrCat(text, "\n", line, "\n");
    FUZZ_CHECK(
        SameHolders(ParseFlockHolders(with_holder, device, inode), expected),
        Show(with_holder));
  }
  const std::string with_waiter = absl::StrCat(text, "\n7: -> ", lock, "\n");
  FUZZ_CHECK(
      SameHolders(ParseFlockHolders(with_waiter, device, inode), holders),
      Show(with_waiter));
}

}  // namespace
}  // namespace onlyone::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onlyone::fuzz::Check(onlyone::fuzz::FuzzInput(data, size));
  return 0;
}
