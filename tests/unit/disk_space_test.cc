// DiskSpace (client/disk_space.h): reservations against a location's room, and DiskTier's
// locations (client/disk_tier.h): named, custom and scanned; ValidateModelDir's two depths.

#include "client/disk_space.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "client/disk_tier.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "common/paths.h"
#include "tests/unit/temp_dir.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t kMiB = 1 << 20;

using testing::TempDir;

TEST(DiskSpaceTest, ReservationsShareTheRoomBelowTheHighWatermark) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  // A 100 MiB filesystem with 60 MiB free: at 90%, 10 MiB stay free, so 50 MiB is room.
  DiskSpace space([](const std::string&) -> absl::StatusOr<FilesystemFigures> {
    return FilesystemFigures{100 * kMiB, 60 * kMiB};
  });
  const DiskPlace place{"secondary", dir.path(), 0.9};
  EXPECT_EQ(space.Measure(place).room_bytes(), 50 * kMiB);

  absl::StatusOr<std::unique_ptr<DiskSpace::Reservation>> first =
      space.Reserve(place, 30 * kMiB, "the download of a");
  ASSERT_TRUE(first.ok()) << first.status();
  v1::DiskLocation measured = space.Measure(place);
  EXPECT_EQ(measured.reserved_bytes(), 30 * kMiB);
  EXPECT_EQ(measured.room_bytes(), 20 * kMiB);
  EXPECT_EQ(measured.name(), "secondary");

  absl::StatusOr<std::unique_ptr<DiskSpace::Reservation>> second =
      space.Reserve(place, 30 * kMiB, "the download of b");
  ASSERT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  const std::string message(second.status().message());
  for (const std::string& part :
       {std::string("the download of b in location secondary (") + dir.path() + ")",
        std::string("needs 30.0 MiB, 50.0 MiB free below its 90% high watermark"),
        std::string("(30.0 MiB of it promised to other downloads and copies)")}) {
    EXPECT_NE(message.find(part), std::string::npos) << message;
  }

  // As the first download's bytes land, its promise shrinks by them (the free space counts them).
  (*first)->Landed(10 * kMiB);
  EXPECT_EQ(space.Measure(place).reserved_bytes(), 20 * kMiB);
  (*first)->Landed(4 * kMiB);  // a running total never goes back
  EXPECT_EQ(space.Measure(place).reserved_bytes(), 20 * kMiB);
  (*first)->Landed(99 * kMiB);  // never below zero
  EXPECT_EQ(space.Measure(place).reserved_bytes(), 0u);

  first->reset();  // the first download ended: its promise is gone
  EXPECT_EQ(space.Measure(place).reserved_bytes(), 0u);
  EXPECT_TRUE(space.Reserve(place, 30 * kMiB, "the download of b").ok());
}

TEST(DiskSpaceTest, AWatermarkOfOneLetsTheDiskFillUp) {
  TempDir dir;
  DiskSpace space([](const std::string&) -> absl::StatusOr<FilesystemFigures> {
    return FilesystemFigures{100 * kMiB, 60 * kMiB};
  });
  EXPECT_TRUE(space.Reserve({"p", dir.path(), 1.0}, 60 * kMiB, "x").ok());
}

void WriteModel(const std::string& dir) {
  ModelManifest manifest;
  manifest.name = fs::path(dir).filename().string();
  v1::ModelFile file;
  file.set_path("config.json");
  file.set_size_bytes(2);
  manifest.files.push_back(file);
  ASSERT_TRUE(common::MakeDirs(dir).ok());
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/config.json", "{}").ok());
  ASSERT_TRUE(WriteManifest(dir, manifest).ok());
}

TEST(DiskTierLocationsTest, NamedAndCustomLocationsAreScannedAndFound) {
  TempDir root;
  ASSERT_FALSE(root.path().empty());
  const std::string primary = root.path() + "/primary", secondary = root.path() + "/secondary",
                    custom = root.path() + "/custom";
  DiskTier tier({.model_cache_dir = primary,
                 .hf_hub_dir = "",
                 .primary_high_watermark = 0.8,
                 .locations = {{"secondary", secondary, 0.95}}});

  absl::StatusOr<DiskPlace> place = tier.Place("", "");
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->name, "primary");
  EXPECT_DOUBLE_EQ(place->high_watermark, 0.8);
  place = tier.Place("secondary", "");
  ASSERT_TRUE(place.ok()) << place.status();
  EXPECT_EQ(place->root, secondary);

  absl::StatusOr<DiskPlace> unknown = tier.Place("tertiary", "");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find(
                "no disk location \"tertiary\" on this node (configured: primary, secondary"),
            std::string::npos)
      << unknown.status();
  EXPECT_FALSE(tier.Place("custom", "relative/dir").ok());

  // A custom directory is remembered: later scans (another DiskTier, as after a restart) see it.
  absl::StatusOr<DiskPlace> named = tier.Place("custom", custom + "/");
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->root, custom);
  WriteModel(tier.ModelDir(*tier.Place("secondary", ""), "a"));
  WriteModel(tier.ModelDir(*named, "b"));
  WriteModel(tier.ModelDir(*tier.Place("", ""), "c"));

  DiskTier restarted({.model_cache_dir = primary,
                      .hf_hub_dir = "",
                      .primary_high_watermark = 0.8,
                      .locations = {{"secondary", secondary, 0.95}}});
  std::map<std::string, std::string> where;
  for (const v1::Replica& replica : restarted.Scan(false)) {
    where[replica.model_name()] = replica.location();
  }
  EXPECT_EQ(where, (std::map<std::string, std::string>{
                       {"a", "secondary"}, {"b", "custom"}, {"c", "primary"}}));
  EXPECT_EQ(restarted.ModelDir("a"), secondary + "/a");
  EXPECT_EQ(*restarted.Locate("b"), custom + "/b");
  EXPECT_EQ(restarted.StagingDir("b"), custom + "/.gswarm-staging/b");

  ASSERT_TRUE(restarted.Remove("a").ok());
  EXPECT_FALSE(fs::exists(secondary + "/a"));
  EXPECT_EQ(restarted.ModelDir("a"), primary + "/a");  // gone: a new one would go to primary
}

