#include "cli/commands.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/flag_types.h"
#include "cli/program.h"
#include "cli/supervisor.h"
#include "onlyone/flock_trust.h"
#include "onlyone/internal/printable.h"
#include "onlyone/lock_backend.h"
#include "onlyone/lock_holder.h"
#include "onlyone/redis_lock.h"
#include "onlyone/scoped_file_lock.h"
#include "onlyone/scoped_semaphore.h"
#include "onlyone/soft_file_lock.h"

namespace onlyone::cli {
namespace {

// The lock `onlyone run` holds for the rest of the process (see Run()).
// volatile: nothing reads it, and the compiler would drop a pointer that is
// only written, and with it what shows the leak checker the object is kept.
HeldLock* volatile held_for_the_command = nullptr;

using internal::Printable;

// Prints a message of the library (or built from its parts) on one line.
// The library makes the fields it did not write Printable() where it builds
// a message, but not every message it returns does (a refused replace quotes
// the record's host and boot id as they are), and a lock path may contain a
// newline: printing the whole message through the rule again keeps the
// terminal safe and, the rule being idempotent, escapes nothing twice.
void PrintMessage(std::ostream& err, absl::string_view message) {
  err << "onlyone: " << Printable(message) << "\n";
}

void PrintError(std::ostream& err, const absl::Status& status) {
  PrintMessage(err, status.message());
}

// What a lock is called in messages: its name, or its path.
const std::string& Label(const LockTarget& target) {
  return target.lock_path.empty() ? target.name : target.lock_path;
}

InstanceOptions OptionsFor(const LockTarget& target) {
  InstanceOptions options;
  options.scope = target.scope;
  return options;
}

absl::StatusOr<std::string> LockPathOf(const LockTarget& target) {
  if (!target.lock_path.empty()) return target.lock_path;
  return SingleInstance::LockPath(target.name, OptionsFor(target));
}

absl::StatusOr<std::optional<InstanceInfo>> HolderOf(
    const LockTarget& target) {
  if (!target.lock_path.empty()) {
    return SingleInstance::HolderAtPath(target.lock_path);
  }
  return SingleInstance::Holder(target.name, OptionsFor(target));
}

nlohmann::ordered_json TimeOrNull(absl::Time time) {
  if (time == absl::InfinitePast() || time == absl::InfiniteFuture()) {
    return nullptr;
  }
  return absl::FormatTime(absl::RFC3339_full, time, absl::UTCTimeZone());
}

std::string LocalTime(absl::Time time) {
  if (time == absl::InfinitePast() || time == absl::InfiniteFuture()) {
    return "-";
  }
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", time, absl::LocalTimeZone());
}

// "2026-11-22 03:00:01 (2h5m ago)".
std::string LocalTimeAndAge(absl::Time time) {
  std::string text = LocalTime(time);
  if (text == "-") return text;
  const absl::Duration age = absl::Trunc(absl::Now() - time, absl::Seconds(1));
  if (age >= absl::Seconds(1)) {
    absl::StrAppend(&text, " (", absl::FormatDuration(age), " ago)");
  } else if (age >= absl::ZeroDuration()) {
    absl::StrAppend(&text, " (just now)");
  }
  return text;
}

// A process's command as a shell would need it typed; its name when its
// command line is not readable.
std::string CommandOf(const HolderProcess& process) {
  if (process.command_line.empty()) return process.name;
  return ShellJoin(process.command_line);
}

// "pid 4711 (sleep), started 2026-11-22 03:00:01 (1h2m3s ago)".
std::string DescribeSlotHolder(const SemaphoreSlotHolder& holder) {
  std::string text = absl::StrCat("pid ", holder.pid);
  if (!holder.command.empty()) {
    absl::StrAppend(&text, " (", holder.command, ")");
  }
  if (holder.started.has_value()) {
    absl::StrAppend(&text, ", started ", LocalTimeAndAge(*holder.started));
  }
  return text;
}

// What the holder runs: the record's command (for `onlyone run`, COMMAND),
// or without a record the command line of the one live process holding the
// lock; "" when unknown.
std::string CommandOf(const InstanceInfo& holder) {
  if (holder.has_record) {
    if (holder.command_line.empty()) return holder.executable;
    return ShellJoin(holder.command_line);
  }
  if (holder.processes.size() == 1) return CommandOf(holder.processes.front());
  return "";
}

// "pid 4711", or "pids 10, 11" for several live holders without a record.
std::string PidsOf(const InstanceInfo& holder) {
  if (holder.has_record || holder.processes.size() <= 1) {
    return absl::StrCat("pid ", holder.pid);
  }
  std::vector<std::string> pids;
  for (const HolderProcess& process : holder.processes) {
    pids.push_back(absl::StrCat(process.pid));
  }
  return absl::StrCat("pids ", absl::StrJoin(pids, ", "));
}

// "inherited from pid 21760, which no longer holds it", or "".
std::string InheritedFrom(const InstanceInfo& holder) {
  if (holder.inherited_from_pid == 0) return "";
  return absl::StrCat("inherited from pid ", holder.inherited_from_pid,
                      ", which no longer holds it");
}

// Prints rows as columns separated by two spaces; the last column is not
// padded. Every cell is shown Printable(): cells hold names, paths and
// record fields that other users chose.
void PrintColumns(std::ostream& out,
                  const std::vector<std::vector<std::string>>& raw_rows) {
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> widths;
  for (const auto& raw_row : raw_rows) {
    std::vector<std::string>& row = rows.emplace_back();
    for (const std::string& cell : raw_row) row.push_back(Printable(cell));
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i + 1 == row.size()) {
        absl::StrAppend(&line, row[i]);
      } else {
        absl::StrAppend(&line, row[i],
                        std::string(widths[i] - row[i].size() + 2, ' '));
      }
    }
    out << line << "\n";
  }
}

