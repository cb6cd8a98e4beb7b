// TierCopier (client/tier_copier.h) and DramTier (client/dram_tier.h) on real filesystems: the
// sources under /tmp, the DRAM tier under /dev/shm.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/dram_tier.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "client/tier_copier.h"
#include "common/paths.h"
#include "common/units.h"
#include "tests/unit/temp_dir.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

using testing::TempDir;

std::string RandomBytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

void WriteFile(const std::string& path, const std::string& bytes) {
  ASSERT_TRUE(common::MakeDirs(fs::path(path).parent_path().string()).ok());
  ASSERT_TRUE(common::WriteFileAtomically(path, bytes).ok()) << path;
}

std::string Slurp(const std::string& path) {
  absl::StatusOr<std::string> s = common::ReadFile(path);
  return s.ok() ? *s : "<unreadable " + path + ">";
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// A model: config.json, two weight shards, a nested tokenizer file, and a manifest recording
// every file's size and sha256 (of `sha_override` where given, to fake a corrupt source).
struct TestModel {
  std::vector<std::pair<std::string, std::string>> files = {
      {"config.json", R"({"architectures": ["LlamaForCausalLM"]})"},
      {"pytorch_model-00001-of-00002.bin", RandomBytes(3 << 20, 1)},
      {"pytorch_model-00002-of-00002.bin", RandomBytes(1 << 20, 2)},
      {"tokenizer/sub/tokenizer.json", RandomBytes(70001, 3)},
  };

  void WriteTo(const std::string& dir, const std::string& corrupt = "") const {
    ModelManifest manifest;
    manifest.name = "m";
    manifest.source_url = "hf://org/m";
    manifest.commit = "abc123";
    for (const auto& [rel, bytes] : files) {
      WriteFile(dir + "/" + rel, bytes);
      v1::ModelFile file;
      file.set_path(rel);
      file.set_size_bytes(bytes.size());
      Sha256 hasher;
      hasher.Update(bytes.data(), bytes.size());
      file.set_sha256(rel == corrupt ? std::string(64, '0') : hasher.HexDigest());
      manifest.files.push_back(file);
    }
    ASSERT_TRUE(WriteManifest(dir, manifest).ok());
  }

  uint64_t Bytes() const {
    uint64_t n = 0;
    for (const auto& [rel, bytes] : files) n += bytes.size();
    return n;
  }
};

class CopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(src_.path().empty());
    ASSERT_FALSE(shm_.path().empty());
    source_ = src_.path() + "/m";
    staging_ = shm_.path() + "/.staging/m.1234";
    target_ = shm_.path() + "/m";
  }

  void ExpectCopied(const TestModel& model, const std::string& target) {
    for (const auto& [rel, bytes] : model.files) {
      struct stat st;
      ASSERT_EQ(::lstat((target + "/" + rel).c_str(), &st), 0) << rel;
      EXPECT_TRUE(S_ISREG(st.st_mode)) << rel;
      EXPECT_EQ(static_cast<size_t>(st.st_size), bytes.size()) << rel;
      EXPECT_TRUE(Slurp(target + "/" + rel) == bytes) << rel << " differs";
    }
  }

  void ExpectNothingLeft() {
    EXPECT_FALSE(Exists(target_));
    EXPECT_FALSE(Exists(staging_));
  }

  TempDir src_{"/tmp"};
  TempDir shm_{"/dev/shm"};
  std::string source_, staging_, target_;
};

