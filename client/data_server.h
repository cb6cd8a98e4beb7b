#pragma once

// The agent's data port: serves the models on this node's tiers (DRAM, disk) read-only over HTTP
// in the Hugging Face Hub's shape, so that another agent's Downloader (downloader.h) pulls a model
// from here exactly as it would from the Hub: HubOptions{endpoint = "http://<this node>:<port>",
// token = <cluster token>}.
//
// Two namespaces share the Hub's URLs:
//   gswarm/<name>   a model by its GSwarm name. Any revision ("main") resolves to the manifest's
//                   commit, or, for a model without one (https://, file://), to a stable hash of
//                   its file list; a 40-hex revision must be that sha.
//   <org>/<repo>    a model whose manifest says it came from hf://<org>/<repo>, at the commit it
//                   records: a node holding commit C stands in for the Hub for that commit only.
// Endpoints:
//   GET /api/models/<ns>/<name>/revision/<rev>[?blobs=true]   the listing (id, sha, siblings;
//        a sibling whose manifest records the fast digest carries {"gswarm": {"xxh3_128": ...}},
//        which the receiving Downloader checks instead of recomputing SHA-256)
//   GET|HEAD /<ns>/<name>/resolve/<rev>/<path>                 a file, single Range (206/416)
//   GET /health                                                {"status":"ok"}, without auth
// Errors are the Hub's: 404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound,
// X-Error-Message and {"error": "..."}; 401 without the cluster token.
//
// Only files a model's manifest (<dir>/.gswarm/manifest.json) lists are served; folders without a
// manifest are invisible. Each request pins the model directory and the file by descriptor, so a
// model replaced or deleted mid-transfer yields a cut transfer (which the Downloader resumes or
// fails), never another model's bytes or a crash.
//
// Thread safety: thread-safe. Requests are served on httplib's pool; Stop may be called from any
// thread (not from a request).

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace gswarm::client {

class ModelCatalog;

class DataServer {
 public:
  struct Options {
    // Address and port to listen on; port 0 picks a free port (see port()).
    std::string bind = "0.0.0.0";
    int port = 8102;
    // The cluster token every request but /health must present ("Authorization: Bearer <token>").
    // Empty: no auth.
    std::string auth_token;
    // Where models live, tried in order (e.g. {dram root, disk root}): each model is
    // <root>/<name>/ with a manifest. A root that does not exist is skipped.
    std::vector<std::string> roots;
    // Instance logs (<log_dir>/<id>.log), served at GET /logs/<id>?tail=N&follow=true for
    // `gswarm logs`. Empty: no logs served.
    std::string log_dir;
    // PEM certificate and key: serve HTTPS. Both empty: plain HTTP.
    std::string tls_cert;
    std::string tls_key;
    // Worker threads. A download holds one per connection for as long as it streams (the
    // Downloader opens up to `parallel_files` connections).
    int threads = 32;
  };

  // Binds (UNAVAILABLE naming the address and port when it is taken) and serves on a background
  // thread. INVALID_ARGUMENT for unusable TLS files or no roots.
  static absl::StatusOr<std::unique_ptr<DataServer>> Start(Options options);
  ~DataServer();
  DataServer(const DataServer&) = delete;
  DataServer& operator=(const DataServer&) = delete;

  // The port bound (the chosen one when Options::port was 0).
  int port() const { return port_; }

  // Stops listening and waits for the serving thread. Idempotent.
  void Stop();

 private:
  DataServer(Options options, std::unique_ptr<httplib::Server> server);
  void InstallRoutes();
  void ServeListing(const httplib::Request& req, httplib::Response& res) const;
  void ServeFile(const httplib::Request& req, httplib::Response& res) const;
  void ServeLog(const httplib::Request& req, httplib::Response& res) const;

  const Options options_;
  std::unique_ptr<ModelCatalog> catalog_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace gswarm::client