// "03:00:01" today, "2026-11-21 03:00:01" before.
std::string ClockTime(absl::Time time) {
  const absl::TimeZone zone = absl::LocalTimeZone();
  const auto day = [&](absl::Time t) {
    return absl::FormatTime("%Y-%m-%d", t, zone);
  };
  return absl::FormatTime(day(time) == day(absl::Now()) ? "%H:%M:%S"
                                                        : "%Y-%m-%d %H:%M:%S",
                          time, zone);
}

// "pid 4711 (backup.sh) since 03:00:01", for the wait notice.
std::string WhoHolds(const InstanceInfo& holder) {
  std::string who;
  if (!holder.has_record && holder.processes.size() > 1) {
    std::vector<std::string> each;
    for (const HolderProcess& process : holder.processes) {
      each.push_back(absl::StrCat(process.pid, " (", CommandOf(process), ")"));
    }
    who = absl::StrCat("pids ", absl::StrJoin(each, ", "));
  } else {
    who = absl::StrCat("pid ", holder.pid);
    if (std::string command = CommandOf(holder); !command.empty()) {
      absl::StrAppend(&who, " (", command, ")");
    }
  }
  if (holder.has_record && holder.acquired_at != absl::InfinitePast()) {
    absl::StrAppend(&who, " since ", ClockTime(holder.acquired_at));
  }
  return who;
}

// How many of slots 0 .. slots-1 `holders` hold.
int HeldSlots(const std::vector<SemaphoreSlotHolder>& holders, int slots) {
  absl::flat_hash_set<int> held;
  for (const SemaphoreSlotHolder& holder : holders) {
    if (holder.slot < slots) held.insert(holder.slot);
  }
  return static_cast<int>(held.size());
}

int HeldSlots(const std::string& path, int slots) {
  return HeldSlots(ScopedSemaphore::Holders(path, slots), slots);
}

// The "name" of status and list --json: null for a --lock PATH.
nlohmann::ordered_json NameJson(absl::string_view name) {
  return name.empty() ? nlohmann::ordered_json(nullptr)
                      : nlohmann::ordered_json(std::string(name));
}

// The first rows of status: the name and scope; none for a --lock PATH.
std::vector<std::vector<std::string>> NameRows(const LockTarget& target) {
  if (target.name.empty()) return {};
  return {{"name:", target.name},
          {"scope:", std::string(ScopeName(target.scope))}};
}

// The "scope" of status --json: the scope's name, null for a --lock PATH.
nlohmann::ordered_json ScopeJson(const LockTarget& target) {
  return target.lock_path.empty()
             ? nlohmann::ordered_json(std::string(ScopeName(target.scope)))
             : nlohmann::ordered_json(nullptr);
}

// A counting semaphore of a scope, found by List().
struct ListedSemaphore {
  std::string name;  // NAME, its files being NAME.00.lock, ...
  std::string path;  // InstanceSemaphorePath(NAME)
  int slots = 0;     // as its slot-count record says
};

// The semaphore whose slot file or gate `instance` (a lock file List()
// found) is, when that semaphore has a slot-count record; nullopt for any
// other lock.
std::optional<ListedSemaphore> SemaphoreOf(const ListedInstance& instance,
                                           Scope scope) {
  const absl::string_view file_name = instance.name;
  const size_t dot = file_name.rfind('.');
  if (dot == absl::string_view::npos || dot == 0) return std::nullopt;
  ListedSemaphore semaphore;
  semaphore.name = std::string(file_name.substr(0, dot));
  InstanceOptions placement;
  placement.scope = scope;
  absl::StatusOr<std::string> path =
      InstanceSemaphorePath(semaphore.name, placement);
  if (!path.ok()) return std::nullopt;
  int slot;
  const bool slot_file =
      absl::SimpleAtoi(file_name.substr(dot + 1), &slot) && slot >= 0 &&
      slot < kMaxSemaphoreSlots &&
      ScopedSemaphore::SlotPath(*path, slot) == instance.lock_path;
  if (!slot_file && ScopedSemaphore::GatePath(*path) != instance.lock_path) {
    return std::nullopt;
  }
  absl::StatusOr<std::optional<int>> slots =
      ScopedSemaphore::RecordedSlots(*path);
  if (!slots.ok() || !slots->has_value()) return std::nullopt;
  semaphore.path = *std::move(path);
  semaphore.slots = **slots;
  return semaphore;
}

// onlyone status --slots N.
int SemaphoreStatus(const StatusRequest& request, std::ostream& out,
                    std::ostream& err) {
  const LockTarget& target = request.target;
  absl::StatusOr<std::string> path = SemaphorePathOf(target);
  if (!path.ok()) {
    PrintError(err, path.status());
    return ExitCodeForError(path.status());
  }
  const std::vector<SemaphoreSlotHolder> holders =
      ScopedSemaphore::Holders(*path, target.slots);
  const int held = HeldSlots(holders, target.slots);
  if (request.json) {
    nlohmann::ordered_json json;
    json["name"] = NameJson(target.name);
    json["scope"] = ScopeJson(target);
    const nlohmann::ordered_json semaphore =
        SemaphoreToJson(*path, target.slots, holders);
    for (const auto& [key, value] : semaphore.items()) json[key] = value;
    out << json.dump(2) << "\n";
  } else {
    std::vector<std::vector<std::string>> rows = NameRows(target);
    rows.push_back({"semaphore:", *path});
    rows.push_back(
        {"state:", absl::StrCat(held, " of ", target.slots, " permits held")});
    for (int slot = 0; slot < target.slots; ++slot) {
      bool free = true;
      for (const SemaphoreSlotHolder& holder : holders) {
        if (holder.slot != slot) continue;
        free = false;
        rows.push_back(
            {absl::StrCat("slot ", slot, ":"), DescribeSlotHolder(holder)});
      }
      if (free) rows.push_back({absl::StrCat("slot ", slot, ":"), "free"});
    }
    for (const SemaphoreSlotHolder& holder : holders) {
      if (holder.slot < target.slots) continue;
      rows.push_back(
          {absl::StrCat("slot ", holder.slot, ":"),
           absl::StrCat(DescribeSlotHolder(holder), " (beyond ", target.slots,
                        " slots: a caller uses a larger count)")});
    }
    PrintColumns(out, rows);
  }
  return held >= target.slots ? kExitOk : kExitFree;
}