TEST_F(CopyTest, CopiesNestedFilesAndManifest) {
  TestModel model;
  model.WriteTo(source_);
  WriteFile(source_ + "/.gswarm/pinned", "");  // the source tier's bookkeeping stays there
  CopyStats stats;
  CopyOptions options;
  options.stats = &stats;
  const uint64_t manifest_bytes = fs::file_size(ManifestPath(source_));
  absl::StatusOr<uint64_t> bytes = CopyModelDir(source_, staging_, target_, options, {}, nullptr);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(*bytes, model.Bytes() + manifest_bytes);
  ExpectCopied(model, target_);
  EXPECT_EQ(Slurp(ManifestPath(target_)), Slurp(ManifestPath(source_)));
  EXPECT_FALSE(Exists(target_ + "/.gswarm/pinned"));
  EXPECT_FALSE(Exists(staging_));
  EXPECT_EQ(stats.files_hashed, 4u);
  // The manifest had no fast digests: SHA-256 checked them, and the XXH3-128 computed alongside
  // was recorded in both manifests.
  EXPECT_EQ(stats.files_by_sha256, 4u);
  EXPECT_EQ(stats.digests_recorded, 4u);
  EXPECT_EQ(stats.files_by_method[static_cast<int>(CopyMethod::kMappedWrite)], 4u);
  absl::StatusOr<ModelManifest> recorded = ReadManifest(source_);
  ASSERT_TRUE(recorded.ok()) << recorded.status();
  for (const v1::ModelFile& file : recorded->files) {
    absl::StatusOr<std::string> digest = Xxh3OfFile(source_ + "/" + file.path());
    ASSERT_TRUE(digest.ok()) << digest.status();
    EXPECT_EQ(file.xxh3_128(), *digest) << file.path();
  }

  // The next copy checks the fast digest and computes nothing new.
  const std::string again = shm_.path() + "/again";
  ASSERT_TRUE(CopyModelDir(source_, staging_, again, options, {}, nullptr).ok());
  EXPECT_EQ(stats.files_by_xxh3, 4u);
  EXPECT_EQ(stats.files_by_sha256, 0u);
  EXPECT_EQ(stats.digests_recorded, 0u);
  ExpectCopied(model, again);
}

TEST_F(CopyTest, AFlippedByteIsCaughtByTheFastDigestAndNamed) {
  TestModel model;
  model.WriteTo(source_);
  // A first copy records the XXH3-128 digests.
  ASSERT_TRUE(CopyModelDir(source_, staging_, target_, {}, {}, nullptr).ok());
  fs::remove_all(target_);
  // One bit of one shard flips on the source (a bad DIMM, a bad disk): same size, other bytes.
  const std::string shard = source_ + "/pytorch_model-00001-of-00002.bin";
  std::string bytes = Slurp(shard);
  bytes[bytes.size() / 2] ^= 0x10;
  WriteFile(shard, bytes);
  CopyStats stats;
  CopyOptions options;
  options.stats = &stats;
  absl::StatusOr<uint64_t> copied = CopyModelDir(source_, staging_, target_, options, {}, nullptr);
  EXPECT_EQ(copied.status().code(), absl::StatusCode::kDataLoss) << copied.status();
  EXPECT_NE(copied.status().message().find("pytorch_model-00001-of-00002.bin has xxh3_128"),
            std::string::npos)
      << copied.status();
  ExpectNothingLeft();
}

