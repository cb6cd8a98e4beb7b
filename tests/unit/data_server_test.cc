// The agent's data port (client/data_server.h) against the real client code: ListRepo and the
// Downloader pull models from it exactly as from the Hub; raw requests check the Hub's error
// codes, Range, HEAD, auth and that nothing outside a model's manifest is ever served.

#include "client/data_server.h"

#include <httplib.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/downloader.h"
#include "client/hf_source.h"
#include "client/http_client.h"
#include "client/model_manifest.h"
#include "client/sha256.h"
#include "client/striped_fetch.h"
#include "common/paths.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

constexpr char kToken[] = "cluster-s3cret";
constexpr char kCommit[] = "0123456789abcdef0123456789abcdef01234567";
constexpr char kOtherSha[] = "fedcba9876543210fedcba9876543210fedcba98";
constexpr char kSecret[] = "the secret outside every model";

std::string MakeTempDir(const char* prefix) {
  std::string pattern = absl::StrCat(fs::temp_directory_path().string(), "/", prefix, "XXXXXX");
  char* made = ::mkdtemp(pattern.data());
  return made == nullptr ? "" : std::string(made);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(gen() & 0xff);
  return out;
}

std::string Slurp(const std::string& path) {
  absl::StatusOr<std::string> text = common::ReadFile(path);
  return text.ok() ? *text : "<unreadable " + path + ">";
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// Writes `files` (path -> bytes) under `dir` with a manifest, as the Downloader would.
void WriteModel(const std::string& dir, const std::string& source_url, const std::string& commit,
                const std::map<std::string, std::string>& files) {
  ModelManifest m;
  m.name = fs::path(dir).filename().string();
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
    fs::create_directories(dram_);
    fs::create_directories(out_);
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
    if (!root_.empty()) fs::remove_all(root_, ec);
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

TEST_F(DataServerTest, ListsAModelByNameAtItsCommit) {
  absl::StatusOr<RepoListing> listing = ListRepo(Hub(), "gswarm/thing", "main");
  ASSERT_TRUE(listing.ok()) << listing.status();
  EXPECT_EQ(listing->commit, kCommit);
  ASSERT_EQ(listing->files.size(), thing_.size());
  for (const v1::ModelFile& f : listing->files) {
    ASSERT_TRUE(thing_.count(f.path())) << f.path();
    EXPECT_EQ(f.size_bytes(), thing_[f.path()].size()) << f.path();
    EXPECT_EQ(f.sha256().size(), 64u) << f.path();
  }
  absl::StatusOr<RepoListing> by_sha = ListRepo(Hub(), "gswarm/thing", kCommit);
  ASSERT_TRUE(by_sha.ok()) << by_sha.status();
  EXPECT_EQ(by_sha->commit, kCommit);
}

TEST_F(DataServerTest, ModelWithoutCommitGetsAStableSha) {
  absl::StatusOr<RepoListing> first = ListRepo(Hub(), "gswarm/notes", "main");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->commit.size(), 40u);
  EXPECT_EQ(first->commit.find_first_not_of("0123456789abcdef"), std::string::npos);
  absl::StatusOr<RepoListing> again = ListRepo(Hub(), "gswarm/notes", first->commit);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->commit, first->commit);
}

TEST_F(DataServerTest, DownloaderPullsAModelByName) {
  absl::StatusOr<DownloadResult> thing = Download("thing", "hf://gswarm/thing");
  ASSERT_TRUE(thing.ok()) << thing.status();
  EXPECT_EQ(thing->commit, kCommit);
  ExpectSameFiles(out_ + "/thing", thing_);

  absl::StatusOr<DownloadResult> notes = Download("notes", "hf://gswarm/notes");
  ASSERT_TRUE(notes.ok()) << notes.status();
  ExpectSameFiles(out_ + "/notes", notes_);
  absl::StatusOr<ModelManifest> m = ReadManifest(out_ + "/notes");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->commit, notes->commit);
}

