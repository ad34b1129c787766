// The onlyone release this library belongs to. It is written into every
// owner record (see lib/internal/instance_record.h), so that a newer copy can
// tell which release wrote a record it reads.

#ifndef ONLYONE_LIB_VERSION_H_
#define ONLYONE_LIB_VERSION_H_

namespace onlyone {

// Semantic version: MAJOR.MINOR.PATCH.
inline constexpr char kVersion[] = "0.1.0";

}  // namespace onlyone

#endif  // ONLYONE_LIB_VERSION_H_
