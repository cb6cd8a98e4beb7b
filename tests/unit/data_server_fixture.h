#pragma once

// The data-port tests' fixture (data_server_test.cc, striped_fetch_test.cc): a DataServer on a
// free loopback port serving two models from a temp dir (one at a Hub commit, one without),
// with files outside every model that must never be served, and helpers to download from it.

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/data_server.h"
#include "client/downloader.h"
#include "client/hf_source.h"
#include "client/http_client.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "common/paths.h"
#include "gtest/gtest.h"

namespace gswarm::client {

inline constexpr char kToken[] = "cluster-s3cret";
inline constexpr char kCommit[] = "0123456789abcdef0123456789abcdef01234567";
inline constexpr char kOtherSha[] = "fedcba9876543210fedcba9876543210fedcba98";
inline constexpr char kSecret[] = "the secret outside every model";

inline std::string MakeTempDir(const char* prefix) {
  std::string pattern =
      absl::StrCat(std::filesystem::temp_directory_path().string(), "/", prefix, "XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made == nullptr ? "" : std::string(made);
}

inline std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(gen() & 0xff);
  return out;
}

inline std::string Slurp(const std::string& path) {
  absl::StatusOr<std::string> text = common::ReadFile(path);
  return text.ok() ? *text : "<unreadable " + path + ">";
}

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Writes `files` (path -> bytes) under `dir` with a manifest, as the Downloader would.
inline void WriteModel(const std::string& dir, const std::string& source_url,
                       const std::string& commit, const std::map<std::string, std::string>& files) {
  ModelManifest m;
  m.name = std::filesystem::path(dir).filename().string();
  m.source_url = source_url;
  m.revision = commit.empty() ? "" : "main";
  m.commit = commit;
  m.downloaded_at = "2024-05-01T12:00:00Z";
  for (const auto& [path, bytes] : files) {
    WriteBytes(absl::StrCat(dir, "/", path), bytes);
    v1::ModelFile f;
    f.set_path(path);
    f.set_size_bytes(bytes.size());
    Sha256 hasher;
    hasher.Update(bytes.data(), bytes.size());
    f.set_sha256(hasher.HexDigest());
    Xxh3 xxh3;
    xxh3.Update(bytes.data(), bytes.size());
    f.set_xxh3_128(xxh3.HexDigest());
    m.files.push_back(std::move(f));
  }
  ASSERT_TRUE(WriteManifest(dir, m).ok());
}

class DataServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir("gswarm-data-");
    ASSERT_FALSE(root_.empty());
    dram_ = root_ + "/dram";
    disk_ = root_ + "/disk";
    out_ = root_ + "/out";
    std::filesystem::create_directories(dram_);
    std::filesystem::create_directories(out_);
    thing_ = {{"config.json", R"({"model_type": "llama"})"},
              {"model.safetensors", RandomBytes(3 << 20, 1)},
              {"tokenizer/tokenizer.json", "{}"},
              {"empty.txt", ""}};
    notes_ = {{"a.txt", "hello"}, {"weights/b.bin", RandomBytes(100000, 2)}};
    WriteModel(disk_ + "/thing", "hf://acme/thing", kCommit, thing_);
    WriteModel(disk_ + "/notes", "file:///somewhere/notes", "", notes_);
    WriteBytes(root_ + "/secret.txt", kSecret);
    WriteBytes(disk_ + "/secret.txt", kSecret);

    absl::StatusOr<std::unique_ptr<DataServer>> server = DataServer::Start(
        {.bind = "127.0.0.1", .port = 0, .auth_token = kToken, .roots = {dram_, disk_}});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    url_ = absl::StrCat("http://127.0.0.1:", server_->port());
  }

  void TearDown() override {
    if (server_) server_->Stop();
    std::error_code ec;
    if (!root_.empty()) std::filesystem::remove_all(root_, ec);
  }

  HubOptions Hub(const std::string& token = kToken) const {
    HubOptions hub;
    hub.endpoint = url_;
    hub.token = token;
    hub.max_attempts = 2;
    hub.retry_initial_delay = absl::Milliseconds(10);
    hub.retry_max_delay = absl::Milliseconds(20);
    return hub;
  }

  absl::StatusOr<DownloadResult> Download(const std::string& name, const std::string& source,
                                          const std::string& token = kToken,
                                          bool from_peer = false) const {
    DownloadRequest req;
    req.from_peer = from_peer;
    req.model_name = name;
    req.source_url = source;
    req.target_dir = absl::StrCat(out_, "/", name);
    req.staging_dir = absl::StrCat(out_, "/.gswarm-staging/", name);
    req.hub = Hub(token);
    return Downloader().Run(req, nullptr, nullptr);
  }

  // One request with the cluster token unless `headers` say otherwise.
  HttpResponse Request(const std::string& method, const std::string& path,
                       std::vector<std::string> headers = {}, bool auth = true) const {
    HttpRequest r;
    r.method = method;
    r.url = url_ + path;
    r.headers = std::move(headers);
    if (auth) r.headers.push_back(absl::StrCat("Authorization: Bearer ", kToken));
    absl::StatusOr<HttpResponse> got = SendHttpRequest(r);
    EXPECT_TRUE(got.ok()) << got.status();
    return got.ok() ? *got : HttpResponse{};
  }

  void ExpectSameFiles(const std::string& dir, const std::map<std::string, std::string>& files) {
    for (const auto& [path, bytes] : files) {
      EXPECT_EQ(Slurp(absl::StrCat(dir, "/", path)), bytes) << path;
    }
  }

  std::string root_, dram_, disk_, out_, url_;
  std::map<std::string, std::string> thing_, notes_;
  std::unique_ptr<DataServer> server_;
};

}  // namespace gswarm::client
