// The one rule by which onlyone shows text it did not write (process names,
// owner-record fields, command lines, lock paths) on a terminal, so that
// such text cannot carry escape sequences: any local user chooses its
// process name and command line, and in the machine scope an
// administrator reads them.
//
// The rule, applied left to right:
//  * a byte below 0x20, or 0x7f, becomes "\xHH" (lower-case hex): ESC is
//    shown as "\x1b", a newline as "\x0a";
//  * a C1 control written as UTF-8 (U+0080..U+009F, the bytes 0xc2 0x80 to
//    0xc2 0x9f) becomes "\u00HH": the one-byte CSI of UTF-8 terminals is
//    shown as "\u009b";
//  * any other well-formed UTF-8 sequence stays as it is (names may be
//    non-ASCII);
//  * a byte that does not start a well-formed UTF-8 sequence (a stray
//    continuation byte, an overlong form, a surrogate, a cut sequence)
//    becomes "\xHH", and the rest is read again from the next byte.
// A backslash stays a backslash. That makes "\x1b" typed literally look
// like an escaped ESC, but it makes the rule idempotent:
// Printable(Printable(s)) == Printable(s), so a message whose fields were
// made printable where it was built can be passed through the rule again by
// whoever prints it (the command line does, for messages of any origin)
// without being escaped twice. Exact data is for machine-readable output
// (JSON), never for this.
//
// Thread safety: a pure function.

#ifndef ONLYONE_LIB_INTERNAL_PRINTABLE_H_
#define ONLYONE_LIB_INTERNAL_PRINTABLE_H_

#include <string>

#include "absl/strings/string_view.h"

namespace onlyone::internal {

// Returns `text` with the rule above applied.
std::string Printable(absl::string_view text);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_PRINTABLE_H_
