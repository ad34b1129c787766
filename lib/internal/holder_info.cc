#include "onlyone/internal/holder_info.h"

#include <string>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace onlyone {
namespace {

constexpr char kHolderTypeUrl[] = "type.onlyone/onlyone.HolderInfo";

// The payload is "key=value" lines, values C-escaped (so no line breaks);
// each "pid" line starts the next holder, whose fields follow it.
void AppendLine(std::string& out, absl::string_view key,
                absl::string_view value) {
  absl::StrAppend(&out, key, "=", absl::CEscape(value), "\n");
}

std::string Encode(const HolderInfo& holder) {
  std::string out;
  AppendLine(out, "resource", holder.resource);
  AppendLine(out, "known", holder.holders_known ? "1" : "0");
  AppendLine(out, "device", absl::StrCat(holder.device));
  AppendLine(out, "inode", absl::StrCat(holder.inode));
  for (const LockHolderProcess& process : holder.holders) {
    AppendLine(out, "pid", absl::StrCat(process.pid));
    AppendLine(out, "exclusive", process.exclusive ? "1" : "0");
    AppendLine(out, "name", process.name);
    AppendLine(out, "host", process.host);
  }
  return out;
}

bool ParseFlag(absl::string_view value, bool* flag) {
  if (value != "0" && value != "1") return false;
  *flag = value == "1";
  return true;
}

std::optional<HolderInfo> Decode(absl::string_view text) {
  HolderInfo holder;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const size_t equals = line.find('=');
    if (equals == absl::string_view::npos) return std::nullopt;
    const absl::string_view key = line.substr(0, equals);
    std::string value;
    if (!absl::CUnescape(line.substr(equals + 1), &value)) return std::nullopt;
    LockHolderProcess* process =
        holder.holders.empty() ? nullptr : &holder.holders.back();
    bool parsed = true;
    if (key == "resource") {
      holder.resource = std::move(value);
    } else if (key == "known") {
      parsed = ParseFlag(value, &holder.holders_known);
    } else if (key == "device") {
      parsed = absl::SimpleAtoi(value, &holder.device);
    } else if (key == "inode") {
      parsed = absl::SimpleAtoi(value, &holder.inode);
    } else if (key == "pid") {
      parsed = absl::SimpleAtoi(value, &holder.holders.emplace_back().pid);
    } else if (process == nullptr) {
      parsed = false;  // a holder's field before any "pid"
    } else if (key == "exclusive") {
      parsed = ParseFlag(value, &process->exclusive);
    } else if (key == "name") {
      process->name = std::move(value);
    } else if (key == "host") {
      process->host = std::move(value);
    }
    if (!parsed) return std::nullopt;
  }
  return holder;
}

}  // namespace

std::optional<HolderInfo> HolderFromStatus(const absl::Status& status) {
  // absl::optional: Debian's Abseil is not built with std::optional.
  absl::optional<absl::Cord> payload = status.GetPayload(kHolderTypeUrl);
  if (!payload.has_value()) return std::nullopt;
  return Decode(std::string(*payload));
}

void AttachHolder(absl::Status& status, const HolderInfo& holder) {
  status.SetPayload(kHolderTypeUrl, absl::Cord(Encode(holder)));
}

}  // namespace onlyone