// A model with two files whose manifest records both digests (`wrong_sha256`: a wrong SHA-256
// for weights.bin, as a manifest damaged after the download would), and weights.bin's bytes.
std::string WriteVerifiedModel(const std::string& dir, bool wrong_sha256 = false) {
  const std::string config = R"({"model_type": "llama"})";
  std::string weights(3 << 20, '\0');
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = static_cast<char>(i * 131 + 7);
  EXPECT_TRUE(common::MakeDirs(dir).ok());
  ModelManifest manifest;
  manifest.name = "v";
  for (const auto& [path, bytes] : {std::pair{"config.json", config}, {"weights.bin", weights}}) {
    EXPECT_TRUE(common::WriteFileAtomically(dir + "/" + path, bytes).ok());
    v1::ModelFile file;
    file.set_path(path);
    file.set_size_bytes(bytes.size());
    file.set_sha256(*Sha256OfFile(dir + "/" + path));
    file.set_xxh3_128(*Xxh3OfFile(dir + "/" + path));
    if (wrong_sha256 && file.path() == "weights.bin") file.set_sha256(std::string(64, 'a'));
    manifest.files.push_back(file);
  }
  EXPECT_TRUE(WriteManifest(dir, manifest).ok());
  return weights;
}

std::vector<std::string> Problems(const std::string& dir, bool full) {
  uint32_t checked = 0;
  absl::StatusOr<std::vector<std::string>> problems =
      ValidateModelDir(dir, "v", "disk", full, &checked);
  EXPECT_TRUE(problems.ok()) << problems.status();
  EXPECT_EQ(checked, 2u);
  return problems.ok() ? *problems : std::vector<std::string>{"<error>"};
}

TEST(ValidateModelDirTest, FastByDefaultAndSha256WithFull) {
  TempDir root;
  ASSERT_FALSE(root.path().empty());
  const std::string dir = root.path() + "/v";
  std::string weights = WriteVerifiedModel(dir);
  EXPECT_TRUE(Problems(dir, false).empty());
  EXPECT_TRUE(Problems(dir, true).empty());

  // A flipped byte: the recorded XXH3-128 catches it by default, SHA-256 with full.
  weights[weights.size() / 2] ^= 0x10;
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/weights.bin", weights).ok());
  std::vector<std::string> fast = Problems(dir, false), full = Problems(dir, true);
  ASSERT_EQ(fast.size(), 1u);
  EXPECT_EQ(fast[0].rfind("weights.bin: xxh3_128 ", 0), 0u) << fast[0];
  ASSERT_EQ(full.size(), 1u);
  EXPECT_EQ(full[0].rfind("weights.bin: sha256 ", 0), 0u) << full[0];

  // Only full reads against SHA-256: a manifest whose SHA-256 no longer matches the bytes passes
  // the fast check (the bytes still match the XXH3-128 taken from them) and fails the full one.
  WriteVerifiedModel(dir, /*wrong_sha256=*/true);
  EXPECT_TRUE(Problems(dir, false).empty());
  full = Problems(dir, true);
  ASSERT_EQ(full.size(), 1u);
  EXPECT_NE(full[0].find("expected " + std::string(64, 'a')), std::string::npos) << full[0];
}

TEST(ValidateModelDirTest, AFileWithoutTheFastDigestIsCheckedBySha256) {
  TempDir root;
  ASSERT_FALSE(root.path().empty());
  const std::string dir = root.path() + "/v";
  std::string weights = WriteVerifiedModel(dir);
  absl::StatusOr<ModelManifest> manifest = ReadManifest(dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  for (v1::ModelFile& file : manifest->files) file.clear_xxh3_128();  // an older download
  ASSERT_TRUE(WriteManifest(dir, *manifest).ok());
  weights[0] ^= 1;
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/weights.bin", weights).ok());
  std::vector<std::string> fast = Problems(dir, false);
  ASSERT_EQ(fast.size(), 1u);
  EXPECT_EQ(fast[0].rfind("weights.bin: sha256 ", 0), 0u) << fast[0];
}

}  // namespace
}  // namespace gswarm::client