// "pid 4711 (onlyone run ... -- backup.sh) on host build7 since 03:00:01",
// for the wait notice; "an unreadable record" when the record cannot be
// read.
std::string WhoHoldsSoft(const SoftLockHolder& holder) {
  if (!holder.record_readable) return "an unreadable record";
  std::string who = absl::StrCat("pid ", holder.pid);
  if (!holder.command_line.empty()) {
    absl::StrAppend(&who, " (", ShellJoin(holder.command_line), ")");
  }
  absl::StrAppend(&who, " on host ", holder.host);
  if (holder.since != absl::InfinitePast()) {
    absl::StrAppend(&who, " since ", ClockTime(holder.since));
  }
  return who;
}

// Status and wait's look at a soft lock: its holder, nullopt when free.
absl::StatusOr<std::optional<SoftLockHolder>> SoftHolderOf(
    const LockTarget& target) {
  return SoftFileLock::Holder(target.lock_path, SoftOptionsOf(target));
}

// "3s", for heartbeat ages: whole seconds above one, else milliseconds.
std::string Age(absl::Duration age) {
  return absl::FormatDuration(absl::Trunc(
      age, age >= absl::Seconds(1) ? absl::Seconds(1) : absl::Milliseconds(1)));
}

// onlyone status --soft: the soft lock at --lock PATH and its holder.
int SoftStatus(const StatusRequest& request, std::ostream& out,
               std::ostream& err) {
  const LockTarget& target = request.target;
  absl::StatusOr<std::optional<SoftLockHolder>> found = SoftHolderOf(target);
  if (!found.ok()) {
    PrintError(err, found.status());
    return ExitCodeForError(found.status());
  }
  const std::optional<SoftLockHolder>& holder = *found;
  if (request.json) {
    nlohmann::ordered_json json;
    json["name"] = nullptr;
    json["scope"] = nullptr;
    json["lock_path"] = target.lock_path;
    json["kind"] = "soft";
    json["stale_after_seconds"] = absl::ToDoubleSeconds(target.stale_after);
    json["held"] = holder.has_value();
    json["holder"] = holder.has_value() ? SoftHolderToJson(*holder)
                                        : nlohmann::ordered_json(nullptr);
    out << json.dump(2) << "\n";
    return holder.has_value() ? kExitOk : kExitFree;
  }
  std::vector<std::vector<std::string>> rows = {{"lock:", target.lock_path},
                                                {"kind:", "soft"}};
  if (!holder.has_value()) {
    rows.push_back({"state:", "free"});
  } else {
    if (holder->record_readable) {
      std::string state = absl::StrCat("held by pid ", holder->pid, " on host ",
                                       holder->host);
      if (holder->on_this_host) {
        absl::StrAppend(&state, holder->alive ? " (this host, alive)"
                                              : " (this host, gone)");
      }
      rows.push_back({"state:", state});
      rows.push_back({"command:", ShellJoin(holder->command_line)});
      rows.push_back({"since:", LocalTimeAndAge(holder->since)});
      rows.push_back({"host:", holder->host});
    } else {
      rows.push_back({"state:", "held (its record cannot be read)"});
    }
    rows.push_back({"heartbeat:", absl::StrCat(Age(holder->heartbeat_age),
                                               " ago")});
    std::string stale = "yes: the next taker breaks it";
    if (!holder->stale) {
      stale = holder->on_this_host
                  ? "no: its holder lives on this host"
                  : absl::StrCat("no: stale after ",
                                 absl::FormatDuration(target.stale_after),
                                 " without a heartbeat");
    }
    rows.push_back({"stale:", stale});
  }
  PrintColumns(out, rows);
  return holder.has_value() ? kExitOk : kExitFree;
}

// "slot 0: pid 4711 (sleep), started ..., slot 1: ...": the semaphore's
// holders, as /proc shows them.
std::string SlotHolders(const std::vector<SemaphoreSlotHolder>& holders) {
  std::vector<std::string> each;
  for (const SemaphoreSlotHolder& holder : holders) {
    each.push_back(
        absl::StrCat("slot ", holder.slot, ": ", DescribeSlotHolder(holder)));
  }
  return absl::StrJoin(each, ", ");
}

// How long a wait took, to the millisecond, or to the microsecond when it
// took less (a hand-off can): never a bare "0".
std::string FormatWaited(absl::Duration waited) {
  return absl::FormatDuration(absl::Trunc(
      waited, waited < absl::Milliseconds(1) ? absl::Microseconds(1)
                                             : absl::Milliseconds(1)));
}

// Who holds the lock now, for the wait notice; "" when nobody can be named.
std::string WhoHoldsNow(const LockTarget& target, const std::string& resource) {
  switch (KindOf(target)) {
    case LockKind::kInstance: {
      absl::StatusOr<std::optional<InstanceInfo>> holder = HolderOf(target);
      if (!holder.ok() || !holder->has_value()) return "";
      return WhoHolds(**holder);
    }
    case LockKind::kSemaphore:
      return SlotHolders(ScopedSemaphore::Holders(resource, target.slots));
    case LockKind::kSoft: {
      absl::StatusOr<std::optional<SoftLockHolder>> holder =
          SoftHolderOf(target);
      if (!holder.ok() || !holder->has_value()) return "";
      return WhoHoldsSoft(**holder);
    }
    case LockKind::kRedis: {
      absl::StatusOr<std::optional<RedisLockHolder>> holder =
          FindRedisLockHolder(target.name, RedisOptionsOf(target));
      if (!holder.ok() || !holder->has_value()) return "";
      return (*holder)->Describe();
    }
  }
  return "";
}

