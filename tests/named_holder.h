// A lock holder that names itself: a forked child that sets its process
// name (prctl(PR_SET_NAME), what /proc/PID/comm shows) and then flock(2)s a
// file directly, writing no owner record, as a hostile local user could.
// And the check that text which reaches a terminal carries no controls.

#ifndef ONLYONE_TESTS_NAMED_HOLDER_H_
#define ONLYONE_TESTS_NAMED_HOLDER_H_

#include <string>

#include "absl/strings/string_view.h"
#include "tests/test_util.h"

namespace onlyone::testing {

// A process name that sets a terminal's title and clears its screen; 11
// bytes, within comm's 15.
inline constexpr char kHostileProcessName[] = "\x1b]0;pwn\x07\x1b[2J";
// kHostileProcessName as Printable() shows it.
inline constexpr char kEscapedHostileProcessName[] = "\\x1b]0;pwn\\x07\\x1b[2J";

// Forks a child that names itself `process_name`, takes an exclusive
// flock(2) on `path` (creating the file), sends one byte on `ready` and
// holds the lock until it receives a byte (or end of file) on `release`.
Child HoldLockAs(const std::string& path, const std::string& process_name,
                 Pipe& ready, Pipe& release);

// The control characters in `text` that a terminal would act on: each C0
// control or DEL as "0xHH", each C1 control written as UTF-8 as "U+00HH",
// separated by spaces; "" if none. A newline is allowed: it ends our own
// lines. Written independently of Printable(), which the tests check with it.
std::string TerminalControlsIn(absl::string_view text);

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_NAMED_HOLDER_H_