TEST_F(DataServerTest, APeerPullChecksTheFastDigestAndCarriesTheSha256) {
  absl::StatusOr<DownloadResult> thing = Download("thing", "hf://gswarm/thing", kToken, true);
  ASSERT_TRUE(thing.ok()) << thing.status();
  ExpectSameFiles(out_ + "/thing", thing_);
  absl::StatusOr<ModelManifest> source = ReadManifest(disk_ + "/thing");
  absl::StatusOr<ModelManifest> pulled = ReadManifest(out_ + "/thing");
  ASSERT_TRUE(source.ok() && pulled.ok());
  ASSERT_EQ(pulled->files.size(), source->files.size());
  for (size_t i = 0; i < source->files.size(); ++i) {
    EXPECT_EQ(pulled->files[i].sha256(), source->files[i].sha256()) << source->files[i].path();
    EXPECT_EQ(pulled->files[i].xxh3_128(), source->files[i].xxh3_128()) << source->files[i].path();
  }

  // A byte flips on the peer's disk after its manifest was written: the transfer is caught,
  // naming the file and the digest.
  std::string shard = Slurp(disk_ + "/thing/model.safetensors");
  shard[12345] ^= 0x01;
  WriteBytes(disk_ + "/thing/model.safetensors", shard);
  absl::StatusOr<DownloadResult> bad = Download("thing2", "hf://gswarm/thing", kToken, true);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_NE(
      bad.status().message().find("checksum mismatch for model.safetensors: expected xxh3_128 "),
      std::string::npos)
      << bad.status();
  EXPECT_FALSE(fs::exists(out_ + "/thing2"));
}

