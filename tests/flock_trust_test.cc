// CheckFlockTrust and the mountinfo table behind it: which mounts' flock(2)
// locks cannot be trusted, on lines as real kernels print them.

#include "onlyone/flock_trust.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace onlyone::testing {
namespace {

using ::testing::HasSubstr;

struct Case {
  const char* line;
  bool trusted;
  const char* type;
  const char* reason_mentions;
};

// From /proc/self/mountinfo of Debian 12 and Ubuntu 22.04 machines (NFS,
// CIFS, sshfs, bindfs, ntfs-3g, virtiofs in a VM), and of the Lustre, GFS2
// and OCFS2 clients' documentation for their lock options.
const Case kCases[] = {
    {"29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 "
     "rw,errors=remount-ro",
     true, "ext4", ""},
    {"27 22 0:26 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs "
     "tmpfs rw,size=812344k,mode=755,inode64",
     true, "tmpfs", ""},
    {"99 27 0:44 / /tmp/bfs-mnt rw,nosuid,nodev,relatime - fuse "
     "/tmp/bfs-src rw,user_id=0,group_id=0,default_permissions,allow_other",
     false, "fuse", "FUSE"},
    {"312 29 0:58 / /home/alice/remote rw,nosuid,nodev,relatime shared:160 "
     "- fuse.sshfs alice@build-7:/srv rw,user_id=1000,group_id=1000",
     false, "fuse.sshfs", "FUSE"},
    {"330 29 8:17 / /media/usb rw,nosuid,nodev,relatime shared:170 - fuseblk "
     "/dev/sdb1 rw,user_id=0,group_id=0,default_permissions,allow_other,"
     "blksize=4096",
     false, "fuseblk", "FUSE"},
    {"48 29 0:45 / /mnt/shared rw,relatime shared:30 - virtiofs shared rw",
     false, "virtiofs", "FUSE"},
    {"201 29 0:52 / /mnt/nfs4 rw,relatime shared:101 - nfs4 "
     "server:/export rw,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,"
     "proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.5,"
     "local_lock=none,addr=10.0.0.1",
     true, "nfs4", ""},
    {"202 29 0:53 / /mnt/nfs3 rw,relatime shared:102 - nfs "
     "server:/export rw,vers=3,rsize=1048576,wsize=1048576,namlen=255,hard,"
     "nolock,proto=tcp,timeo=600,retrans=2,sec=sys,mountaddr=10.0.0.1,"
     "mountvers=3,mountport=20048,mountproto=udp,local_lock=all,addr=10.0.0.1",
     false, "nfs", "nolock"},
    {"203 29 0:54 / /mnt/nfs4-flock rw,relatime shared:103 - nfs4 "
     "server:/export rw,vers=4.1,rsize=524288,wsize=524288,namlen=255,hard,"
     "proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.5,"
     "local_lock=flock,addr=10.0.0.1",
     false, "nfs4", "local_lock=flock"},
    {"204 29 0:55 / /mnt/smb rw,relatime shared:104 - cifs //nas/share "
     "rw,vers=3.1.1,cache=strict,username=alice,uid=1000,noforceuid,gid=1000,"
     "noforcegid,addr=10.0.0.2,file_mode=0755,dir_mode=0755,soft,nounix,"
     "serverino,mapposix,rsize=4194304,wsize=4194304,bsize=1048576,"
     "echo_interval=60,actimeo=1",
     true, "cifs", ""},
    {"205 29 0:56 / /mnt/smb-nobrl rw,relatime shared:105 - cifs //nas/share "
     "rw,vers=3.1.1,cache=strict,username=alice,uid=1000,nobrl,addr=10.0.0.2,"
     "soft,nounix,serverino,mapposix,rsize=4194304,wsize=4194304",
     false, "cifs", "nobrl"},
    {"206 29 0:57 / /lustre rw,relatime shared:106 - lustre "
     "10.0.0.3@tcp:/scratch rw,localflock,lazystatfs",
     false, "lustre", "localflock"},
    {"207 29 253:3 / /gfs rw,relatime shared:107 - gfs2 /dev/mapper/vg-gfs "
     "rw,localflocks,meta",
     false, "gfs2", "localflocks"},
    {"208 29 253:4 / /ocfs rw,relatime shared:108 - ocfs2 /dev/sdc1 "
     "rw,_netdev,heartbeat=local,nointr,data=ordered,errors=remount-ro,"
     "atime_quantum=60,localflocks,coherency=full,user_xattr,acl",
     false, "ocfs2", "localflocks"},
};

TEST(FlockTrustTest, TheTableOfRealMounts) {
  for (const Case& one : kCases) {
    std::optional<FlockTrust> trust = FlockTrustOfMountInfoLine(one.line);
    ASSERT_TRUE(trust.has_value()) << one.line;
    EXPECT_EQ(trust->trusted, one.trusted) << one.line;
    EXPECT_EQ(trust->filesystem_type, one.type);
    EXPECT_THAT(trust->reason, HasSubstr(one.reason_mentions)) << one.line;
    EXPECT_EQ(trust->reason.empty(), one.trusted) << one.line;
  }
}

TEST(FlockTrustTest, MalformedLinesAreNotJudged) {
  EXPECT_FALSE(FlockTrustOfMountInfoLine("").has_value());
  EXPECT_FALSE(FlockTrustOfMountInfoLine("29 1 259:2 / /").has_value());
  EXPECT_FALSE(
      FlockTrustOfMountInfoLine("29 1 x:y / / rw - ext4 /dev/a rw").has_value());
}

TEST(FlockTrustTest, TheDeepestMountOfTheDeviceWins) {
  // The same device mounted twice (a bind mount), the second with nolock.
  const std::string mountinfo =
      "201 29 0:52 / /mnt/a rw - nfs server:/e rw,vers=3,local_lock=none\n"
      "202 201 0:52 /sub /mnt/a/b/c rw - nfs server:/e "
      "rw,vers=3,nolock,local_lock=all\n"
      "203 29 0:60 / /mnt/other rw - ext4 /dev/x rw\n";
  std::optional<FlockTrust> trust =
      FlockTrustInMountInfo(mountinfo, makedev(0, 52), "/mnt/a/b/c/job.lock");
  ASSERT_TRUE(trust.has_value());
  EXPECT_FALSE(trust->trusted);
  EXPECT_EQ(trust->mount_point, "/mnt/a/b/c");
  trust = FlockTrustInMountInfo(mountinfo, makedev(0, 52), "/mnt/a/job.lock");
  ASSERT_TRUE(trust.has_value());
  EXPECT_TRUE(trust->trusted);
  EXPECT_EQ(trust->mount_point, "/mnt/a");
  EXPECT_FALSE(
      FlockTrustInMountInfo(mountinfo, makedev(9, 9), "/x").has_value());
}

TEST(FlockTrustTest, EscapedMountPointsAreUnescaped) {
  std::optional<FlockTrust> trust = FlockTrustOfMountInfoLine(
      "99 27 0:44 / /mnt/my\\040share rw - fuse.sshfs a@b:/ rw");
  ASSERT_TRUE(trust.has_value());
  EXPECT_EQ(trust->mount_point, "/mnt/my share");
}

TEST(FlockTrustTest, CheckFlockTrustFindsTheTestsOwnMount) {
  const std::string dir = MakeTempDir();
  absl::StatusOr<FlockTrust> trust = CheckFlockTrust(dir + "/not-yet.lock");
  ASSERT_TRUE(trust.ok()) << trust.status();
  EXPECT_FALSE(trust->filesystem_type.empty());
  EXPECT_FALSE(trust->mount_point.empty());
  // TEST_TMPDIR is on a local filesystem, which a first look rules out.
  EXPECT_EQ(FlockTrustNeedsChecking(dir + "/not-yet.lock"), !trust->trusted);
  absl::StatusOr<FlockTrust> missing =
      CheckFlockTrust(dir + "/no/such/dir/x.lock");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir));
}

}  // namespace
}  // namespace onlyone::testing