// Acquire() for a request that waits, telling the terminal: tries once, and
// if the lock is held says whom it waits for, waits for the rest of the
// time, and says when it has the lock.
absl::StatusOr<std::unique_ptr<HeldLock>> AcquireTellingTheWait(
    const RunRequest& request, const LockChoice& lock, AcquireOptions options,
    std::ostream& err) {
  const absl::Time start = absl::Now();
  AcquireOptions once = options;
  once.timeout = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<HeldLock>> held =
      lock.backend->Acquire(lock.resource, once);
  if (held.ok() || !absl::IsUnavailable(held.status())) return held;
  const std::string label = Printable(Label(request.target));
  if (std::string who = WhoHoldsNow(request.target, lock.resource);
      !who.empty()) {
    err << "onlyone: waiting for "
        << (request.target.slots > 0 ? "a permit of " : "") << label
        << ", held by " << Printable(who);
    if (options.timeout != absl::InfiniteDuration()) {
      err << " (giving up after " << absl::FormatDuration(options.timeout)
          << ")";
    }
    err << "\n";
  }
  if (options.timeout != absl::InfiniteDuration()) {
    options.timeout =
        std::max(options.timeout - (absl::Now() - start), absl::ZeroDuration());
  }
  held = lock.backend->Acquire(lock.resource, options);
  if (held.ok()) {
    err << "onlyone: took " << (request.target.slots > 0 ? "a permit of " : "")
        << label << " after waiting "
        << FormatWaited(absl::Now() - start) << "\n";
  }
  return held;
}

// For a flock(2)-based lock at --lock PATH (the lock, or a semaphore's
// permits next to it): one line on stderr when the filesystem's kernel
// locks may exclude only this machine or nobody (lib/flock_trust.h). A
// check that cannot be made says nothing: it is advice, and the lock
// itself reports the errors that matter.
void WarnIfFlockUntrusted(const LockTarget& target, std::ostream& err) {
  if (target.lock_path.empty() || KindOf(target) == LockKind::kSoft) return;
  // Most runs stop here: one statfs(2) instead of reading mountinfo.
  if (!FlockTrustNeedsChecking(target.lock_path)) return;
  absl::StatusOr<FlockTrust> trust = CheckFlockTrust(target.lock_path);
  if (!trust.ok() || trust->trusted) return;
  PrintMessage(err, absl::StrCat("warning: ", target.lock_path, " is on ",
                                 trust->filesystem_type, " at ",
                                 trust->mount_point, ", where flock(2) cannot "
                                 "be trusted (", trust->reason,
                                 "); use --soft for a lock that holds there"));
}

// Reports a refused acquisition: the conflict code for a lock held
// elsewhere (printing the one-line reason unless quiet), the error's code
// otherwise.
int Refuse(const RunRequest& request, const absl::Status& status,
           std::ostream& err) {
  // A refused replacement (FailedPrecondition) is a conflict too: the
  // library's refusals carry the holder, an unsafe directory's does not.
  // A Redis lock's refusals always carry the holder, and its Unavailable
  // without one is an unreachable server, an error.
  const bool redis = KindOf(request.target) == LockKind::kRedis;
  const bool conflict = (!redis && (absl::IsUnavailable(status) ||
                                    absl::IsDeadlineExceeded(status))) ||
                        HolderFromStatus(status).has_value();
  if (!conflict) {
    PrintError(err, status);
    return ExitCodeForError(status);
  }
  // --conflict-exit-code 0 is a quiet skip, for cron: say nothing unless
  // asked to.
  const bool silent = request.quiet ||
                      (request.conflict_exit_code == 0 && !request.verbose);
  if (silent) return request.conflict_exit_code;
  PrintMessage(err, status.message());
  return request.conflict_exit_code;
}

// --redis: the Redis lease's status, list and wait (lib/redis_lock.h).

// The "holder" of status and list --json for a Redis lock.
nlohmann::ordered_json RedisHolderToJson(const RedisLockHolder& holder) {
  nlohmann::ordered_json json;
  json["host"] = holder.host;
  json["pid"] = holder.pid;
  json["since"] = TimeOrNull(holder.since);
  json["command"] = holder.command;
  json["fencing_token"] = holder.fencing_token;
  json["lease_left_ms"] =
      holder.lease_left == absl::InfiniteDuration()
          ? nlohmann::ordered_json(nullptr)
          : nlohmann::ordered_json(absl::ToInt64Milliseconds(holder.lease_left));
  return json;
}

std::string LeaseLeft(const RedisLockHolder& holder) {
  if (holder.lease_left == absl::InfiniteDuration()) return "no expiry";
  return absl::FormatDuration(
      absl::Trunc(holder.lease_left, absl::Milliseconds(1)));
}

int RedisStatus(const StatusRequest& request, std::ostream& out,
                std::ostream& err) {
  const LockTarget& target = request.target;
  absl::StatusOr<std::optional<RedisLockHolder>> found =
      FindRedisLockHolder(target.name, RedisOptionsOf(target));
  if (!found.ok()) {
    PrintError(err, found.status());
    return ExitCodeForError(found.status());
  }
  const std::optional<RedisLockHolder>& holder = *found;
  if (request.json) {
    nlohmann::ordered_json json;
    json["name"] = target.name;
    json["held"] = holder.has_value();
    json["holder"] = holder.has_value() ? RedisHolderToJson(*holder)
                                        : nlohmann::ordered_json(nullptr);
    out << json.dump(2) << "\n";
  } else {
    std::vector<std::vector<std::string>> rows = {{"name:", target.name}};
    if (!holder.has_value()) {
      rows.push_back({"state:", "free"});
    } else {
      rows.push_back({"state:", "held"});
      rows.push_back({"host:", holder->host});
      rows.push_back({"pid:", absl::StrCat(holder->pid)});
      rows.push_back({"since:", LocalTimeAndAge(holder->since)});
      rows.push_back({"command:", holder->command});
      rows.push_back({"token:", absl::StrCat(holder->fencing_token)});
      rows.push_back({"ttl:", LeaseLeft(*holder)});
    }
    PrintColumns(out, rows);
  }
  return holder.has_value() ? kExitOk : kExitFree;
}

