// The downloader against tests/support/fake_hf_hub.py, a fake Hugging Face Hub speaking the real
// protocol (302 to a CDN path for LFS files, Range, X-Error-Code, a gated repo), with faults.

#include "client/downloader.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/hf_source.h"
#include "client/http_client.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "common/paths.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/support/process.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kTinyLlama[] = "test-org/tiny-llama";
constexpr char kTinyGguf[] = "test-org/tiny-gguf";
constexpr char kBigModel[] = "test-org/big-model";
constexpr char kGated[] = "test-org/gated-model";
constexpr uint64_t kMiB = 1 << 20;

std::string MakeTempDir(const char* prefix) {
  std::string pattern = absl::StrCat(fs::temp_directory_path().string(), "/", prefix, "XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made == nullptr ? "" : std::string(made);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

uint64_t SizeOf(const std::string& path) {
  std::error_code ec;
  uint64_t n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

class DownloaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = MakeTempDir("gswarm-fake-hub-");
    std::string ready = root_ + "/ready";
    absl::StatusOr<std::unique_ptr<testing::Subprocess>> hub =
        testing::Subprocess::Start({GSWARM_TEST_PYTHON, GSWARM_FAKE_HUB, "--root", root_ + "/hub",
                                    "--big-file-mb", "24", "--ready-file", ready},
                                   root_ + "/hub.log");
    if (!hub.ok()) {
      setup_error_ = hub.status().ToString();
      return;
    }
    hub_ = *std::move(hub);
    bool up =
        testing::WaitFor([&] { return PathExists(ready) || hub_->Exited(); }, absl::Seconds(90));
    absl::StatusOr<std::string> url = common::ReadFile(ready);
    if (!up || !url.ok()) {
      setup_error_ = absl::StrCat("the fake hub did not start; see ", root_, "/hub.log");
      return;
    }
    url_ = std::string(absl::StripAsciiWhitespace(*url));
    repos_ = Control("GET", "/_fake/repos");
  }

  static void TearDownTestSuite() {
    if (hub_) hub_->Stop(SIGTERM, absl::Seconds(10));
    hub_.reset();
    std::error_code ec;
    if (!root_.empty()) fs::remove_all(root_, ec);
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    dir_ = MakeTempDir("gswarm-dl-");
    ASSERT_FALSE(dir_.empty());
    Control("POST", "/_fake/reset");
  }

  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }

  // A JSON request to the hub's control API; {} on failure (the test's asserts then fail).
  static nlohmann::json Control(const std::string& method, const std::string& path,
                                const nlohmann::json& body = nullptr) {
    HttpRequest r;
    r.method = method;
    r.url = url_ + path;
    if (!body.is_null()) {
      r.body = body.dump();
      r.headers = {"Content-Type: application/json"};
    }
    absl::StatusOr<HttpResponse> got = SendHttpRequest(r);
    if (!got.ok() || got->status != 200) {
      ADD_FAILURE() << method << " " << path << ": "
                    << (got.ok() ? absl::StrCat("HTTP ", got->status, " ", got->body)
                                 : got.status().ToString());
      return nlohmann::json::object();
    }
    return nlohmann::json::parse(got->body, nullptr, false);
  }

  static void AddFault(const nlohmann::json& fault) { Control("POST", "/_fake/faults", fault); }
  static nlohmann::json Stats() { return Control("GET", "/_fake/stats"); }

  static std::string Commit(const std::string& repo, const std::string& ref = "main") {
    const nlohmann::json& r = repos_[repo];
    if (r["branches"].contains(ref)) return r["branches"][ref];
    return r["tags"].value(ref, "");
  }

  // Writes (or replaces) a repo in the running hub, e.g. one with a hostile listing. `files`
  // maps paths to text contents.
  static void WriteRepo(const std::string& repo, const nlohmann::json& files) {
    std::string support = fs::path(GSWARM_FAKE_HUB).parent_path().string();
    std::string script = absl::StrCat(
        "import json, sys; sys.path.insert(0, ", nlohmann::json(support).dump(),
        "); import fake_hf_hub as fh; "
        "fh.write_repo(sys.argv[1], sys.argv[2], [{'files': json.loads(sys.argv[3])}])");
    absl::StatusOr<std::unique_ptr<testing::Subprocess>> p = testing::Subprocess::Start(
        {GSWARM_TEST_PYTHON, "-c", script, root_ + "/hub", repo, files.dump()},
        root_ + "/write_repo.log");
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(testing::WaitFor([&] { return (*p)->Exited(); }, absl::Seconds(30)));
    ASSERT_TRUE(WIFEXITED((*p)->status()) && WEXITSTATUS((*p)->status()) == 0)
        << "see " << root_ << "/write_repo.log";
  }

  // Starts a slow download of the big model and cancels it partway; returns the bytes kept.
  uint64_t CancelPartway(const DownloadRequest& req) {
    AddFault({{"rate_limit_bytes_per_s", 6 * kMiB}, {"path", "model.safetensors"}});
    std::atomic<bool> cancel{false};
    absl::StatusOr<DownloadResult> r = Run(req, &cancel, [&](const DownloadProgress& p) {
      if (p.bytes_fetched_this_run >= 4 * kMiB) cancel = true;
    });
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
    EXPECT_FALSE(PathExists(req.target_dir));
    Control("POST", "/_fake/reset");
    return SizeOf(req.staging_dir + "/model.safetensors.part");
  }

  std::string ModelsDir() const { return dir_ + "/models"; }
  std::string Target(const std::string& name) const { return ModelsDir() + "/" + name; }
  std::string Staging(const std::string& name) const {
    return ModelsDir() + "/.gswarm-staging/" + name;
  }

  DownloadRequest Request(const std::string& name, const std::string& source) const {
    DownloadRequest req;
    req.model_name = name;
    req.source_url = source;
    req.target_dir = Target(name);
    req.staging_dir = Staging(name);
    req.hub.endpoint = url_;
    req.hub.retry_initial_delay = absl::Milliseconds(10);
    req.hub.retry_max_delay = absl::Milliseconds(200);
    req.hub.low_speed_time = absl::Seconds(10);
    return req;
  }

  absl::StatusOr<DownloadResult> Run(const DownloadRequest& req,
                                     const std::atomic<bool>* cancel = nullptr,
                                     std::function<void(const DownloadProgress&)> progress = {}) {
    return Downloader().Run(req, std::move(progress), cancel);
  }

  // Every file of the model directory matches its manifest entry and the hub's bytes (the fake
  // keeps each served file as blobs/<sha256>); the manifest records `commit`.
  void ExpectVerified(const std::string& name, const std::string& commit) {
    absl::StatusOr<ModelManifest> m = ReadManifest(Target(name));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->commit, commit);
    ASSERT_FALSE(m->files.empty());
    for (const v1::ModelFile& f : m->files) {
      std::string path = Target(name) + "/" + f.path();
      EXPECT_EQ(SizeOf(path), f.size_bytes()) << f.path();
      absl::StatusOr<std::string> sha = Sha256OfFile(path);
      ASSERT_TRUE(sha.ok()) << sha.status();
      EXPECT_EQ(*sha, f.sha256()) << f.path();
      absl::StatusOr<std::string> xxh3 = Xxh3OfFile(path);
      ASSERT_TRUE(xxh3.ok()) << xxh3.status();
      EXPECT_EQ(*xxh3, f.xxh3_128()) << f.path();
      std::string blob = root_ + "/hub/blobs/" + *sha;
      EXPECT_TRUE(PathExists(blob)) << f.path() << " does not hold bytes the hub served";
      EXPECT_FALSE(PathExists(path + ".part"));
    }
    EXPECT_FALSE(PathExists(Staging(name)));
  }

  static inline std::string root_;
  static inline std::string url_;
  static inline std::string setup_error_;
  static inline nlohmann::json repos_;
  static inline std::unique_ptr<testing::Subprocess> hub_;
  std::string dir_;
};