// Big files striped over several peers (striped_fetch.h): one peer down from the start, then
// every peer down with another standing in for the Hub, then nothing left.
TEST_F(DataServerTest, StripedPullsSurviveDeadPeersAndFallBack) {
  std::vector<std::unique_ptr<DataServer>> more;
  std::vector<std::string> urls;
  for (int i = 0; i < 2; ++i) {
    absl::StatusOr<std::unique_ptr<DataServer>> server =
        DataServer::Start({.bind = "127.0.0.1", .port = 0, .auth_token = kToken, .roots = {disk_}});
    ASSERT_TRUE(server.ok()) << server.status();
    urls.push_back(absl::StrCat("http://127.0.0.1:", (*server)->port()));
    more.push_back(*std::move(server));
  }
  auto request = [&](const std::string& name) {
    DownloadRequest req;
    req.model_name = name;
    req.source_url = absl::StrCat("hf://acme/thing@", kCommit);
    req.target_dir = absl::StrCat(out_, "/", name);
    req.staging_dir = absl::StrCat(out_, "/.gswarm-staging/", name);
    req.hub = Hub();
    req.from_peer = true;
    req.stripe_min_bytes = 1 << 20;  // model.safetensors (3 MiB) is striped
    req.stripe_chunk_bytes = 256 << 10;
    return req;
  };

  DownloadRequest all = request("striped");
  all.more_peers = urls;
  absl::StatusOr<DownloadResult> got = Downloader().Run(all, nullptr, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameFiles(out_ + "/striped", thing_);
  EXPECT_EQ(got->bytes_from_fallback, 0u);
  for (const char* suffix : {".stripes", ".stripes.done"}) {
    EXPECT_FALSE(fs::exists(out_ + "/striped/model.safetensors" + suffix)) << suffix;
  }

  // One peer is gone: its ranges go to the others.
  more[0]->Stop();
  DownloadRequest one_dead = request("one-dead");
  one_dead.more_peers = urls;
  got = Downloader().Run(one_dead, nullptr, nullptr);
  ASSERT_TRUE(got.ok()) << got.status();
  ExpectSameFiles(out_ + "/one-dead", thing_);

  // Straight to FetchStriped: only dead peers before the fallback, which then takes every
  // range; then nothing alive at all.
  more[1]->Stop();
  const std::string file = absl::StrCat("/acme/thing/resolve/", kCommit, "/model.safetensors");
  const std::string bearer = absl::StrCat("Authorization: Bearer ", kToken);
  Sha256 sha;
  sha.Update(thing_["model.safetensors"].data(), thing_["model.safetensors"].size());
  const std::string digest = sha.HexDigest();
  FetchTarget target{"",
                     "model.safetensors",
                     out_ + "/model.safetensors",
                     thing_["model.safetensors"].size(),
                     digest,
                     {},
                     ""};
  HubOptions hub = Hub();
  FetchContext ctx;
  ctx.hub = &hub;
  std::vector<StripeSource> sources = {{"peer 1", urls[0] + file, {bearer}, 2, false},
                                       {"peer 2", urls[1] + file, {bearer}, 1, false},
                                       {"the Hub", url_ + file, {bearer}, 2, true}};
  absl::StatusOr<StripedResult> striped = FetchStriped(target, sources, ctx, 256 << 10);
  ASSERT_TRUE(striped.ok()) << striped.status();
  EXPECT_EQ(striped->bytes_from_fallback, thing_["model.safetensors"].size());
  EXPECT_EQ(striped->file.sha256, digest);
  EXPECT_EQ(Slurp(out_ + "/model.safetensors"), thing_["model.safetensors"]);

  server_->Stop();
  target.final_path = out_ + "/again.safetensors";
  striped = FetchStriped(target, sources, ctx, 256 << 10);
  EXPECT_EQ(striped.status().code(), absl::StatusCode::kUnavailable) << striped.status();
  EXPECT_NE(striped.status().message().find("every source failed"), std::string::npos)
      << striped.status();
  EXPECT_FALSE(fs::exists(out_ + "/again.safetensors"));
}

// A fetch resumes with the chunks its record marks done and fetches only the rest; a record
// beside data of another size is not trusted.
TEST_F(DataServerTest, StripedFetchResumesFromItsRecord) {
  const std::string& bytes = thing_["model.safetensors"];
  constexpr uint64_t kChunk = 256 << 10;
  const size_t chunks = (bytes.size() + kChunk - 1) / kChunk;
  ASSERT_GE(chunks, 4u);
  Sha256 sha;
  sha.Update(bytes.data(), bytes.size());
  FetchTarget target{
      "", "model.safetensors", out_ + "/resumed.safetensors", bytes.size(), sha.HexDigest(), {},
      ""};
  HubOptions hub = Hub();
  FetchContext ctx;
  ctx.hub = &hub;
  const std::vector<StripeSource> sources = {
      {"the Hub",
       absl::StrCat(url_, "/acme/thing/resolve/", kCommit, "/model.safetensors"),
       {absl::StrCat("Authorization: Bearer ", kToken)},
       1,
       false}};

  // Chunks 0 and 2 done by an earlier run: their bytes in place, the others still zeros.
  std::string partial(bytes.size(), '\0');
  std::string record(chunks, '0');
  for (size_t i : {0, 2}) {
    partial.replace(i * kChunk, kChunk, bytes.substr(i * kChunk, kChunk));
    record[i] = '1';
  }
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes", partial).ok());
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes.done", record).ok());
  absl::StatusOr<StripedResult> got = FetchStriped(target, sources, ctx, kChunk);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->bytes_from_others, bytes.size() - 2 * kChunk);
  EXPECT_EQ(Slurp(target.final_path), bytes);
  EXPECT_FALSE(fs::exists(target.final_path + ".stripes.done"));

  // The same record beside a file of another size: everything is fetched again.
  target.final_path = out_ + "/restarted.safetensors";
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes", "short").ok());
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes.done", record).ok());
  got = FetchStriped(target, sources, ctx, kChunk);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->bytes_from_others, bytes.size());
  EXPECT_EQ(Slurp(target.final_path), bytes);

  // Checked by XXH3-128 (a peer's file), over two connections, chunks landing out of order.
  Xxh3 xxh3;
  xxh3.Update(bytes.data(), bytes.size());
  target.sha256 = "";
  target.xxh3 = xxh3.HexDigest();
  std::vector<StripeSource> two = sources;
  two[0].connections = 2;
  target.final_path = out_ + "/by-xxh3.safetensors";
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes", partial).ok());
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes.done", record).ok());
  got = FetchStriped(target, two, ctx, kChunk);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->file.xxh3_128, target.xxh3);
  EXPECT_EQ(got->bytes_from_others, bytes.size() - 2 * kChunk);
  EXPECT_EQ(Slurp(target.final_path), bytes);

  // A record that marks a chunk done whose bytes are not the file's: the digest covers resumed
  // chunks too, so the fetch fails naming the file and keeps nothing.
  target.final_path = out_ + "/lied.safetensors";
  std::string lie = record;
  lie[1] = '1';  // chunk 1 is still zeros
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes", partial).ok());
  ASSERT_TRUE(common::WriteFileAtomically(target.final_path + ".stripes.done", lie).ok());
  got = FetchStriped(target, two, ctx, kChunk);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss) << got.status();
  EXPECT_NE(got.status().message().find("model.safetensors"), std::string::npos) << got.status();
  EXPECT_FALSE(fs::exists(target.final_path));
  EXPECT_FALSE(fs::exists(target.final_path + ".stripes"));
}