int RedisList(const ListRequest& request, std::ostream& out,
              std::ostream& err) {
  RedisLockOptions options;
  options.server = request.redis_server;
  options.password_file = request.redis_password_file;
  absl::StatusOr<std::vector<RedisLockHolder>> listed =
      ListRedisLocks(options);
  if (!listed.ok()) {
    PrintError(err, listed.status());
    return ExitCodeForError(listed.status());
  }
  if (request.json) {
    nlohmann::ordered_json json;
    json["locks"] = nlohmann::ordered_json::array();
    for (const RedisLockHolder& holder : *listed) {
      nlohmann::ordered_json lock;
      lock["name"] = holder.name;
      lock["held"] = true;
      lock["holder"] = RedisHolderToJson(holder);
      json["locks"].push_back(lock);
    }
    out << json.dump(2) << "\n";
    return kExitOk;
  }
  if (listed->empty()) {
    out << "no locks held on the server\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "HOST", "PID", "SINCE", "TOKEN", "TTL", "COMMAND"}};
  for (const RedisLockHolder& holder : *listed) {
    rows.push_back({holder.name, holder.host, absl::StrCat(holder.pid),
                    LocalTime(holder.since),
                    absl::StrCat(holder.fencing_token), LeaseLeft(holder),
                    holder.command.empty() ? "-" : holder.command});
  }
  PrintColumns(out, rows);
  return kExitOk;
}

// Like the file lock's wait: takes the lock the moment it is free and
// releases it at once (which uses up one fencing token); a free lock is
// not touched.
int RedisWait(const WaitRequest& request, std::ostream& err) {
  const LockTarget& target = request.target;
  absl::StatusOr<std::optional<RedisLockHolder>> found =
      FindRedisLockHolder(target.name, RedisOptionsOf(target));
  if (!found.ok()) {
    PrintError(err, found.status());
    return ExitCodeForError(found.status());
  }
  if (!found->has_value()) return kExitOk;
  AcquireOptions options;
  options.timeout = request.timeout;
  absl::StatusOr<std::unique_ptr<HeldLock>> lock =
      ProbeBackend(target)->Acquire(target.name, options);
  if (!lock.ok()) {
    PrintError(err, lock.status());
    return HolderFromStatus(lock.status()).has_value()
               ? kExitConflict
               : ExitCodeForError(lock.status());
  }
  if (absl::Status released = (*lock)->Release(); !released.ok()) {
    PrintError(err, released);
    return ExitCodeForError(released);
  }
  return kExitOk;
}

}  // namespace

std::string NameFromCommand(absl::string_view program) {
  while (!program.empty() && program.back() == '/') program.remove_suffix(1);
  if (size_t slash = program.rfind('/'); slash != absl::string_view::npos) {
    program.remove_prefix(slash + 1);
  }
  // The library's rule decides, character by character (after a '_', which
  // a name may hold anywhere) and then for the length.
  std::string name;
  for (char c : program) {
    const char probe[] = {'_', c};
    name += ValidateInstanceName(absl::string_view(probe, 2)).ok() ? c : '_';
  }
  while (!name.empty() && !ValidateInstanceName(name).ok()) name.pop_back();
  return name;
}

int ExitCodeForError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:
      return kExitSoftware;
    default:
      return kExitOsError;
  }
}

nlohmann::ordered_json HolderToJson(const InstanceInfo& holder) {
  nlohmann::ordered_json json;
  json["pid"] = holder.pid;
  json["has_record"] = holder.has_record;
  if (!holder.has_record) {
    for (const char* field :
         {"process_start_time", "acquired_at", "boot_id", "hostname", "uid",
          "user", "executable", "command_line", "version"}) {
      json[field] = nullptr;
    }
  } else {
    json["process_start_time"] = TimeOrNull(holder.process_start_time);
    json["acquired_at"] = TimeOrNull(holder.acquired_at);
    json["boot_id"] = holder.boot_id;
    json["hostname"] = holder.hostname;
    json["uid"] = holder.uid;
    json["user"] = holder.user;
    json["executable"] = holder.executable;
    json["command_line"] = holder.command_line;
    json["version"] = holder.version;
  }
  // Added after the record's fields, so that earlier readers are not
  // disturbed.
  json["processes"] = nlohmann::ordered_json::array();
  for (const HolderProcess& process : holder.processes) {
    nlohmann::ordered_json entry;
    entry["pid"] = process.pid;
    entry["name"] = process.name;
    entry["command_line"] = process.command_line;
    json["processes"].push_back(entry);
  }
  json["inherited_from_pid"] =
      holder.inherited_from_pid == 0
          ? nlohmann::ordered_json(nullptr)
          : nlohmann::ordered_json(holder.inherited_from_pid);
  return json;
}

nlohmann::ordered_json LockToJson(absl::string_view name,
                                  absl::string_view lock_path,
                                  const std::optional<InstanceInfo>& holder) {
  nlohmann::ordered_json json;
  json["name"] = NameJson(name);
  json["lock_path"] = std::string(lock_path);
  json["held"] = holder.has_value();
  json["holder"] = holder.has_value() ? HolderToJson(*holder)
                                      : nlohmann::ordered_json(nullptr);
  return json;
}

