// Big files fetched as byte ranges from several sources at once (client/striped_fetch.h), against
// real data ports: dead peers and the fallback, and resuming from the record of finished chunks.

#include "client/striped_fetch.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/unit/data_server_fixture.h"

namespace gswarm::client {
namespace {

namespace fs = std::filesystem;

using StripedFetchTest = DataServerTest;

// Big files striped over several peers (striped_fetch.h): one peer down from the start, then
// every peer down with another standing in for the Hub, then nothing left.
TEST_F(StripedFetchTest, StripedPullsSurviveDeadPeersAndFallBack) {
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
TEST_F(StripedFetchTest, StripedFetchResumesFromItsRecord) {
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

}  // namespace
}  // namespace gswarm::client
