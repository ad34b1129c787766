// Tests of the /proc/locks parser and of holder discovery on a real lock.

#include "onlyone/internal/proc_locks.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace onlyone::internal {
namespace {

TEST(ParseFlockHoldersTest, KeepsGrantedFlocksOfTheFileOnly) {
  constexpr char kText[] =
      "1: POSIX  ADVISORY  WRITE 100 08:01:42 0 EOF\n"
      "2: FLOCK  ADVISORY  WRITE 200 08:01:42 0 EOF\n"
      "2: -> FLOCK  ADVISORY  WRITE 300 08:01:42 0 EOF\n"
      "3: FLOCK  ADVISORY  READ  400 08:01:42 0 EOF\n"
      "4: FLOCK  ADVISORY  WRITE 500 08:01:43 0 EOF\n"
      "5: FLOCK  ADVISORY  WRITE 600 fd:01:42 0 EOF\n";
  std::vector<FlockHolder> holders =
      ParseFlockHolders(kText, makedev(8, 1), 42);
  ASSERT_EQ(holders.size(), 2u);
  EXPECT_EQ(holders[0].pid, 200);
  EXPECT_TRUE(holders[0].exclusive);
  EXPECT_EQ(holders[1].pid, 400);
  EXPECT_FALSE(holders[1].exclusive);

  holders = ParseFlockHolders(kText, makedev(0xfd, 1), 42);
  ASSERT_EQ(holders.size(), 1u);
  EXPECT_EQ(holders[0].pid, 600);
}

TEST(ParseFlockHoldersTest, IgnoresMalformedLines) {
  EXPECT_TRUE(ParseFlockHolders("garbage\n1: FLOCK x\n\n", 1, 1).empty());
}

TEST(FlockHoldersTest, FindsThisProcessHoldingARealLock) {
  const std::string path = onlyone::testing::MakeTempDir() + "/probe.lock";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX), 0);
  struct stat file;
  ASSERT_EQ(fstat(fd, &file), 0);
  std::vector<FlockHolder> holders = FlockHolders(file.st_dev, file.st_ino);
  ASSERT_EQ(holders.size(), 1u);
  EXPECT_EQ(holders[0].pid, getpid());
  EXPECT_EQ(DescribeHolders(holders),
            absl::StrCat("pid ", getpid(), " (", ProcessName(getpid()), ")"));
  close(fd);
  EXPECT_TRUE(FlockHolders(file.st_dev, file.st_ino).empty());
}

}  // namespace
}  // namespace onlyone::internal