TEST_F(DownloaderTest, FullDownloadLandsVerified) {
  std::vector<DownloadProgress> seen;
  absl::StatusOr<DownloadResult> r =
      Run(Request("tiny", absl::StrCat("hf://", kTinyLlama)), nullptr,
          [&](const DownloadProgress& p) { seen.push_back(p); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->commit, Commit(kTinyLlama));
  ExpectVerified("tiny", Commit(kTinyLlama));

  std::vector<std::string> expected = repos_[kTinyLlama]["files"]["main"];
  ASSERT_EQ(r->files.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_EQ(r->files[i].path(), expected[i]);
  EXPECT_GT(r->size_bytes, 0u);
  EXPECT_EQ(r->bytes_fetched, r->size_bytes);
  EXPECT_FALSE(PathExists(Staging("tiny") + ".lock"));

  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().bytes_done, r->size_bytes);
  EXPECT_EQ(seen.back().bytes_total, r->size_bytes);
  EXPECT_EQ(seen.back().files_done, expected.size());
  EXPECT_EQ(seen.back().files_total, expected.size());
}

TEST_F(DownloaderTest, RevisionPinGivesTheOlderCommit) {
  std::string v1 = Commit(kTinyLlama, "v1.0");
  ASSERT_FALSE(v1.empty());
  ASSERT_NE(v1, Commit(kTinyLlama));
  absl::StatusOr<DownloadResult> r =
      Run(Request("by-tag", absl::StrCat("hf://", kTinyLlama, "@v1.0")));
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("by-tag", v1);
  absl::StatusOr<std::string> config = common::ReadFile(Target("by-tag") + "/config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(nlohmann::json::parse(*config)["num_hidden_layers"], 2);

  DownloadRequest by_sha = Request("by-sha", absl::StrCat("hf://", kTinyLlama));
  by_sha.revision = v1;
  r = Run(by_sha);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("by-sha", v1);
}

TEST_F(DownloaderTest, GatedRepoNeedsAToken) {
  absl::StatusOr<DownloadResult> r = Run(Request("gated", absl::StrCat("hf://", kGated)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(r.status().message(),
            "repo test-org/gated-model is gated or private: set HF_TOKEN to a token with access "
            "(https://huggingface.co/settings/tokens)");
  EXPECT_FALSE(PathExists(Target("gated")));

  DownloadRequest wrong = Request("gated", absl::StrCat("hf://", kGated));
  wrong.hub.token = "hf_wrong";
  r = Run(wrong);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("HF_TOKEN has no access"));
  EXPECT_FALSE(PathExists(Target("gated")));

  DownloadRequest with_token = Request("gated", absl::StrCat("hf://", kGated));
  with_token.hub.token = "hf_test_token";
  r = Run(with_token);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("gated", Commit(kGated));
}

TEST_F(DownloaderTest, UnknownRepoAndRevisionSayWhatIsMissing) {
  absl::StatusOr<DownloadResult> r = Run(Request("x", "hf://test-org/no-such-model"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), absl::StrCat("repo test-org/no-such-model not found on ", url_,
                                               " (check the name; private repos need HF_TOKEN)"));
  r = Run(Request("x", absl::StrCat("hf://", kTinyLlama, "@v9.9")));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(r.status().message(), "revision v9.9 not found in test-org/tiny-llama");
  EXPECT_FALSE(PathExists(Target("x")));
}

TEST_F(DownloaderTest, CutConnectionIsResumedWithRange) {
  AddFault({{"cut_after_bytes", 5 * kMiB},
            {"times", 1},
            {"path", "model.safetensors"},
            {"kinds", {"cdn"}}});
  absl::StatusOr<DownloadResult> r = Run(Request("big", absl::StrCat("hf://", kBigModel)));
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("big", Commit(kBigModel));
  nlohmann::json stats = Stats();
  EXPECT_EQ(stats["faults_fired"].value("cut_after_bytes", 0), 1);
  bool resumed = false;
  for (const nlohmann::json& range : stats["ranges"]) {
    if (absl::StrContains(range.value("file", ""), "model.safetensors") &&
        range.value("status", 0) == 206 && range.value("range", "") != "bytes=0-") {
      resumed = true;
    }
  }
  EXPECT_TRUE(resumed) << stats["ranges"].dump();
  // The resumed request did not fetch the file again from the start.
  EXPECT_LT(stats["file_bytes_sent"].get<uint64_t>(), r->size_bytes + 2 * kMiB);
}

TEST_F(DownloaderTest, FlippedByteFailsWithDataLossNamingTheFile) {
  AddFault({{"flip_byte_at", 1000}, {"path", "model-00002-of-00002.safetensors"}});
  absl::StatusOr<DownloadResult> r = Run(Request("flip", absl::StrCat("hf://", kTinyLlama)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_THAT(
      std::string(r.status().message()),
      HasSubstr("checksum mismatch for model-00002-of-00002.safetensors: expected sha256 "));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("the download was corrupted, retry"));
  EXPECT_FALSE(PathExists(Target("flip")));
  EXPECT_FALSE(PathExists(Staging("flip") + "/model-00002-of-00002.safetensors.part"));
  EXPECT_FALSE(PathExists(Staging("flip") + "/model-00002-of-00002.safetensors"));
}

TEST_F(DownloaderTest, CancelKeepsPartialFilesAndTheNextRunResumes) {
  DownloadRequest req = Request("slow", absl::StrCat("hf://", kBigModel));
  uint64_t kept = CancelPartway(req);
  EXPECT_GE(kept, 3 * kMiB);

  uint64_t done_at_start = 0;
  bool first = true;
  absl::StatusOr<DownloadResult> r = Run(req, nullptr, [&](const DownloadProgress& p) {
    if (first) done_at_start = p.bytes_done;
    first = false;
  });
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("slow", Commit(kBigModel));
  EXPECT_GE(done_at_start, kept);  // progress counts what earlier runs left
  uint64_t missing = r->size_bytes - kept;
  uint64_t sent = Stats()["file_bytes_sent"].get<uint64_t>();
  EXPECT_LT(sent, 2 * missing) << "kept " << kept << " of " << r->size_bytes;
  EXPECT_LT(r->bytes_fetched, 2 * missing);
}

TEST_F(DownloaderTest, CorruptedPartialFileIsFetchedAgain) {
  DownloadRequest req = Request("slow", absl::StrCat("hf://", kBigModel));
  ASSERT_GT(CancelPartway(req), 1000u);
  {  // a byte already on disk goes bad: the resumed file cannot match its sha256
    std::fstream part(req.staging_dir + "/model.safetensors.part",
                      std::ios::in | std::ios::out | std::ios::binary);
    part.seekg(1000);
    char c = static_cast<char>(part.get() ^ 0xff);
    part.seekp(1000);
    part.put(c);
  }
  absl::StatusOr<DownloadResult> r = Run(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("slow", Commit(kBigModel));
  EXPECT_GE(r->bytes_fetched, r->size_bytes);  // the rest, then the whole file again
}

TEST_F(DownloaderTest, PartialFileLongerThanTheFileStartsOver) {
  DownloadRequest req = Request("slow", absl::StrCat("hf://", kBigModel));
  ASSERT_GT(CancelPartway(req), 0u);
  std::ofstream(req.staging_dir + "/model.safetensors.part", std::ios::app | std::ios::binary)
      << std::string(30 * kMiB, 'x');
  absl::StatusOr<DownloadResult> r = Run(req);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("slow", Commit(kBigModel));
  EXPECT_GE(r->bytes_fetched, 24 * kMiB);  // the whole file, from zero
  EXPECT_LE(r->bytes_fetched, r->size_bytes);
}

TEST_F(DownloaderTest, HostileListingCannotEscapeStaging) {
  WriteRepo("evil-org/escape", {{"ok.txt", "fine"}, {"../escape.txt", "gotcha"}});
  absl::StatusOr<DownloadResult> r = Run(Request("evil", "hf://evil-org/escape"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("unsafe file path \"../escape.txt\""));
  EXPECT_FALSE(PathExists(ModelsDir() + "/.gswarm-staging/escape.txt"));
  EXPECT_FALSE(PathExists(Staging("evil")));
  EXPECT_FALSE(PathExists(Target("evil")));

  WriteRepo("evil-org/manifest", {{"ok.txt", "fine"}, {".gswarm/manifest.json", "{}"}});
  r = Run(Request("evil", "hf://evil-org/manifest"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("reserved file path"));
}

TEST_F(DownloaderTest, DiskSpaceIsCheckedBeforeFetching) {
  Downloader::Options options;
  options.free_space = [](const std::string&) -> absl::StatusOr<uint64_t> { return kMiB; };
  absl::StatusOr<DownloadResult> r =
      Downloader(options).Run(Request("big", absl::StrCat("hf://", kBigModel)), {}, nullptr);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr(absl::StrCat("not enough disk space for big in ", ModelsDir(),
                                     ": needs 24.0 MiB, 1.0 MiB free")));
  EXPECT_FALSE(PathExists(Staging("big")));
  EXPECT_FALSE(PathExists(Target("big")));
  EXPECT_EQ(Stats()["file_bytes_sent"], 0);
}

TEST_F(DownloaderTest, OfflineUsesOnlyWhatIsOnDisk) {
  DownloadRequest req = Request("gguf", absl::StrCat("hf://", kTinyGguf));
  req.hub.offline = true;
  absl::StatusOr<DownloadResult> r = Run(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(),
            "HF_HUB_OFFLINE is set and gguf is not in the cache: unset HF_HUB_OFFLINE or "
            "download it once while online");
  EXPECT_EQ(Stats()["requests_total"], 0);

  req.hub.offline = false;
  ASSERT_TRUE(Run(req).ok());
  Control("POST", "/_fake/reset");
  req.hub.offline = true;
  r = Run(req);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->commit, Commit(kTinyGguf));
  EXPECT_EQ(r->bytes_fetched, 0u);
  EXPECT_EQ(Stats()["requests_total"], 0);
}

TEST_F(DownloaderTest, ExistingModelDirectory) {
  DownloadRequest req = Request("gguf", absl::StrCat("hf://", kTinyGguf));
  ASSERT_TRUE(Run(req).ok());
  Control("POST", "/_fake/reset");
  absl::StatusOr<DownloadResult> again = Run(req);  // the same commit: nothing to do
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->bytes_fetched, 0u);
  EXPECT_EQ(Stats()["file_bytes_sent"], 0);

  ASSERT_TRUE(common::MakeDirs(Target("other")).ok());
  absl::StatusOr<DownloadResult> r = Run(Request("other", absl::StrCat("hf://", kTinyGguf)));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.status().message(), absl::StrCat("model directory ", Target("other"),
                                               " already exists: remove it first (gswarm rm "
                                               "other)"));
  // Another commit of the same repo in the directory is not "already there" either.
  DownloadRequest older = Request("gguf2", absl::StrCat("hf://", kTinyLlama, "@v1.0"));
  ASSERT_TRUE(Run(older).ok());
  older.source_url = absl::StrCat("hf://", kTinyLlama);
  EXPECT_EQ(Run(older).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(DownloaderTest, HttpsSingleFile) {
  std::string url = absl::StrCat(url_, "/", kTinyGguf, "/resolve/main/tiny.Q8_0.gguf");
  absl::StatusOr<DownloadResult> r = Run(Request("one", url));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->files.size(), 1u);
  EXPECT_EQ(r->files[0].path(), "tiny.Q8_0.gguf");
  ExpectVerified("one", "");
  absl::StatusOr<ModelManifest> m = ReadManifest(Target("one"));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->source_url, url);

  r = Run(Request("missing", absl::StrCat(url_, "/", kTinyGguf, "/resolve/main/nope.gguf")));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
}

TEST_F(DownloaderTest, LocalFolderImport) {
  std::string src = dir_ + "/src";
  ASSERT_TRUE(common::MakeDirs(src + "/sub").ok());
  ASSERT_TRUE(common::MakeDirs(src + "/.gswarm").ok());
  std::ofstream(src + "/config.json") << R"({"model_type": "llama"})";
  std::ofstream(src + "/sub/weights.bin") << std::string(300000, 'w');
  std::ofstream(src + "/.gswarm/manifest.json") << "{}";
  fs::create_symlink(src + "/config.json", src + "/linked.json");
  absl::StatusOr<DownloadResult> r = Run(Request("local", "file://" + src));
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<ModelManifest> m = ReadManifest(Target("local"));
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> paths;
  for (const v1::ModelFile& f : m->files) {
    paths.push_back(f.path());
    absl::StatusOr<std::string> sha = Sha256OfFile(Target("local") + "/" + f.path());
    ASSERT_TRUE(sha.ok());
    EXPECT_EQ(*sha, f.sha256());
  }
  EXPECT_EQ(paths, (std::vector<std::string>{"config.json", "linked.json", "sub/weights.bin"}));
  EXPECT_FALSE(fs::is_symlink(Target("local") + "/linked.json"));
  EXPECT_EQ(SizeOf(Target("local") + "/sub/weights.bin"), 300000u);
  EXPECT_FALSE(PathExists(Staging("local")));
}

TEST_F(DownloaderTest, ServerErrorsAndRateLimitsAreRetried) {
  AddFault({{"fail_status", 429}, {"retry_after", 1}, {"times", 1}, {"kinds", {"api"}}});
  AddFault({{"fail_status", 503}, {"times", 2}, {"kinds", {"resolve"}}});
  absl::StatusOr<DownloadResult> r = Run(Request("gguf", absl::StrCat("hf://", kTinyGguf)));
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectVerified("gguf", Commit(kTinyGguf));
  nlohmann::json stats = Stats();
  EXPECT_EQ(stats["status_counts"].value("429", 0), 1);
  EXPECT_EQ(stats["status_counts"].value("503", 0), 2);
}

TEST_F(DownloaderTest, PersistentServerErrorGivesUp) {
  AddFault({{"fail_status", 500}, {"kinds", {"cdn"}}});
  DownloadRequest req = Request("gguf", absl::StrCat("hf://", kTinyGguf));
  req.hub.max_attempts = 3;
  absl::StatusOr<DownloadResult> r = Run(req);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("tiny.Q8_0.gguf failed 3 times"));
  EXPECT_FALSE(PathExists(Target("gguf")));
}

TEST_F(DownloaderTest, ConcurrentRunsForDifferentModels) {
  absl::StatusOr<DownloadResult> a, b;
  std::thread ta([&] { a = Run(Request("a", absl::StrCat("hf://", kTinyLlama))); });
  std::thread tb([&] { b = Run(Request("b", absl::StrCat("hf://", kTinyGguf))); });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectVerified("a", Commit(kTinyLlama));
  ExpectVerified("b", Commit(kTinyGguf));
}

}  // namespace
}  // namespace gswarm::client