nlohmann::ordered_json SoftHolderToJson(const SoftLockHolder& holder) {
  nlohmann::ordered_json json;
  json["record_readable"] = holder.record_readable;
  const auto when_readable = [&](nlohmann::ordered_json value) {
    return holder.record_readable ? value : nlohmann::ordered_json(nullptr);
  };
  json["host"] = when_readable(holder.host);
  json["boot_id"] = when_readable(holder.boot_id);
  json["pid"] = when_readable(holder.pid);
  json["uid"] = when_readable(holder.uid);
  json["process_start_time"] = when_readable(TimeOrNull(holder.process_started));
  json["acquired_at"] = when_readable(TimeOrNull(holder.since));
  json["command_line"] = when_readable(holder.command_line);
  json["on_this_host"] = holder.on_this_host;
  json["alive"] = holder.on_this_host ? nlohmann::ordered_json(holder.alive)
                                      : nlohmann::ordered_json(nullptr);
  json["heartbeat_age_seconds"] = absl::ToDoubleSeconds(holder.heartbeat_age);
  json["stale"] = holder.stale;
  return json;
}

nlohmann::ordered_json SemaphoreToJson(
    absl::string_view path, int slots,
    const std::vector<SemaphoreSlotHolder>& holders) {
  nlohmann::ordered_json json;
  json["semaphore_path"] = std::string(path);
  json["slots"] = slots;
  const int held = HeldSlots(holders, slots);
  json["held"] = held >= slots;
  json["free_slots"] = slots - held;
  json["permits"] = nlohmann::ordered_json::array();
  const auto holder_json = [](const SemaphoreSlotHolder& holder) {
    nlohmann::ordered_json entry;
    entry["pid"] = holder.pid;
    entry["name"] = holder.command;
    entry["process_start_time"] = holder.started.has_value()
                                      ? TimeOrNull(*holder.started)
                                      : nlohmann::ordered_json(nullptr);
    return entry;
  };
  int highest = slots - 1;
  for (const SemaphoreSlotHolder& holder : holders) {
    highest = std::max(highest, holder.slot);
  }
  for (int slot = 0; slot <= highest; ++slot) {
    nlohmann::ordered_json permit;
    permit["slot"] = slot;
    permit["lock_path"] = ScopedSemaphore::SlotPath(path, slot);
    nlohmann::ordered_json slot_holders = nlohmann::ordered_json::array();
    for (const SemaphoreSlotHolder& holder : holders) {
      if (holder.slot == slot) slot_holders.push_back(holder_json(holder));
    }
    // Held slot files beyond `slots` are shown too: a larger count in use.
    if (slot >= slots && slot_holders.empty()) continue;
    permit["held"] = !slot_holders.empty();
    permit["holders"] = std::move(slot_holders);
    json["permits"].push_back(permit);
  }
  return json;
}

bool NeedsSupervisor(const RunRequest& request, const LockChoice& lock) {
  return request.max_runtime != absl::InfiniteDuration() || lock.can_be_lost;
}

int Run(const RunRequest& request, std::ostream& err) {
  // The mask onlyone was started with is COMMAND's, whatever the library
  // does with it meanwhile (a timed wait unblocks a signal for a moment).
  sigset_t original_mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &original_mask);
  std::string program;
  if (const int error = FindProgram(request.command.front(), &program);
      error != 0) {
    return ReportStartError(request.command.front(), error, err);
  }

  const LockTarget& target = request.target;
  InstanceOptions options = OptionsFor(target);
  options.on_conflict = request.on_conflict;
  options.grace_period = request.grace;
  options.recorded_command_line = request.command;
  options.recorded_executable = program;
  options.inheritable = true;
  absl::StatusOr<LockChoice> lock = ChooseLock(target, options);
  if (!lock.ok()) {
    PrintError(err, lock.status());
    return ExitCodeForError(lock.status());
  }
  if (!request.quiet) WarnIfFlockUntrusted(target, err);
  AcquireOptions acquire;
  acquire.mode = request.shared ? LockMode::kShared : LockMode::kExclusive;
  acquire.timeout = request.on_conflict == ConflictPolicy::kWait
                        ? request.wait_timeout
                        : absl::ZeroDuration();
  if (request.verbose) {
    err << "onlyone: taking ";
    if (target.slots > 0) {
      err << "one of " << target.slots << " permits of ";
    } else if (target.soft) {
      err << "the soft lock ";
    } else {
      err << "the " << (request.shared ? "shared" : "exclusive") << " lock ";
    }
    err << Printable(Label(target));
    if (request.on_conflict == ConflictPolicy::kWait) {
      err << ", waiting up to " << absl::FormatDuration(request.wait_timeout)
          << " if it is held";
    } else if (request.on_conflict == ConflictPolicy::kReplace) {
      err << ", replacing its holder if it is held";
    }
    err << "\n";
  }

  // The lock object is never destroyed: destroying it would unlock the
  // open file description the command shares, and the lock must stay held
  // while the command or anything it left running holds it (flock(1)
  // semantics). The kernel releases it when the last holder exits. A global
  // points at it, so that leak checkers (LeakSanitizer) see it kept on
  // purpose rather than lost.
  const bool tell_wait = request.on_conflict == ConflictPolicy::kWait &&
                         !request.quiet && isatty(STDERR_FILENO);
  absl::StatusOr<std::unique_ptr<HeldLock>> held =
      tell_wait ? AcquireTellingTheWait(request, *lock, acquire, err)
                : lock->backend->Acquire(lock->resource, acquire);
  if (!held.ok()) return Refuse(request, held.status(), err);
  held_for_the_command = held->release();
  std::vector<std::string> environment = EnvironmentWith(
      kInheritedLocksEnvVar, held_for_the_command->InheritedLocksEnvValue());
  if (const uint64_t token = held_for_the_command->fencing_token();
      token != 0) {
    const std::string entry = absl::StrCat(kFencingTokenEnvVar, "=");
    environment.erase(std::remove_if(environment.begin(), environment.end(),
                                     [&](const std::string& variable) {
                                       return absl::StartsWith(variable,
                                                               entry);
                                     }),
                      environment.end());
    environment.push_back(absl::StrCat(entry, token));
  }
  if (request.verbose) {
    err << "onlyone: holding " << Printable(held_for_the_command->name())
        << "\n";
  }

  if (!NeedsSupervisor(request, *lock)) {
    if (request.verbose) {
      err << "onlyone: running " << ShellJoin(request.command)
          << " in place of onlyone, as pid " << getpid() << "\n";
    }
    err.flush();
    // Returns only if the exec failed; exiting then releases the lock.
    return ReportStartError(
        request.command.front(),
        ExecInPlace(program, request.command, environment, original_mask),
        err);
  }
  SuperviseOptions supervise;
  supervise.command = request.command;
  supervise.program = program;
  supervise.environment = environment;
  supervise.max_runtime = request.max_runtime;
  supervise.grace = request.grace;
  supervise.quiet = request.quiet;
  supervise.verbose = request.verbose;
  if (lock->can_be_lost) {
    supervise.lock_lost = held_for_the_command->lost();
    supervise.lock_name = held_for_the_command->name();
  }
  const int code = Supervise(supervise, err);
  if (!lock->can_be_lost) return code;
  // No process of COMMAND's keeps such a lock: it ends with COMMAND. A lost
  // lock is not ours to release any more (Release() says so: Aborted).
  const absl::Status released = held_for_the_command->Release();
  if (!released.ok() && code != kExitLockLost) {
    PrintError(err, released);
    if (code == kExitOk) return ExitCodeForError(released);
  }
  return code;
}