TEST_F(DataServerTest, DownloaderPullsAHubRepoAtACommitHeldHere) {
  absl::StatusOr<DownloadResult> got =
      Download("thing-copy", absl::StrCat("hf://acme/thing@", kCommit));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->commit, kCommit);
  ExpectSameFiles(out_ + "/thing-copy", thing_);
  absl::StatusOr<ModelManifest> m = ReadManifest(out_ + "/thing-copy");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->commit, kCommit);

  // A peer stands in for the Hub only at commits it holds, not for branches.
  absl::StatusOr<RepoListing> main = ListRepo(Hub(), "acme/thing", "main");
  EXPECT_TRUE(absl::IsNotFound(main.status())) << main.status();
}

TEST_F(DataServerTest, FindsAHubRepoThatArrivesAfterTheFirstLookup) {
  EXPECT_TRUE(absl::IsNotFound(ListRepo(Hub(), "acme/late", kOtherSha).status()));
  WriteModel(dram_ + "/late", "hf://acme/late@main", kOtherSha, {{"x.bin", "xyz"}});
  absl::StatusOr<RepoListing> listing = ListRepo(Hub(), "acme/late", kOtherSha);
  ASSERT_TRUE(listing.ok()) << listing.status();
  EXPECT_EQ(listing->commit, kOtherSha);
}

TEST_F(DataServerTest, InterruptedPullResumesWithRange) {
  const std::string big = RandomBytes(16 << 20, 4);
  WriteModel(disk_ + "/big", "file:///x", "", {{"w.bin", big}});
  DownloadRequest req;
  req.model_name = "big";
  req.source_url = "hf://gswarm/big";
  req.target_dir = out_ + "/big";
  req.staging_dir = out_ + "/.gswarm-staging/big";
  req.hub = Hub();
  std::atomic<bool> cancel{false};
  absl::StatusOr<DownloadResult> first = Downloader().Run(
      req, [&](const DownloadProgress& p) { cancel = cancel || p.bytes_done >= (2 << 20); },
      &cancel);
  ASSERT_TRUE(absl::IsCancelled(first.status())) << first.status();
  absl::StatusOr<DownloadResult> second = Downloader().Run(req, nullptr, nullptr);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_LT(second->bytes_fetched, big.size());  // continued, not restarted
  EXPECT_EQ(Slurp(out_ + "/big/w.bin"), big);
}

TEST_F(DataServerTest, WrongOrMissingTokenFailsAndNothingLands) {
  absl::StatusOr<DownloadResult> none = Download("t1", "hf://gswarm/thing", "");
  EXPECT_TRUE(absl::IsUnauthenticated(none.status())) << none.status();
  absl::StatusOr<DownloadResult> wrong = Download("t2", "hf://gswarm/thing", "not-the-token");
  EXPECT_TRUE(absl::IsPermissionDenied(wrong.status())) << wrong.status();
  EXPECT_FALSE(fs::exists(out_ + "/t1"));
  EXPECT_FALSE(fs::exists(out_ + "/t2"));

  HttpResponse r = Request("GET", "/gswarm/thing/resolve/main/config.json", {}, /*auth=*/false);
  EXPECT_EQ(r.status, 401);
  EXPECT_FALSE(absl::StrContains(r.body, "llama"));
  HttpResponse health = Request("GET", "/health", {}, /*auth=*/false);
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(nlohmann::json::parse(health.body, nullptr, false), nlohmann::json({{"status", "ok"}}));
}

