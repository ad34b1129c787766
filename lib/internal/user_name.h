// User names for owner records and for messages that name another user
// ("owned by uid 1001 (mallory)").
//
// Thread safety: thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_USER_NAME_H_
#define ONLYONE_LIB_INTERNAL_USER_NAME_H_

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace onlyone::internal {

// The user name of `uid`, "" when unknown. /etc/passwd is read first, NSS
// only for a uid it does not list: a process's first getpwuid_r(3) sets up
// NSS, which took about 0.5 ms and 30 page faults on our test machine (most
// of a program's first Acquire), against about 10 us for the file. That
// answers for local users, with "files" first in nsswitch.conf as usual;
// users it does not list (LDAP, SSSD, systemd's dynamic users) are looked up
// through NSS.
std::string UserName(uid_t uid);

// "uid 1001 (mallory)", or "uid 1001" when the name is unknown.
std::string DescribeUid(uid_t uid);

// The user name passwd(5) text gives `uid`: the first "name:x:uid:..." line
// listing it. NIS compat entries ("+" or "-") and malformed lines are
// skipped; nullopt when none lists it.
std::optional<std::string> NameFromPasswdText(absl::string_view passwd,
                                              uid_t uid);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_USER_NAME_H_