int Status(const StatusRequest& request, std::ostream& out,
           std::ostream& err) {
  const LockTarget& target = request.target;
  if (KindOf(target) == LockKind::kSemaphore) {
    return SemaphoreStatus(request, out, err);
  }
  if (KindOf(target) == LockKind::kSoft) return SoftStatus(request, out, err);
  if (KindOf(target) == LockKind::kRedis) {
    return RedisStatus(request, out, err);
  }
  absl::StatusOr<std::string> path = LockPathOf(target);
  if (!path.ok()) {
    PrintError(err, path.status());
    return ExitCodeForError(path.status());
  }
  absl::StatusOr<std::optional<InstanceInfo>> found = HolderOf(target);
  if (!found.ok()) {
    PrintError(err, found.status());
    return ExitCodeForError(found.status());
  }
  const std::optional<InstanceInfo>& holder = *found;
  // A copy of an earlier build holds it where that build kept it.
  if (holder.has_value()) *path = holder->lock_path;

  if (request.json) {
    const nlohmann::ordered_json lock = LockToJson(target.name, *path, holder);
    nlohmann::ordered_json json;
    for (const auto& [key, value] : lock.items()) {
      json[key] = value;
      if (key == "name") json["scope"] = ScopeJson(target);
    }
    out << json.dump(2) << "\n";
  } else {
    std::vector<std::vector<std::string>> rows = NameRows(target);
    rows.push_back({"lock:", *path});
    if (!holder.has_value()) {
      rows.push_back({"state:", "free"});
    } else if (!holder->has_record) {
      std::vector<std::string> notes;
      if (std::string inherited = InheritedFrom(*holder); !inherited.empty()) {
        notes.push_back(inherited);
      }
      if (!holder->no_record_reason.empty()) {
        notes.push_back(holder->no_record_reason);
      } else if (holder->inherited_from_pid == 0) {
        notes.push_back("no owner record: not taken by onlyone");
      }
      rows.push_back({"state:", absl::StrCat("held by ", PidsOf(*holder),
                                             " (", absl::StrJoin(notes, "; "),
                                             ")")});
      // The commands of the live processes that hold it.
      if (holder->processes.size() == 1) {
        rows.push_back({"command:", CommandOf(holder->processes.front())});
      } else {
        const char* label = "commands:";
        for (const HolderProcess& process : holder->processes) {
          rows.push_back(
              {label, absl::StrCat(process.pid, ": ", CommandOf(process))});
          label = "";
        }
      }
    } else {
      rows.push_back({"state:", absl::StrCat("held by pid ", holder->pid)});
      rows.push_back({"command:", CommandOf(*holder)});
      rows.push_back({"since:", LocalTimeAndAge(holder->acquired_at)});
      rows.push_back(
          {"started:", LocalTimeAndAge(holder->process_start_time)});
      rows.push_back(
          {"user:", absl::StrCat(holder->user.empty() ? "?" : holder->user,
                                 " (uid ", holder->uid, ")")});
      rows.push_back({"host:", holder->hostname});
      rows.push_back({"executable:", holder->executable});
      rows.push_back({"version:", holder->version});
    }
    PrintColumns(out, rows);
  }
  return holder.has_value() ? kExitOk : kExitFree;
}