TEST_F(CopyTest, FollowsSymlinksLikeAHuggingFaceSnapshot) {
  // A Hugging Face cache: the snapshot's files link to the repo's blobs/.
  const std::string repo = src_.path() + "/models--org--m";
  const std::string snapshot = repo + "/snapshots/0123abc";
  TestModel model;
  model.WriteTo(repo + "/blobs");
  ASSERT_TRUE(common::MakeDirs(snapshot).ok());
  for (const char* name : {"config.json", "pytorch_model-00001-of-00002.bin",
                           "pytorch_model-00002-of-00002.bin", "tokenizer", ".gswarm"}) {
    ASSERT_EQ(
        ::symlink((std::string("../../blobs/") + name).c_str(), (snapshot + "/" + name).c_str()),
        0);
  }
  absl::StatusOr<uint64_t> bytes = CopyModelDir(snapshot, staging_, target_, {}, {}, nullptr);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ExpectCopied(model, target_);
  struct stat st;
  ASSERT_EQ(::lstat((target_ + "/tokenizer").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
}

TEST_F(CopyTest, RefusesALinkOutOfTheModelsFolder) {
  TestModel model;
  model.WriteTo(source_);
  WriteFile(src_.path() + "/secret", "not a model file");
  ASSERT_EQ(::unlink((source_ + "/config.json").c_str()), 0);
  ASSERT_EQ(::symlink((src_.path() + "/secret").c_str(), (source_ + "/config.json").c_str()), 0);
  absl::StatusOr<uint64_t> bytes = CopyModelDir(source_, staging_, target_, {}, {}, nullptr);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kFailedPrecondition) << bytes.status();
  EXPECT_NE(bytes.status().message().find("config.json links out of the model's folder"),
            std::string::npos)
      << bytes.status();
  ExpectNothingLeft();
}

TEST_F(CopyTest, ASourceTruncatedUnderTheMappingIsDataLossNotACrash) {
  TestModel model;
  model.WriteTo(source_);
  const std::string shard = source_ + "/pytorch_model-00001-of-00002.bin";
  CopyOptions options;
  options.parallel_files = 1;
  bool truncated = false;
  // The first progress call comes after the files were listed and sized, before any is copied:
  // the shard shrinks there, so its mapping reaches past the end of the file.
  absl::StatusOr<uint64_t> copied = CopyModelDir(
      source_, staging_, target_, options,
      [&](const CopyProgress&) {
        if (!truncated) truncated = ::truncate(shard.c_str(), 1 << 20) == 0;
      },
      nullptr);
  ASSERT_TRUE(truncated);
  EXPECT_EQ(copied.status().code(), absl::StatusCode::kDataLoss) << copied.status();
  EXPECT_NE(
      copied.status().message().find("pytorch_model-00001-of-00002.bin was truncated at byte"),
      std::string::npos)
      << copied.status();
  ExpectNothingLeft();
}

TEST_F(CopyTest, HashMismatchIsDataLossNamingTheFile) {
  TestModel model;
  model.WriteTo(source_, /*corrupt=*/"pytorch_model-00002-of-00002.bin");
  absl::StatusOr<uint64_t> bytes = CopyModelDir(source_, staging_, target_, {}, {}, nullptr);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kDataLoss) << bytes.status();
  EXPECT_NE(bytes.status().message().find("pytorch_model-00002-of-00002.bin"), std::string::npos)
      << bytes.status();
  ExpectNothingLeft();

  // Without verification the same source copies (sizes still match).
  CopyOptions no_verify;
  no_verify.verify = false;
  EXPECT_TRUE(CopyModelDir(source_, staging_, target_, no_verify, {}, nullptr).ok());
}

TEST_F(CopyTest, SizeMismatchAndMissingFileAreRefused) {
  TestModel model;
  model.WriteTo(source_);
  WriteFile(source_ + "/config.json", "{}");
  absl::StatusOr<uint64_t> bytes = CopyModelDir(source_, staging_, target_, {}, {}, nullptr);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kDataLoss) << bytes.status();
  EXPECT_NE(bytes.status().message().find("config.json"), std::string::npos);
  ASSERT_EQ(::unlink((source_ + "/config.json").c_str()), 0);
  bytes = CopyModelDir(source_, staging_, target_, {}, {}, nullptr);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kNotFound) << bytes.status();
  EXPECT_NE(bytes.status().message().find("config.json"), std::string::npos);
  ExpectNothingLeft();
}

TEST_F(CopyTest, TargetThatExistsIsFailedPrecondition) {
  TestModel model;
  model.WriteTo(source_);
  ASSERT_TRUE(common::MakeDirs(target_).ok());
  absl::StatusOr<uint64_t> bytes = CopyModelDir(source_, staging_, target_, {}, {}, nullptr);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kFailedPrecondition) << bytes.status();
  EXPECT_NE(bytes.status().message().find(target_), std::string::npos);
  EXPECT_FALSE(Exists(staging_));
}

TEST_F(CopyTest, ProgressIsMonotonicAndEndsAtTotal) {
  TestModel model;
  model.WriteTo(source_);
  std::vector<CopyProgress> seen;
  CopyOptions options;
  options.block_bytes = 1 << 20;
  absl::StatusOr<uint64_t> bytes = CopyModelDir(
      source_, staging_, target_, options, [&](const CopyProgress& p) { seen.push_back(p); },
      nullptr);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_GE(seen.size(), 2u);
  EXPECT_EQ(seen.front().bytes_done, 0u);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].bytes_done, seen[i - 1].bytes_done);
    EXPECT_GE(seen[i].files_done, seen[i - 1].files_done);
    EXPECT_EQ(seen[i].bytes_total, *bytes);
  }
  EXPECT_EQ(seen.back().bytes_done, *bytes);
  EXPECT_EQ(seen.back().files_done, 5u);  // four files and the manifest
  EXPECT_EQ(seen.back().files_total, 5u);
}

