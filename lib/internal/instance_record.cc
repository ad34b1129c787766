#include "onlyone/internal/instance_record.h"

#include <limits.h>
#include <sched.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/retry.h"

namespace onlyone::internal {
namespace {

// A torn read (a concurrent pwrite half done) is rare and short; a few
// immediate retries are enough, and a reader must never wait for a writer.
constexpr int kReadAttempts = 8;
// "onlyone-owner 1 65536 0123456789abcdef\n" and some slack.
constexpr size_t kMaxHeaderBytes = 64;

void AppendEscaped(absl::string_view value, std::string* out) {
  for (char c : value) {
    const unsigned char byte = static_cast<unsigned char>(c);
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (byte < 0x20 || byte == 0x7f) {
          absl::StrAppendFormat(out, "\\x%02x", byte);
        } else {
          out->push_back(c);
        }
    }
  }
}

bool Unescape(absl::string_view value, std::string* out) {
  out->clear();
  out->reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '\\') {
      out->push_back(value[i]);
      continue;
    }
    if (++i == value.size()) return false;
    switch (value[i]) {
      case '\\':
        out->push_back('\\');
        break;
      case 'n':
        out->push_back('\n');
        break;
      case 'r':
        out->push_back('\r');
        break;
      case 't':
        out->push_back('\t');
        break;
      case 'x': {
        uint32_t byte;
        if (value.size() - i < 3 ||
            !absl::SimpleHexAtoi(value.substr(i + 1, 2), &byte)) {
          return false;
        }
        out->push_back(static_cast<char>(byte));
        i += 2;
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

void AddLine(absl::string_view key, absl::string_view value,
             std::string* body) {
  absl::StrAppend(body, key, "=");
  AppendEscaped(value, body);
  body->push_back('\n');
}

bool ParseRecordTime(absl::string_view text, absl::Time* time) {
  std::string error;
  return absl::ParseTime(absl::RFC3339_full, text, time, &error);
}

// Reads from offset 0 until end of file or `limit` bytes.
bool ReadFromStart(int fd, size_t limit, std::string* contents) {
  contents->resize(limit);
  size_t filled = 0;
  while (filled < limit) {
    const ssize_t got = RetryOnEintr(
        [&] { return pread(fd, contents->data() + filled, limit - filled, filled); });
    if (got < 0) return false;
    if (got == 0) break;
    filled += static_cast<size_t>(got);
  }
  contents->resize(filled);
  return true;
}

}  // namespace

// RFC 3339 in UTC with a fixed six-digit fraction: records of one process
// then keep one length, and rewriting one needs no ftruncate(2). Written by
// hand for years 1970 to 9999, because every acquisition formats one time
// and absl::FormatTime's time zone machinery cost about a tenth of a warm
// acquisition; other times go through absl::FormatTime.
std::string FormatRecordTime(absl::Time time) {
  const int64_t micros = absl::ToUnixMicros(time);
  constexpr int64_t kMicrosPerDay = int64_t{86400} * 1000000;
  constexpr int64_t kDaysTo10000 = 2932897;  // 1970-01-01 .. 10000-01-01
  if (micros < 0 || micros / kMicrosPerDay >= kDaysTo10000) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%E6S%Ez", time,
                            absl::UTCTimeZone());
  }
  const int64_t days = micros / kMicrosPerDay;
  const int64_t of_day = micros % kMicrosPerDay;
  // Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil,
  // inverted), in eras of 400 years starting on March 1st.
  const int64_t shifted = days + 719468;
  const int64_t era = shifted / 146097;
  const int64_t day_of_era = shifted - era * 146097;
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 -
       day_of_era / 146096) /
      365;
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t month_index = (5 * day_of_year + 2) / 153;
  const int64_t day = day_of_year - (153 * month_index + 2) / 5 + 1;
  const int64_t month = month_index < 10 ? month_index + 3 : month_index - 9;
  const int64_t year = year_of_era + era * 400 + (month <= 2 ? 1 : 0);
  const int64_t seconds = of_day / 1000000;
  char text[] = "YYYY-MM-DDTHH:MM:SS.ffffff+00:00";
  auto put = [&text](size_t at, int64_t value, int digits) {
    for (int i = digits - 1; i >= 0; --i) {
      text[at + i] = static_cast<char>('0' + value % 10);
      value /= 10;
    }
  };
  put(0, year, 4);
  put(5, month, 2);
  put(8, day, 2);
  put(11, seconds / 3600, 2);
  put(14, seconds / 60 % 60, 2);
  put(17, seconds % 60, 2);
  put(20, of_day % 1000000, 6);
  return std::string(text, sizeof text - 1);
}

