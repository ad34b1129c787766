// The holder a refusal carries (lib/lock_holder.h): its payload survives
// what process names may contain, the file lock attaches it exactly to
// refusals because the lock is held, and an inspection that is handed it
// does not read /proc/locks or the holders' names again.

#include "onlyone/lock_holder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/holder_inspection.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/scoped_file_lock.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::CarriedPids;
using ::onlyone::testing::Child;
using ::onlyone::testing::HoldWithRawFlock;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::Pipe;
using ::testing::ElementsAre;

// A lock file that a child holds with plain flock(2) for the whole test.
class HeldFileTest : public ::testing::Test {
 protected:
  HeldFileTest()
      : path_(MakeTempDir() + "/held.lock"),
        holder_(HoldWithRawFlock(path_, ready_, release_)) {}

  void SetUp() override {
    ASSERT_EQ(ready_.Receive(), '.');
    ASSERT_EQ(stat(path_.c_str(), &file_), 0);
  }

  void TearDown() override {
    release_.Send();
    EXPECT_EQ(holder_.Wait(), 0);
  }

  const std::string path_;
  Pipe ready_, release_;
  Child holder_;
  struct stat file_ = {};
};

TEST(HolderPayloadTest, RoundTripsEveryFieldAndHostileNames) {
  HolderInfo holder;
  holder.resource = "/run/lock/odd\nname=x.lock";
  holder.holders_known = true;
  holder.device = 0xfd01;
  holder.inode = 123456789012ull;
  const std::string hostile_name = "a\nb=c\\d\x1b[2J";
  holder.holders.resize(2);
  holder.holders[0].pid = 4711;
  holder.holders[0].exclusive = false;
  holder.holders[0].name = hostile_name;
  holder.holders[1].pid = 0;
  holder.holders[1].host = "build-7";

  absl::Status refusal = absl::UnavailableError("held");
  AttachHolder(refusal, holder);
  std::optional<HolderInfo> carried = HolderFromStatus(refusal);
  ASSERT_TRUE(carried.has_value());
  EXPECT_EQ(carried->resource, holder.resource);
  EXPECT_TRUE(carried->holders_known);
  EXPECT_EQ(carried->device, holder.device);
  EXPECT_EQ(carried->inode, holder.inode);
  ASSERT_EQ(carried->holders.size(), 2u);
  EXPECT_EQ(carried->holders[0].pid, 4711);
  EXPECT_FALSE(carried->holders[0].exclusive);
  EXPECT_EQ(carried->holders[0].name, hostile_name);
  EXPECT_EQ(carried->holders[1].pid, 0);
  EXPECT_TRUE(carried->holders[1].exclusive);
  EXPECT_EQ(carried->holders[1].host, "build-7");
}

TEST(HolderPayloadTest, NoneOnOtherStatusesOrAMalformedPayload) {
  EXPECT_FALSE(HolderFromStatus(absl::OkStatus()).has_value());
  EXPECT_FALSE(
      HolderFromStatus(absl::FailedPreconditionError("unsafe")).has_value());
  absl::Status forged = absl::UnavailableError("held");
  forged.SetPayload("type.onlyone/onlyone.HolderInfo",
                    absl::Cord("name=before any pid\n"));
  EXPECT_FALSE(HolderFromStatus(forged).has_value());
}

TEST_F(HeldFileTest, AFileLockRefusalCarriesTheHoldersTheKernelListed) {
  LockOptions try_once;
  try_once.timeout = absl::ZeroDuration();
  absl::StatusOr<ScopedFileLock> lock =
      ScopedFileLock::Acquire(path_, try_once);
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  std::optional<HolderInfo> carried = HolderFromStatus(lock.status());
  ASSERT_TRUE(carried.has_value());
  EXPECT_EQ(carried->resource, path_);
  EXPECT_TRUE(carried->holders_known);
  EXPECT_EQ(carried->device, file_.st_dev);
  EXPECT_EQ(carried->inode, file_.st_ino);
  ASSERT_EQ(carried->holders.size(), 1u);
  EXPECT_EQ(carried->holders[0].pid, holder_.pid());
  EXPECT_TRUE(carried->holders[0].exclusive);

  LockOptions timed;
  timed.timeout = absl::Milliseconds(20);
  lock = ScopedFileLock::Acquire(path_, timed);
  ASSERT_TRUE(absl::IsDeadlineExceeded(lock.status())) << lock.status();
  EXPECT_THAT(CarriedPids(lock.status()), ElementsAre(holder_.pid()));
}

TEST(FileLockRefusalTest, ErrorsThatAreNotAHolderCarryNone) {
  absl::StatusOr<ScopedFileLock> lock =
      ScopedFileLock::Acquire(MakeTempDir() + "/missing/x.lock");
  ASSERT_TRUE(absl::IsNotFound(lock.status())) << lock.status();
  EXPECT_FALSE(HolderFromStatus(lock.status()).has_value());
}

TEST(FileLockRefusalTest, ANestedAcquisitionCarriesThisProcess) {
  const std::string path = MakeTempDir() + "/nested.lock";
  absl::StatusOr<ScopedFileLock> outer = ScopedFileLock::Acquire(path);
  ASSERT_TRUE(outer.ok()) << outer.status();
  absl::StatusOr<ScopedFileLock> inner = ScopedFileLock::Acquire(path);
  ASSERT_TRUE(absl::IsFailedPrecondition(inner.status())) << inner.status();
  EXPECT_THAT(CarriedPids(inner.status()), ElementsAre(getpid()));
}

// The names a refusal read are what the inspection reports: it does not read
// /proc/PID/comm again, so the name given here (which is not the holder's
// real one) shows. A HolderInfo about another file is not believed.
TEST_F(HeldFileTest, AnInspectionReusesWhatTheRefusalFoundAboutTheSameFile) {
  HolderInfo known;
  known.resource = path_;
  known.holders_known = true;
  known.device = file_.st_dev;
  known.inode = file_.st_ino;
  LockHolderProcess& process = known.holders.emplace_back();
  process.pid = holder_.pid();
  process.name = "name-from-refusal";
  absl::StatusOr<internal::Inspection> inspection =
      internal::InspectLockFile(path_, &known);
  ASSERT_TRUE(inspection.ok()) << inspection.status();
  std::optional<InstanceInfo> found = internal::HolderFrom(*inspection);
  ASSERT_TRUE(found.has_value());
  ASSERT_EQ(found->processes.size(), 1u);
  EXPECT_EQ(found->processes[0].pid, holder_.pid());
  EXPECT_EQ(found->processes[0].name, "name-from-refusal");

  known.inode += 1;  // about another file: /proc is read
  inspection = internal::InspectLockFile(path_, &known);
  ASSERT_TRUE(inspection.ok()) << inspection.status();
  found = internal::HolderFrom(*inspection);
  ASSERT_TRUE(found.has_value());
  ASSERT_EQ(found->processes.size(), 1u);
  EXPECT_EQ(found->processes[0].name, internal::ProcessName(holder_.pid()));
}

}  // namespace
}  // namespace onlyone