int List(const ListRequest& request, std::ostream& out, std::ostream& err) {
  if (!request.redis_server.empty()) return RedisList(request, out, err);
  InstanceOptions options;
  options.scope = request.scope;
  absl::StatusOr<std::vector<ListedInstance>> listed =
      SingleInstance::List(options);
  if (!listed.ok()) {
    PrintError(err, listed.status());
    return ExitCodeForError(listed.status());
  }
  // Each semaphore once, where its first file comes, in place of its files.
  struct Entry {
    const ListedInstance* lock = nullptr;
    std::optional<ListedSemaphore> semaphore;
    std::vector<SemaphoreSlotHolder> holders;
  };
  std::vector<Entry> entries;
  absl::flat_hash_set<std::string> semaphores_seen;
  for (const ListedInstance& instance : *listed) {
    Entry entry;
    entry.semaphore = SemaphoreOf(instance, request.scope);
    if (entry.semaphore.has_value()) {
      if (!semaphores_seen.insert(entry.semaphore->path).second) continue;
      entry.holders = ScopedSemaphore::Holders(entry.semaphore->path,
                                               entry.semaphore->slots);
    } else {
      entry.lock = &instance;
    }
    entries.push_back(std::move(entry));
  }
  if (request.json) {
    nlohmann::ordered_json json;
    json["scope"] = std::string(ScopeName(request.scope));
    json["locks"] = nlohmann::ordered_json::array();
    for (const Entry& entry : entries) {
      if (entry.lock != nullptr) {
        json["locks"].push_back(LockToJson(
            entry.lock->name, entry.lock->lock_path, entry.lock->holder));
        continue;
      }
      nlohmann::ordered_json semaphore;
      semaphore["name"] = entry.semaphore->name;
      const nlohmann::ordered_json fields = SemaphoreToJson(
          entry.semaphore->path, entry.semaphore->slots, entry.holders);
      for (const auto& [key, value] : fields.items()) semaphore[key] = value;
      json["locks"].push_back(semaphore);
    }
    out << json.dump(2) << "\n";
    return kExitOk;
  }
  if (entries.empty()) {
    out << "no locks in scope " << ScopeName(request.scope) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "PID", "SINCE", "COMMAND"}};
  for (const Entry& entry : entries) {
    if (entry.semaphore.has_value()) {
      const int slots = entry.semaphore->slots;
      std::vector<std::string> pids, commands;
      for (const SemaphoreSlotHolder& holder : entry.holders) {
        pids.push_back(absl::StrCat(holder.pid));
        commands.push_back(absl::StrCat("slot ", holder.slot, ": ",
                                        holder.command));
      }
      rows.push_back(
          {entry.semaphore->name,
           absl::StrCat(HeldSlots(entry.holders, slots), "/", slots, " held"),
           pids.empty() ? "-" : absl::StrJoin(pids, ","), "-",
           commands.empty() ? "-" : absl::StrJoin(commands, "; ")});
      continue;
    }
    const ListedInstance& instance = *entry.lock;
    if (!instance.holder.has_value()) {
      rows.push_back({instance.name, "free", "-", "-", "-"});
      continue;
    }
    const InstanceInfo& holder = *instance.holder;
    std::string pids = absl::StrCat(holder.pid);
    std::string command = CommandOf(holder);
    if (!holder.has_record && holder.processes.size() > 1) {
      std::vector<std::string> each;
      std::vector<std::string> commands;
      for (const HolderProcess& process : holder.processes) {
        each.push_back(absl::StrCat(process.pid));
        commands.push_back(
            absl::StrCat(process.pid, ": ", CommandOf(process)));
      }
      pids = absl::StrJoin(each, ",");
      command = absl::StrJoin(commands, "; ");
    }
    if (!holder.has_record) {
      command = command.empty() ? "(no record)"
                                : absl::StrCat(command, " (no record)");
    }
    rows.push_back({instance.name, "held", pids,
                    holder.has_record ? LocalTime(holder.acquired_at) : "-",
                    command});
  }
  PrintColumns(out, rows);
  return kExitOk;
}

int Wait(const WaitRequest& request, std::ostream& err) {
  if (KindOf(request.target) == LockKind::kRedis) {
    return RedisWait(request, err);
  }
  const absl::Time deadline = request.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + request.timeout;
  const std::unique_ptr<LockBackend> backend = ProbeBackend(request.target);
  // Takes the lock (or a permit) that `resource` names, which the kernel
  // grants the moment it is free, and releases it at once: flock(2) has no
  // "wait until unlocked".
  const auto take_and_release = [&](const std::string& resource,
                                    absl::Duration timeout) -> int {
    AcquireOptions options;
    options.timeout = timeout;
    absl::StatusOr<std::unique_ptr<HeldLock>> lock =
        backend->Acquire(resource, options);
    if (!lock.ok()) {
      PrintError(err, lock.status());
      const bool timed_out = absl::IsDeadlineExceeded(lock.status()) ||
                             absl::IsUnavailable(lock.status());
      return timed_out ? kExitConflict : ExitCodeForError(lock.status());
    }
    if (absl::Status released = (*lock)->Release(); !released.ok()) {
      PrintError(err, released);
      return ExitCodeForError(released);
    }
    return kExitOk;
  };
  if (KindOf(request.target) == LockKind::kSemaphore) {
    absl::StatusOr<std::string> path = SemaphorePathOf(request.target);
    if (!path.ok()) {
      PrintError(err, path.status());
      return ExitCodeForError(path.status());
    }
    // A permit nobody holds is free at once, and no file is created.
    if (HeldSlots(*path, request.target.slots) < request.target.slots) {
      return kExitOk;
    }
    return take_and_release(*path, request.timeout);
  }
  if (KindOf(request.target) == LockKind::kSoft) {
    // A free soft lock is free at once, and no file is created.
    absl::StatusOr<std::optional<SoftLockHolder>> holder =
        SoftHolderOf(request.target);
    if (!holder.ok()) {
      PrintError(err, holder.status());
      return ExitCodeForError(holder.status());
    }
    if (!holder->has_value()) return kExitOk;
    return take_and_release(request.target.lock_path, request.timeout);
  }
  // Until nobody holds it, wherever a copy holds it (an earlier build's
  // copy holds it elsewhere). Waiting must not create a lock file, so a
  // lock nobody holds is not touched.
  for (;;) {
    absl::StatusOr<std::optional<InstanceInfo>> holder =
        HolderOf(request.target);
    if (!holder.ok()) {
      PrintError(err, holder.status());
      return ExitCodeForError(holder.status());
    }
    if (!holder->has_value()) return kExitOk;
    if (const int code = take_and_release(
            (*holder)->lock_path,
            std::max(deadline - absl::Now(), absl::ZeroDuration()));
        code != kExitOk) {
      return code;
    }
  }
}

}  // namespace onlyone::cli