uint64_t Fnv1a64(absl::string_view bytes, uint64_t hash) {
  for (char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

bool TruncateCommandLine(std::vector<std::string>& arguments) {
  size_t total = 0;
  for (size_t i = 0; i < arguments.size(); ++i) {
    if (total + arguments[i].size() > kMaxCommandLineBytes) {
      arguments[i].resize(kMaxCommandLineBytes - total);
      arguments.resize(arguments[i].empty() ? i : i + 1);
      return true;
    }
    total += arguments[i].size();
  }
  return false;
}

EncodedIdentity EncodeIdentity(const OwnerRecord& record) {
  std::string body;
  body.reserve(512);
  AddLine("pid", absl::StrCat(record.pid), &body);
  AddLine("locker_pid", absl::StrCat(record.locker_pid), &body);
  AddLine("start_ticks", absl::StrCat(record.start_ticks), &body);
  if (record.process_start_time != absl::InfinitePast()) {
    AddLine("start_time", FormatRecordTime(record.process_start_time), &body);
  }
  AddLine("boot_id", record.boot_id, &body);
  AddLine("hostname", record.hostname, &body);
  AddLine("uid", absl::StrCat(record.uid), &body);
  AddLine("user", record.user, &body);
  AddLine("exe", record.executable, &body);
  for (const std::string& argument : record.command_line) {
    AddLine("arg", argument, &body);
  }
  if (record.command_line_truncated) AddLine("args_truncated", "1", &body);
  AddLine("version", record.version, &body);
  EncodedIdentity identity;
  identity.hash = Fnv1a64(body);
  identity.lines = std::move(body);
  return identity;
}

std::string EncodeOwnerRecord(const EncodedIdentity& identity,
                              absl::Time acquired_at) {
  // A formatted time needs no escaping: one append, on every acquisition.
  std::string acquired;
  if (acquired_at != absl::InfinitePast()) {
    acquired = absl::StrCat("acquired=", FormatRecordTime(acquired_at), "\n");
  }
  return absl::StrCat(kRecordMagic, " ", kRecordFormatVersion, " ",
                      identity.lines.size() + acquired.size(), " ",
                      absl::Hex(Fnv1a64(acquired, identity.hash),
                                absl::kZeroPad16),
                      "\n", identity.lines, acquired);
}

std::string EncodeOwnerRecord(const OwnerRecord& record) {
  return EncodeOwnerRecord(EncodeIdentity(record), record.acquired_at);
}

std::optional<OwnerRecord> DecodeOwnerRecord(absl::string_view contents) {
  const size_t newline = contents.find('\n');
  if (newline == absl::string_view::npos || newline > kMaxHeaderBytes) {
    return std::nullopt;
  }
  const std::vector<absl::string_view> header =
      absl::StrSplit(contents.substr(0, newline), ' ');
  size_t length;
  uint64_t checksum;
  if (header.size() != 4 || header[0] != kRecordMagic ||
      header[1] != absl::StrCat(kRecordFormatVersion) ||
      !absl::SimpleAtoi(header[2], &length) || length > kMaxRecordBodyBytes ||
      header[3].size() != 16 || !absl::SimpleHexAtoi(header[3], &checksum)) {
    return std::nullopt;
  }
  absl::string_view body = contents.substr(newline + 1);
  if (body.size() < length) return std::nullopt;
  body = body.substr(0, length);
  if (Fnv1a64(body) != checksum) return std::nullopt;
  if (!body.empty() && body.back() != '\n') return std::nullopt;

  OwnerRecord record;
  bool have_pid = false, have_ticks = false;
  std::string value;
  for (absl::string_view line : absl::StrSplit(body, '\n', absl::SkipEmpty())) {
    const size_t equals = line.find('=');
    if (equals == absl::string_view::npos) return std::nullopt;
    const absl::string_view key = line.substr(0, equals);
    if (!Unescape(line.substr(equals + 1), &value)) return std::nullopt;
    if (key == "pid") {
      have_pid = absl::SimpleAtoi(value, &record.pid) && record.pid > 0;
      if (!have_pid) return std::nullopt;
    } else if (key == "locker_pid") {
      if (!absl::SimpleAtoi(value, &record.locker_pid)) return std::nullopt;
    } else if (key == "start_ticks") {
      have_ticks = absl::SimpleAtoi(value, &record.start_ticks);
      if (!have_ticks) return std::nullopt;
    } else if (key == "start_time") {
      if (!ParseRecordTime(value, &record.process_start_time)) {
        return std::nullopt;
      }
    } else if (key == "boot_id") {
      record.boot_id = value;
    } else if (key == "hostname") {
      record.hostname = value;
    } else if (key == "uid") {
      if (!absl::SimpleAtoi(value, &record.uid)) return std::nullopt;
    } else if (key == "user") {
      record.user = value;
    } else if (key == "exe") {
      record.executable = value;
    } else if (key == "arg") {
      record.command_line.push_back(value);
    } else if (key == "args_truncated") {
      record.command_line_truncated = value == "1";
    } else if (key == "acquired") {
      if (!ParseRecordTime(value, &record.acquired_at)) return std::nullopt;
    } else if (key == "version") {
      record.version = value;
    }
  }
  if (!have_pid || !have_ticks || record.boot_id.empty()) return std::nullopt;
  if (record.locker_pid <= 0) record.locker_pid = record.pid;
  record.has_record = true;
  return record;
}

std::optional<OwnerRecord> ReadOwnerRecord(int fd) {
  std::string contents;
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    if (!ReadFromStart(fd, kMaxHeaderBytes + kMaxRecordBodyBytes, &contents)) {
      return std::nullopt;
    }
    if (contents.empty()) return std::nullopt;  // never written
    if (std::optional<OwnerRecord> record = DecodeOwnerRecord(contents)) {
      return record;
    }
    sched_yield();
  }
  return std::nullopt;
}

// Filesystems whose files are kernel interfaces, not data: writing a record
// into one would change a setting. /proc/sys files report size 0.
bool IsPseudoFilesystem(decltype(statfs::f_type) type) {
  constexpr decltype(statfs::f_type) kPseudo[] = {
      PROC_SUPER_MAGIC,   SYSFS_MAGIC,      CGROUP_SUPER_MAGIC,
      CGROUP2_SUPER_MAGIC, DEBUGFS_MAGIC,   TRACEFS_MAGIC,
      SECURITYFS_MAGIC,   BPF_FS_MAGIC,     EFIVARFS_MAGIC,
      PSTOREFS_MAGIC,     SELINUX_MAGIC,    SMACK_MAGIC,
      DEVPTS_SUPER_MAGIC, BINFMTFS_MAGIC,   0x62656570 /* configfs */,
      0x65735543 /* fusectl */};
  for (auto pseudo : kPseudo) {
    if (type == pseudo) return true;
  }
  return false;
}

// Whether root may write into `file` by its permission bits alone, as any
// user in its place could: the file is root's, or open to root's group or
// to everyone (a shared lock file, kSharedLockFileMode).
bool RootMayWriteWithoutPrivilege(const struct stat& file) {
  if (file.st_uid == 0 || (file.st_mode & S_IWOTH) != 0) return true;
  if ((file.st_mode & S_IWGRP) == 0) return false;
  if (file.st_gid == getegid()) return true;
  gid_t groups[NGROUPS_MAX];
  const int count = getgroups(NGROUPS_MAX, groups);
  for (int i = 0; i < count; ++i) {
    if (groups[i] == file.st_gid) return true;
  }
  return false;
}

absl::StatusOr<bool> MayHoldOwnerRecord(int fd, absl::string_view path,
                                        const struct stat& file) {
  // Root opens every file read-write. Another user's private file (one
  // planted in a shared directory at our lock path) is that user's, empty or
  // not, and a record there would hand them root's command line.
  if (geteuid() == 0 && !RootMayWriteWithoutPrivilege(file)) return false;
  if (file.st_size == 0) {
    struct statfs filesystem;
    if (fstatfs(fd, &filesystem) != 0) {
      return PosixError(absl::StrCat(path, ": fstatfs"), errno);
    }
    return !IsPseudoFilesystem(filesystem.f_type);
  }
  constexpr absl::string_view kStart = "onlyone-owner ";
  static_assert(kStart.size() == sizeof(kRecordMagic), "magic and a space");
  char start[kStart.size()];
  const ssize_t got =
      RetryOnEintr([&] { return pread(fd, start, sizeof start, 0); });
  if (got < 0) {
    return PosixError(absl::StrCat(path, ": reading the lock file"), errno);
  }
  return absl::string_view(start, static_cast<size_t>(got)) == kStart;
}

absl::StatusOr<bool> WriteOwnerRecord(int fd, absl::string_view path,
                                      absl::string_view contents,
                                      const struct stat& file,
                                      LockFilePlace place) {
  if (!S_ISREG(file.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " is not a regular file; not writing an owner record into it"));
  }
  if (file.st_nlink != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has ", file.st_nlink,
        " hard links; a lock file has exactly one, and an owner record is "
        "never written through a link that may lead to another file"));
  }
  if (place == LockFilePlace::kElsewhere) {
    absl::StatusOr<bool> ours = MayHoldOwnerRecord(fd, path, file);
    if (!ours.ok() || !*ours) return ours;
  }
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t wrote = RetryOnEintr([&] {
      return pwrite(fd, contents.data() + written, contents.size() - written,
                    written);
    });
    if (wrote < 0) {
      const int error_number = errno;
      // Opened read-only: another user's lock file we may lock, not write.
      if (error_number == EBADF && written == 0) return false;
      return PosixError(absl::StrCat(path, ": writing the owner record"),
                        error_number);
    }
    written += static_cast<size_t>(wrote);
  }
  // Readers ignore what follows the record; cutting it off keeps the file
  // readable for people too.
  if (file.st_size > static_cast<off_t>(contents.size()) &&
      ftruncate(fd, static_cast<off_t>(contents.size())) != 0) {
    return PosixError(absl::StrCat(path, ": truncating the owner record"),
                      errno);
  }
  return true;
}

absl::StatusOr<bool> WriteOwnerRecord(int fd, absl::string_view path,
                                      const OwnerRecord& record,
                                      LockFilePlace place) {
  struct stat file;
  if (fstat(fd, &file) != 0) {
    return PosixError(absl::StrCat(path, ": fstat"), errno);
  }
  return WriteOwnerRecord(fd, path, EncodeOwnerRecord(record), file, place);
}

}  // namespace onlyone::internal