TEST_F(DataServerTest, UnknownModelRevisionOrFileAreHubErrors) {
  auto code = [&](const std::string& path) {
    HttpResponse r = Request("GET", path);
    EXPECT_EQ(r.status, 404) << path;
    return r.Header("x-error-code");
  };
  EXPECT_EQ(code("/api/models/gswarm/nope/revision/main"), "RepoNotFound");
  EXPECT_EQ(code(absl::StrCat("/api/models/gswarm/thing/revision/", kOtherSha)),
            "RevisionNotFound");
  EXPECT_EQ(code(absl::StrCat("/api/models/acme/thing/revision/", kOtherSha)), "RevisionNotFound");
  EXPECT_EQ(code(absl::StrCat("/api/models/acme/other/revision/", kCommit)), "RepoNotFound");
  EXPECT_EQ(code("/gswarm/thing/resolve/main/missing.bin"), "EntryNotFound");
  EXPECT_EQ(code(absl::StrCat("/gswarm/thing/resolve/", kOtherSha, "/config.json")),
            "RevisionNotFound");
  EXPECT_EQ(code("/gswarm/nope/resolve/main/config.json"), "RepoNotFound");

  absl::StatusOr<RepoListing> missing = ListRepo(Hub(), "gswarm/nope", "main");
  EXPECT_TRUE(absl::IsNotFound(missing.status())) << missing.status();
  // Read-only: nothing answers a write.
  for (const char* method : {"PUT", "POST", "DELETE"}) {
    HttpResponse w = Request(method, "/gswarm/thing/resolve/main/config.json");
    EXPECT_EQ(w.status, 404) << method;
  }
  EXPECT_EQ(Slurp(disk_ + "/thing/config.json"), thing_["config.json"]);
}

TEST_F(DataServerTest, ServesRangesAndHead) {
  const std::string& bytes = thing_["model.safetensors"];
  const std::string path = "/gswarm/thing/resolve/main/model.safetensors";
  const std::string size = std::to_string(bytes.size());

  HttpResponse whole = Request("GET", path);
  EXPECT_EQ(whole.status, 200);
  EXPECT_EQ(whole.body, bytes);
  EXPECT_EQ(whole.Header("x-repo-commit"), kCommit);
  EXPECT_EQ(whole.Header("accept-ranges"), "bytes");

  HttpResponse mid = Request("GET", path, {"Range: bytes=10-19"});
  EXPECT_EQ(mid.status, 206);
  EXPECT_EQ(mid.body, bytes.substr(10, 10));
  EXPECT_EQ(mid.Header("content-range"), "bytes 10-19/" + size);
  EXPECT_EQ(mid.Header("content-length"), "10");

  HttpResponse tail = Request("GET", path, {"Range: bytes=1000000-"});
  EXPECT_EQ(tail.status, 206);
  EXPECT_EQ(tail.body, bytes.substr(1000000));
  HttpResponse suffix = Request("GET", path, {"Range: bytes=-5"});
  EXPECT_EQ(suffix.status, 206);
  EXPECT_EQ(suffix.body, bytes.substr(bytes.size() - 5));
  HttpResponse clamped = Request("GET", path, {"Range: bytes=5-999999999"});
  EXPECT_EQ(clamped.status, 206);
  EXPECT_EQ(clamped.body, bytes.substr(5));

  HttpResponse several = Request("GET", path, {"Range: bytes=0-1,5-6"});
  EXPECT_EQ(several.status, 200);  // several ranges: the whole file, as HTTP allows
  EXPECT_EQ(several.body, bytes);

  HttpResponse beyond = Request("GET", path, {"Range: bytes=" + size + "-"});
  EXPECT_EQ(beyond.status, 416);
  EXPECT_EQ(beyond.Header("content-range"), "bytes */" + size);

  HttpResponse head = Request("HEAD", path);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("content-length"), size);
  EXPECT_TRUE(head.body.empty());
  absl::StatusOr<RepoListing> listing = ListRepo(Hub(), "gswarm/thing", "main");
  ASSERT_TRUE(listing.ok());
  for (const v1::ModelFile& f : listing->files) {
    if (f.path() == "model.safetensors") {
      EXPECT_EQ(head.Header("etag"), "\"" + f.sha256() + "\"");
    }
  }

  HttpResponse empty = Request("GET", "/gswarm/thing/resolve/main/empty.txt");
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.Header("content-length"), "0");
  HttpResponse nested = Request("GET", "/gswarm/thing/resolve/main/tokenizer%2Ftokenizer.json");
  EXPECT_EQ(nested.status, 200);
  EXPECT_EQ(nested.body, "{}");
}