TEST_F(CopyTest, CancelBeforeTheFirstByteLeavesNothing) {
  TestModel model;
  model.WriteTo(source_);
  std::atomic<bool> cancel{false};
  absl::StatusOr<uint64_t> bytes = CopyModelDir(
      source_, staging_, target_, {}, [&](const CopyProgress&) { cancel = true; }, &cancel);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kCancelled) << bytes.status();
  ExpectNothingLeft();
}

TEST_F(CopyTest, CancelMidFileLeavesNothing) {
  // 256 MiB of zeros (sparse, so cheap to make), hashed on the way: long enough to cancel once
  // the staged file has started to grow.
  const std::string big = shm_.path() + "/src/big.safetensors";
  ASSERT_TRUE(common::MakeDirs(fs::path(big).parent_path().string()).ok());
  {
    const int fd = ::open(big.c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 256 << 20), 0);
    ::close(fd);
  }
  ModelManifest manifest;
  v1::ModelFile file;
  file.set_path("big.safetensors");
  file.set_size_bytes(256 << 20);
  file.set_sha256(*Sha256OfFile(big));
  manifest.files.push_back(file);
  ASSERT_TRUE(WriteManifest(shm_.path() + "/src", manifest).ok());

  std::atomic<bool> cancel{false};
  std::thread watcher([&] {
    const std::string staged = staging_ + "/big.safetensors";
    while (!cancel) {
      struct stat st;
      if (::stat(staged.c_str(), &st) == 0 && st.st_size > 0) cancel = true;
    }
  });
  CopyOptions options;
  options.parallel_files = 1;
  absl::StatusOr<uint64_t> bytes =
      CopyModelDir(shm_.path() + "/src", staging_, target_, options, {}, &cancel);
  cancel = true;
  watcher.join();
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kCancelled) << bytes.status();
  ExpectNothingLeft();
}

TEST_F(CopyTest, EveryMethodCopiesTheSameBytes) {
  TestModel model;
  model.WriteTo(shm_.path() + "/src");  // tmpfs to tmpfs: the kernel accepts all three
  for (CopyMethod method :
       {CopyMethod::kCopyFileRange, CopyMethod::kSendfile, CopyMethod::kReadWrite}) {
    SCOPED_TRACE(static_cast<int>(method));
    CopyStats stats;
    CopyOptions options;
    options.verify = false;
    options.first_method = method;
    options.block_bytes = 1 << 20;
    options.stats = &stats;
    const std::string target = target_ + std::to_string(static_cast<int>(method));
    ASSERT_TRUE(CopyModelDir(shm_.path() + "/src", staging_, target, options, {}, nullptr).ok());
    ExpectCopied(model, target);
    EXPECT_EQ(stats.files_by_method[static_cast<int>(method)], 5u);
    EXPECT_EQ(stats.files_hashed, 0u);
  }
}

TEST_F(CopyTest, CopyFileRangeAcrossFilesystemsFallsBack) {
  TestModel model;
  model.WriteTo(source_);
  struct stat a, b;
  ASSERT_EQ(::stat(src_.path().c_str(), &a), 0);
  ASSERT_EQ(::stat(shm_.path().c_str(), &b), 0);
  if (a.st_dev == b.st_dev) GTEST_SKIP() << "/tmp and /dev/shm are one filesystem here";
  for (int round = 0; round < 2; ++round) {  // the second round starts from what was learnt
    CopyStats stats;
    CopyOptions options;
    options.verify = false;
    options.stats = &stats;
    const std::string target = target_ + std::to_string(round);
    ASSERT_TRUE(CopyModelDir(source_, staging_, target, options, {}, nullptr).ok());
    ExpectCopied(model, target);
    // The kernel refuses copy_file_range into tmpfs from another filesystem (EXDEV).
    EXPECT_EQ(stats.files_by_method[0], 0u);
    EXPECT_EQ(stats.files_by_method[1] + stats.files_by_method[2], 5u);
  }
}

