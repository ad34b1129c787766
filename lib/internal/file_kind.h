// Names the kind of a file that is not a regular file, for messages that
// refuse to lock, follow or write through it.

#ifndef ONLYONE_LIB_INTERNAL_FILE_KIND_H_
#define ONLYONE_LIB_INTERNAL_FILE_KIND_H_

#include <sys/stat.h>

namespace onlyone::internal {

// "a symbolic link", "a directory", ...; nullptr for a regular file.
inline const char* NonRegularFileKind(mode_t mode) {
  if (S_ISREG(mode)) return nullptr;
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a file of unknown kind";
}

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_FILE_KIND_H_
