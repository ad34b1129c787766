// Tests of the errno -> status mapping for flock(2) failures and of the
// filesystem-type lookup that the messages use.

#include "onlyone/internal/posix_error.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace onlyone::internal {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kPath[] = "/mnt/shared/job.lock";

FlockFailure Failure(int error_number, absl::string_view filesystem_type,
                     bool exclusive_on_read_only_descriptor = false) {
  FlockFailure failure;
  failure.error_number = error_number;
  failure.filesystem_type = filesystem_type;
  failure.exclusive_on_read_only_descriptor =
      exclusive_on_read_only_descriptor;
  return failure;
}

TEST(FlockErrorTest, NoLocksOnNfsIsAFailedPreconditionNamingTheFilesystem) {
  const absl::Status status = FlockError(kPath, Failure(ENOLCK, "nfs4"));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(),
              HasSubstr("/mnt/shared/job.lock: flock: No locks available "
                        "(ENOLCK) on a filesystem of type nfs4"));
  EXPECT_THAT(status.message(),
              HasSubstr("this filesystem may not support flock(2) locks"));
}

TEST(FlockErrorTest, InputOutputErrorIsAFailedPrecondition) {
  const absl::Status status = FlockError(kPath, Failure(EIO, "nfs"));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr(kPath));
  EXPECT_THAT(status.message(), HasSubstr("(EIO) on a filesystem of type nfs"));
}

TEST(FlockErrorTest, BadDescriptorIsAFailedPreconditionNotInternal) {
  const absl::Status status = FlockError(kPath, Failure(EBADF, "nfs4"));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("(EBADF) on a filesystem of type nfs4"));
  EXPECT_THAT(status.message(),
              HasSubstr("this filesystem may not support flock(2) locks"));
}

TEST(FlockErrorTest, ExclusiveOnAReadOnlyDescriptorExplainsTheWriteAccess) {
  const absl::Status status = FlockError(
      kPath, Failure(EBADF, "nfs4", /*exclusive_on_read_only_descriptor=*/true));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr(kPath));
  EXPECT_THAT(status.message(), HasSubstr("nfs4"));
  EXPECT_THAT(status.message(), HasSubstr("needs write access"));
  EXPECT_THAT(status.message(), HasSubstr("take a shared lock"));
}

TEST(FlockErrorTest, UnknownFilesystemIsSaidSo) {
  const absl::Status status = FlockError(kPath, Failure(ENOLCK, ""));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("on a filesystem of unknown type"));
}

TEST(FlockErrorTest, OtherErrorsFollowThePosixTable) {
  const absl::Status status = FlockError(kPath, Failure(EINVAL, "ext4"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), "/mnt/shared/job.lock: flock: Invalid argument");
  EXPECT_EQ(FlockError(kPath, Failure(ENOMEM, "ext4")).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(FlockError(kPath, Failure(EINVAL, "ext4")).message(),
              Not(HasSubstr("ext4")));
}

constexpr char kMountInfo[] =
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc "
    "rw\n"
    "61 22 0:53 / /mnt/shared rw,relatime shared:30 master:2 - nfs4 "
    "server:/export rw,vers=4.2\n"
    "62 22 0:54 / /mnt/no\\040optional rw - fuse.sshfs host: rw\n";

TEST(FilesystemTypeTest, FindsTheMountOfTheDevice) {
  EXPECT_EQ(FilesystemTypeInMountInfo(kMountInfo, makedev(8, 1)), "ext4");
  EXPECT_EQ(FilesystemTypeInMountInfo(kMountInfo, makedev(0, 53)), "nfs4");
  EXPECT_EQ(FilesystemTypeInMountInfo(kMountInfo, makedev(0, 54)),
            "fuse.sshfs");
  EXPECT_EQ(FilesystemTypeInMountInfo(kMountInfo, makedev(0, 99)), "");
  EXPECT_EQ(FilesystemTypeInMountInfo("garbage\n\n1 2 x:y / / rw - ext4 a b",
                                      makedev(8, 1)),
            "");
}

TEST(FilesystemTypeTest, ReadsThisProcessesMounts) {
  struct stat proc;
  ASSERT_EQ(stat("/proc", &proc), 0);
  EXPECT_EQ(FilesystemTypeOfDevice(proc.st_dev), "proc");
}

}  // namespace
}  // namespace onlyone::internal