TEST_F(CopyTest, FullTargetIsResourceExhaustedNamingIt) {
  TestModel model;  // 4+ MiB
  model.WriteTo(source_);
  const std::string small = shm_.path() + "/small";
  ASSERT_TRUE(common::MakeDirs(small).ok());
  if (::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here: " << strerror(errno);
  }
  const std::string target = small + "/m";
  absl::StatusOr<uint64_t> bytes =
      CopyModelDir(source_, small + "/.staging/m", target, {}, {}, nullptr);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kResourceExhausted) << bytes.status();
  EXPECT_NE(bytes.status().message().find(target), std::string::npos) << bytes.status();
  EXPECT_FALSE(Exists(target));
  EXPECT_FALSE(Exists(small + "/.staging/m"));
  ::umount(small.c_str());
}

// DramTier -------------------------------------------------------------------------------------

class DramTierTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(shm_.path().empty()); }

  DramTier Tier(uint64_t budget) const { return DramTier({shm_.path() + "/tier", budget}); }

  // A model of exactly `bytes` bytes (no manifest), last used at `last_used` (unix seconds).
  void AddModel(const std::string& name, uint64_t bytes, time_t last_used) {
    const std::string dir = shm_.path() + "/tier/" + name;
    WriteFile(dir + "/pytorch_model.bin", std::string(bytes, 'x'));
    ASSERT_TRUE(Tier(0).Touch(name).ok());
    const struct timespec times[2] = {{last_used, 0}, {last_used, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir + "/.gswarm/last_used").c_str(), times, 0), 0);
  }

  TempDir shm_{"/dev/shm"};
};

TEST_F(DramTierTest, ScansCopiedModelsAndSkipsStaging) {
  TempDir src("/tmp");
  TestModel model;
  model.WriteTo(src.path() + "/m");
  DramTier tier = Tier(1 << 30);
  EXPECT_TRUE(tier.Scan().empty());
  const std::string staging = tier.StagingDir("m");
  EXPECT_EQ(staging.rfind(shm_.path() + "/tier/.staging/m.", 0), 0u) << staging;
  EXPECT_NE(staging, tier.StagingDir("m"));
  const int64_t before = time(nullptr);
  ASSERT_TRUE(CopyModelDir(src.path() + "/m", staging, tier.ModelDir("m"), {}, {}, nullptr).ok());
  WriteFile(tier.StagingDir("other") + "/config.json", "{}");  // a copy in flight

  std::vector<v1::Replica> replicas = tier.Scan();
  ASSERT_EQ(replicas.size(), 1u);
  const v1::Replica& r = replicas[0];
  EXPECT_EQ(r.model_name(), "m");
  EXPECT_EQ(r.tier(), "dram");
  EXPECT_EQ(r.state(), "ready");
  EXPECT_EQ(r.path(), tier.ModelDir("m"));
  EXPECT_EQ(r.size_bytes(), model.Bytes());  // the model's files, not .gswarm/ bookkeeping
  EXPECT_EQ(r.commit(), "abc123");
  EXPECT_EQ(r.source_url(), "hf://org/m");
  EXPECT_FALSE(r.pinned());
  EXPECT_GE(r.loaded_at().seconds(), before - 1);
  EXPECT_EQ(r.last_used_at().seconds(), r.loaded_at().seconds());
  EXPECT_EQ(r.metadata().architecture(), "LlamaForCausalLM");
  // Every byte in the tier counts against the budget: the manifest and a copy in flight too.
  EXPECT_EQ(tier.UsedBytes(), r.size_bytes() + fs::file_size(ManifestPath(r.path())) + 2);
}