TEST_F(DataServerTest, NeverServesAFileOutsideTheManifest) {
  httplib::Client client("127.0.0.1", server_->port());
  client.set_url_encode(false);  // send the paths exactly as written
  const httplib::Headers auth = {{"Authorization", absl::StrCat("Bearer ", kToken)}};
  for (const char* path : {
           "/gswarm/thing/resolve/main/../secret.txt",
           "/gswarm/thing/resolve/main/../../secret.txt",
           "/gswarm/thing/resolve/main/%2e%2e/secret.txt",
           "/gswarm/thing/resolve/main/%2e%2e%2f%2e%2e%2fsecret.txt",
           "/gswarm/thing/resolve/main//etc/passwd",
           "/gswarm/thing/resolve/main/%2Fetc%2Fpasswd",
           "/gswarm/thing/resolve/main/.gswarm/manifest.json",
           "/gswarm/thing/resolve/main/./config.json",
           "/gswarm/..%2Fsecret.txt/resolve/main/x",
           "/gswarm/%2e%2e/resolve/main/secret.txt",
           "/acme/..%2F..%2Fsecret.txt/resolve/main/x",
           "/api/models/gswarm/%2e%2e/revision/main",
       }) {
    httplib::Result r = client.Get(path, auth);
    ASSERT_TRUE(r) << path << ": " << httplib::to_string(r.error());
    EXPECT_TRUE(r->status == 404 || r->status == 400) << path << " -> " << r->status;
    EXPECT_FALSE(absl::StrContains(r->body, kSecret)) << path;
    EXPECT_FALSE(absl::StrContains(r->body, "root:")) << path;
  }
}

TEST_F(DataServerTest, ModelReplacedOrShrunkMidTransferDoesNotCrash) {
  const std::string big(RandomBytes(24 << 20, 3));
  WriteModel(dram_ + "/big", "file:///x", "", {{"w.bin", big}});
  httplib::Client client("127.0.0.1", server_->port());
  const httplib::Headers auth = {{"Authorization", absl::StrCat("Bearer ", kToken)}};

  // Deleted and recreated with other bytes: the transfer under way keeps the old file.
  std::string got;
  bool replaced = false;
  httplib::Result r =
      client.Get("/gswarm/big/resolve/main/w.bin", auth, [&](const char* data, size_t n) {
        got.append(data, n);
        if (!replaced) {
          replaced = true;
          fs::remove_all(dram_ + "/big");
          WriteModel(dram_ + "/big", "file:///x", "", {{"w.bin", "new"}});
        }
        return true;
      });
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(got == big) << "got " << got.size() << " bytes";
  HttpResponse fresh = Request("GET", "/gswarm/big/resolve/main/w.bin");
  EXPECT_EQ(fresh.body, "new");

  // Shrunk in place: the transfer is cut short, never padded or looped.
  WriteModel(dram_ + "/big", "file:///x", "", {{"w.bin", big}});
  got.clear();
  bool shrunk = false;
  r = client.Get("/gswarm/big/resolve/main/w.bin", auth, [&](const char* data, size_t n) {
    got.append(data, n);
    if (!shrunk) {
      shrunk = true;
      ::truncate((dram_ + "/big/w.bin").c_str(), 0);
    }
    return true;
  });
  EXPECT_LT(got.size(), big.size());
  EXPECT_EQ(got, big.substr(0, got.size()));
  EXPECT_EQ(Request("GET", "/health", {}, false).status, 200);
}

TEST_F(DataServerTest, PortInUseFailsNamingThePort) {
  absl::StatusOr<std::unique_ptr<DataServer>> second =
      DataServer::Start({.bind = "127.0.0.1", .port = server_->port(), .roots = {disk_}});
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), std::to_string(server_->port())))
      << second.status();
}

}  // namespace
}  // namespace gswarm::client
