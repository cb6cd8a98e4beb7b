// Sha256 and Xxh3 (client/sha256.h) and StreamHasher (client/stream_hasher.h): digests, saved
// states, and the checkpoint that lets a resumed download re-read only the bytes after it.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>

#include "client/sha256.h"
#include "client/stream_hasher.h"
#include "common/paths.h"
#include "tests/unit/temp_dir.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  return s;
}

std::string Sha256Of(const std::string& bytes) {
  Sha256 h;
  h.Update(bytes.data(), bytes.size());
  return h.HexDigest();
}

std::string Xxh3Of(const std::string& bytes) {
  Xxh3 h;
  h.Update(bytes.data(), bytes.size());
  return h.HexDigest();
}

using testing::TempDir;

TEST(DigestTest, KnownAnswers) {
  EXPECT_EQ(Sha256Of("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Xxh3Of(""), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(Xxh3Of("abc"), "06b05ab6733a618578af5f94892f3950");
  EXPECT_TRUE(IsXxh3Digest("06b05ab6733a618578af5f94892f3950"));
  EXPECT_FALSE(IsXxh3Digest("06B05AB6733A618578AF5F94892F3950"));
  EXPECT_FALSE(IsXxh3Digest("06b05ab6733a618578af5f94892f395"));
  EXPECT_FALSE(IsXxh3Digest("../../../../../../../etc/passwd"));
}

TEST(DigestTest, SavedStatesContinueTheStream) {
  const std::string bytes = RandomBytes(3 << 20, 7);
  const size_t cut = (1 << 20) + 17;  // not on a block boundary of either digest
  Sha256 sha;
  Xxh3 xxh;
  sha.Update(bytes.data(), cut);
  xxh.Update(bytes.data(), cut);
  const std::string sha_state = sha.SaveState(), xxh_state = xxh.SaveState();

  Sha256 sha2;
  Xxh3 xxh2;
  ASSERT_TRUE(sha2.RestoreState(sha_state));
  ASSERT_TRUE(xxh2.RestoreState(xxh_state));
  sha2.Update(bytes.data() + cut, bytes.size() - cut);
  xxh2.Update(bytes.data() + cut, bytes.size() - cut);
  EXPECT_EQ(sha2.HexDigest(), Sha256Of(bytes));
  EXPECT_EQ(xxh2.HexDigest(), Xxh3Of(bytes));

  // Anything else is refused, and leaves a fresh hasher.
  Sha256 sha3;
  EXPECT_FALSE(sha3.RestoreState(xxh_state));
  EXPECT_FALSE(sha3.RestoreState(sha_state.substr(0, sha_state.size() - 1)));
  EXPECT_EQ(sha3.HexDigest(), Sha256Of(""));
  Xxh3 xxh3;
  EXPECT_FALSE(xxh3.RestoreState("garbage"));
  EXPECT_EQ(xxh3.HexDigest(), Xxh3Of(""));
}

TEST(StreamHasherTest, DigestsMatchAndResumeReadsOnlyPastTheCheckpoint) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string part = dir.path() + "/shard.part", checkpoint = part + ".hash";
  const uint64_t size = StreamHasher::kCheckpointBytes + (5 << 20) + 3;
  const std::string bytes = RandomBytes(size, 11);
  ASSERT_TRUE(common::WriteFileAtomically(part, bytes).ok());
  {
    StreamHasher hasher(/*sha256=*/true, checkpoint);
    // Odd-sized feeds, as libcurl hands them over.
    for (size_t off = 0; off < bytes.size();) {
      const size_t n = std::min<size_t>(bytes.size() - off, 16381);
      hasher.Feed(bytes.data() + off, n);
      off += n;
    }
    StreamDigests digests = hasher.Finish();
    EXPECT_EQ(digests.sha256, Sha256Of(bytes));
    EXPECT_EQ(digests.xxh3_128, Xxh3Of(bytes));
    EXPECT_TRUE(fs::exists(checkpoint));
  }
  {
    // A restart: the hashes come back from the checkpoint plus the 5 MiB after it.
    StreamHasher hasher(/*sha256=*/true, checkpoint);
    absl::StatusOr<uint64_t> reread = hasher.Resume(part, size);
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(*reread, size - StreamHasher::kCheckpointBytes);
    const std::string more = RandomBytes(1000, 12);
    hasher.Feed(more.data(), more.size());
    StreamDigests digests = hasher.Finish();
    EXPECT_EQ(digests.sha256, Sha256Of(bytes + more));
    EXPECT_EQ(digests.xxh3_128, Xxh3Of(bytes + more));
  }
  {
    // A damaged checkpoint is ignored: the whole prefix is read, the digests still right.
    std::string saved = *common::ReadFile(checkpoint);
    saved[saved.size() / 2] ^= 1;
    ASSERT_TRUE(common::WriteFileAtomically(checkpoint, saved).ok());
    StreamHasher hasher(/*sha256=*/true, checkpoint);
    absl::StatusOr<uint64_t> reread = hasher.Resume(part, size);
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(*reread, size);
    EXPECT_EQ(hasher.Finish().sha256, Sha256Of(bytes));
  }
  {
    // A checkpoint past the end of a (shorter) partial file is not used either.
    StreamHasher writer(/*sha256=*/false, checkpoint);
    writer.Feed(bytes.data(), bytes.size());
    writer.Finish();
    StreamHasher hasher(/*sha256=*/false, checkpoint);
    absl::StatusOr<uint64_t> reread = hasher.Resume(part, 1 << 20);
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(*reread, 1u << 20);
    EXPECT_EQ(hasher.Finish().xxh3_128, Xxh3Of(bytes.substr(0, 1 << 20)));
    hasher.Discard();
    EXPECT_FALSE(fs::exists(checkpoint));
  }
}

TEST(StreamHasherTest, CheckpointsLandOnTheirBoundariesAfterAnUnalignedResume) {
  // A resume at an odd offset shifts the SHA-256 thread's blocks against the checkpoint
  // boundaries; the XXH3 state (hashed as fed) and the SHA-256 state must still be saved for the
  // same offset. With and without SHA-256 (a peer's download computes XXH3 only).
  for (const bool sha256 : {true, false}) {
    SCOPED_TRACE(sha256 ? "sha256 + xxh3" : "xxh3 only");
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    const std::string part = dir.path() + "/shard.part", checkpoint = part + ".hash";
    const uint64_t first = (3 << 20) + 7;  // under one block and one checkpoint
    const uint64_t size = 2 * StreamHasher::kCheckpointBytes + (1 << 20) + 5;
    const std::string bytes = RandomBytes(size, 21);
    ASSERT_TRUE(common::WriteFileAtomically(part, bytes).ok());
    {
      StreamHasher hasher(sha256, checkpoint);
      absl::StatusOr<uint64_t> reread = hasher.Resume(part, first);
      ASSERT_TRUE(reread.ok()) << reread.status();
      EXPECT_EQ(*reread, first);  // no checkpoint yet
      for (uint64_t off = first; off < size;) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(size - off, 65519));
        hasher.Feed(bytes.data() + off, n);
        off += n;
      }
      StreamDigests digests = hasher.Finish();
      EXPECT_EQ(digests.sha256, sha256 ? Sha256Of(bytes) : "");
      EXPECT_EQ(digests.xxh3_128, Xxh3Of(bytes));
    }
    StreamHasher hasher(sha256, checkpoint);
    absl::StatusOr<uint64_t> reread = hasher.Resume(part, size);
    ASSERT_TRUE(reread.ok()) << reread.status();
    EXPECT_EQ(*reread, size - 2 * StreamHasher::kCheckpointBytes);
    StreamDigests digests = hasher.Finish();
    EXPECT_EQ(digests.sha256, sha256 ? Sha256Of(bytes) : "");
    EXPECT_EQ(digests.xxh3_128, Xxh3Of(bytes));
  }
}

TEST(StreamHasherTest, ResetStartsOver) {
  StreamHasher hasher(/*sha256=*/true, "");
  const std::string a = RandomBytes(9 << 20, 1), b = RandomBytes(1 << 20, 2);
  hasher.Feed(a.data(), a.size());
  hasher.Reset();
  hasher.Feed(b.data(), b.size());
  EXPECT_EQ(hasher.bytes(), b.size());
  StreamDigests digests = hasher.Finish();
  EXPECT_EQ(digests.sha256, Sha256Of(b));
  EXPECT_EQ(digests.xxh3_128, Xxh3Of(b));
}

}  // namespace
}  // namespace gswarm::client