TEST_F(DramTierTest, PinAndLastUsePersistAcrossInstances) {
  AddModel("a", 100, 1000);
  AddModel("b", 100, 1000);
  {
    DramTier tier = Tier(1 << 20);
    ASSERT_TRUE(tier.SetPinned("a", true).ok());
    ASSERT_TRUE(tier.Touch("b").ok());
    EXPECT_EQ(tier.SetPinned("missing", true).code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(tier.Touch("missing").code(), absl::StatusCode::kNotFound);
    EXPECT_FALSE(Exists(tier.ModelDir("missing")));
  }
  const int64_t now = time(nullptr);
  std::vector<v1::Replica> replicas = Tier(1 << 20).Scan();
  ASSERT_EQ(replicas.size(), 2u);
  for (const v1::Replica& r : replicas) {
    EXPECT_EQ(r.pinned(), r.model_name() == "a") << r.model_name();
    if (r.model_name() == "a") {
      EXPECT_EQ(r.last_used_at().seconds(), 1000);
    } else {
      EXPECT_GE(r.last_used_at().seconds(), now - 5);
    }
    EXPECT_EQ(r.size_bytes(), 100u);
  }
  ASSERT_TRUE(Tier(1 << 20).SetPinned("a", false).ok());
  for (const v1::Replica& r : Tier(1 << 20).Scan()) EXPECT_FALSE(r.pinned()) << r.model_name();
}

TEST_F(DramTierTest, PlanRoomFits) {
  AddModel("a", 1 << 20, 1000);
  absl::StatusOr<std::vector<std::string>> plan = Tier(3 << 20).PlanRoom("new", 2 << 20, false, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->empty());
}

TEST_F(DramTierTest, PlanRoomEvictsLeastRecentlyUsedSkippingPinnedAndInUse) {
  AddModel("a", 1 << 20, 1000);  // oldest, but pinned
  AddModel("b", 1 << 20, 2000);
  AddModel("c", 1 << 20, 3000);  // serving an instance
  AddModel("d", 1 << 20, 4000);
  AddModel("e", 1 << 20, 5000);
  DramTier tier = Tier((5 << 20) + (512 << 10));
  ASSERT_TRUE(tier.SetPinned("a", true).ok());
  absl::StatusOr<std::vector<std::string>> plan = tier.PlanRoom("new", 2 << 20, true, {"c"});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(*plan, (std::vector<std::string>{"b", "d"}));

  // Without evict=true: the sentence that says what is missing and how to make room.
  plan = tier.PlanRoom("new", 2 << 20, false, {"c"});
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(plan.status().message(),
            "model \"new\": DRAM budget 5.5 MiB has 512.0 KiB free, model needs 2.0 MiB (free "
            "space with DELETE /memory/dram/{name} or pass evict=true)");
}

TEST_F(DramTierTest, PlanRoomSaysWhenEvictionCannotHelp) {
  AddModel("a", 1 << 20, 1000);
  AddModel("b", 1 << 20, 2000);
  AddModel("c", 1 << 20, 3000);
  DramTier tier = Tier(4 << 20);
  ASSERT_TRUE(tier.SetPinned("a", true).ok());
  for (bool evict : {false, true}) {
    absl::StatusOr<std::vector<std::string>> plan = tier.PlanRoom("new", 3 << 20, evict, {"c"});
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(plan.status().message(),
              "model \"new\": DRAM budget 4.0 MiB has 1.0 MiB free, model needs 3.0 MiB, and "
              "evicting every model that is neither pinned nor in use would free only 1.0 MiB "
              "(pinned: a; in use: c)");
  }
  absl::StatusOr<std::vector<std::string>> plan = tier.PlanRoom("new", 5 << 20, true, {});
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(plan.status().message().find("more than the whole budget"), std::string::npos)
      << plan.status();
}

TEST_F(DramTierTest, RemoveAndClear) {
  AddModel("a", 100, 1000);
  AddModel("b", 100, 1000);
  DramTier tier = Tier(1 << 20);
  ASSERT_TRUE(tier.Remove("a").ok());
  EXPECT_TRUE(tier.Remove("a").ok());  // already gone
  EXPECT_EQ(tier.Remove("../x").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(tier.Scan().size(), 1u);
  EXPECT_EQ(tier.Scan()[0].model_name(), "b");
  EXPECT_EQ(tier.UsedBytes(), 100u);
  WriteFile(tier.StagingDir("c") + "/x", "leftover");
  ASSERT_TRUE(tier.RemoveStaleStaging().ok());
  EXPECT_EQ(tier.UsedBytes(), 100u);
  ASSERT_TRUE(tier.Clear().ok());
  EXPECT_TRUE(tier.Scan().empty());
  EXPECT_EQ(tier.UsedBytes(), 0u);
  EXPECT_TRUE(Exists(tier.root()));
}
}  // namespace
}  // namespace gswarm::client
