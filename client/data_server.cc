#include "client/data_server.h"

#include <fcntl.h>
#include <httplib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/log_tail.h"
#include "client/model_catalog.h"
#include "common/auth.h"
#include "common/paths.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr size_t kChunkBytes = 1 << 20;

// A Hub-style refusal: HTTP status, X-Error-Code ("" for none) and a sentence.
struct Failure {
  int status = 404;
  std::string code;
  std::string message;
};

// Header values carry names and paths from the request: keep them printable ASCII.
std::string HeaderSafe(absl::string_view text) {
  std::string out(text.substr(0, 512));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return out;
}

void SendJson(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                  "application/json");
}

void SendFailure(httplib::Response& res, const Failure& failure) {
  if (!failure.code.empty()) res.set_header("X-Error-Code", failure.code);
  res.set_header("X-Error-Message", HeaderSafe(failure.message));
  SendJson(res, failure.status, {{"error", failure.message}});
}

void SendNotFound(httplib::Response& res, const CatalogLookup& lookup) {
  SendFailure(res, {404, lookup.repo_known ? "RevisionNotFound" : "RepoNotFound", lookup.reason});
}

struct ByteRange {
  enum Kind { kWhole, kPart, kUnsatisfiable };
  Kind kind = kWhole;
  uint64_t first = 0;
  uint64_t length = 0;
};

// A single "bytes=a-b" / "bytes=a-" / "bytes=-n" against a file of `size` bytes. Anything else
// (several ranges, another unit, nonsense) is ignored and the whole file is sent, as HTTP allows.
ByteRange ParseRange(absl::string_view header, uint64_t size) {
  ByteRange whole{ByteRange::kWhole, 0, size};
  absl::string_view spec = absl::StripAsciiWhitespace(header);
  if (!absl::ConsumePrefix(&spec, "bytes=") || absl::StrContains(spec, ',')) return whole;
  std::pair<absl::string_view, absl::string_view> ends = absl::StrSplit(spec, '-');
  absl::string_view a = absl::StripAsciiWhitespace(ends.first);
  absl::string_view b = absl::StripAsciiWhitespace(ends.second);
  uint64_t first = 0, last = 0;
  if (!absl::StrContains(spec, '-') || (a.empty() && b.empty())) return whole;
  if (a.empty()) {  // the last n bytes
    if (!absl::SimpleAtoi(b, &last)) return whole;
    if (last == 0 || size == 0) return {ByteRange::kUnsatisfiable};
    uint64_t n = std::min(last, size);
    return {ByteRange::kPart, size - n, n};
  }
  if (!absl::SimpleAtoi(a, &first)) return whole;
  last = size == 0 ? 0 : size - 1;
  if (!b.empty()) {
    if (!absl::SimpleAtoi(b, &last) || last < first) return whole;
    last = std::min(last, size == 0 ? 0 : size - 1);
  }
  if (first >= size) return {ByteRange::kUnsatisfiable};
  return {ByteRange::kPart, first, last - first + 1};
}

// Splits "/<a>/<b>/<verb>/<rest>" after `prefix`; false when it has another shape.
bool SplitRepoPath(absl::string_view path, absl::string_view prefix, std::string* ns,
                   std::string* name, std::string* verb, std::string* rest) {
  if (!absl::ConsumePrefix(&path, prefix)) return false;
  std::vector<std::string> parts = absl::StrSplit(path, absl::MaxSplits('/', 3));
  if (parts.size() < 2 || parts[0].empty() || parts[1].empty()) return false;
  *ns = parts[0];
  *name = parts[1];
  *verb = parts.size() > 2 ? parts[2] : "";
  *rest = parts.size() > 3 ? parts[3] : "";
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataServer>> DataServer::Start(Options options) {
  if (options.roots.empty()) {
    return absl::InvalidArgumentError("data port: no model roots to serve");
  }
  std::unique_ptr<httplib::Server> server;
  if (options.tls_cert.empty() && options.tls_key.empty()) {
    server = std::make_unique<httplib::Server>();
  } else {
    auto ssl =
        std::make_unique<httplib::SSLServer>(options.tls_cert.c_str(), options.tls_key.c_str());
    if (!ssl->is_valid()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data port: cannot serve HTTPS with certificate ", options.tls_cert, " and key ",
          options.tls_key, ": unreadable, not PEM, or the key does not match"));
    }
    server = std::move(ssl);
  }
  std::unique_ptr<DataServer> self(new DataServer(std::move(options), std::move(server)));
  httplib::Server& s = *self->server_;
  const Options& o = self->options_;
  const int bound =
      o.port == 0 ? s.bind_to_any_port(o.bind) : (s.bind_to_port(o.bind, o.port) ? o.port : -1);
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat(
        "data port: cannot listen on ", o.bind, ":", o.port,
        ": the port is in use or the address is not available (set client.data_port)"));
  }
  self->port_ = bound;
  self->thread_ = std::thread([server = &s] { server->listen_after_bind(); });
  // stop() before the loop runs would be lost, and Stop() would then wait forever.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!s.is_running() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(1));
  spdlog::debug("data port: serving {} on {}:{}{}", absl::StrJoin(o.roots, ", "), o.bind, bound,
                o.auth_token.empty() ? " without auth" : "");
  return self;
}

DataServer::DataServer(Options options, std::unique_ptr<httplib::Server> server)
    : options_(std::move(options)),
      catalog_(std::make_unique<ModelCatalog>(options_.roots)),
      server_(std::move(server)) {
  InstallRoutes();
}

DataServer::~DataServer() { Stop(); }

void DataServer::Stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void DataServer::InstallRoutes() {
  httplib::Server& s = *server_;
  const size_t threads = static_cast<size_t>(std::max(1, options_.threads));
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // httplib 0.11 sets SO_REUSEPORT, which lets a second server bind a taken port silently.
  s.set_socket_options([](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s.set_payload_max_length(64 << 10);  // no endpoint takes a body
  s.set_write_timeout(30, 0);          // a reader stalled this long is cut (it resumes)
  s.set_keep_alive_max_count(1000);

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    // httplib 0.11 applies Range by itself, without bounds checks, to every answer (error bodies
    // too). File answers handle Range here, so hide it from httplib. The Request is httplib's
    // own non-const object, handed to handlers as const.
    const_cast<httplib::Request&>(req).ranges.clear();
    if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string header = req.get_header_value("Authorization");
    std::optional<absl::string_view> authorization;
    if (req.has_header("Authorization")) authorization = header;
    absl::Status auth = common::CheckAuthorization(options_.auth_token, authorization);
    if (auth.ok()) return httplib::Server::HandlerResponse::Unhandled;
    SendFailure(res, {401, "", std::string(auth.message())});
    return httplib::Server::HandlerResponse::Handled;
  });
  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      SendFailure(res, {404, "",
                        absl::StrCat("no endpoint ", req.method, " ", req.path,
                                     " on the data port (read-only: GET /api/models/"
                                     "<ns>/<name>/revision/<rev>, GET|HEAD "
                                     "/<ns>/<name>/resolve/<rev>/<file>)")});
    } else {
      SendFailure(res, {res.status, "", absl::StrCat("HTTP ", res.status)});
    }
  });
  s.set_exception_handler(
      [](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
        const std::string what = common::ExceptionMessage(error);
        spdlog::error("data port: {} {}: {}", req.method, req.path, what);
        SendFailure(res, {500, "", absl::StrCat("internal error: ", what)});
      });

  s.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    SendJson(res, 200, {{"status", "ok"}});
  });
  s.Get(R"(/logs/([A-Za-z0-9._-]+))",
        [this](const httplib::Request& req, httplib::Response& res) { ServeLog(req, res); });
  s.Get(R"(/api/models/.*)",
        [this](const httplib::Request& req, httplib::Response& res) { ServeListing(req, res); });
  s.Get(R"(/[^/]+/[^/]+/resolve/.*)",
        [this](const httplib::Request& req, httplib::Response& res) { ServeFile(req, res); });
}

void DataServer::ServeLog(const httplib::Request& req, httplib::Response& res) const {
  const std::string id = req.matches[1].str();
  if (options_.log_dir.empty() || id.front() == '.') {
    return SendFailure(res, {404, "", absl::StrCat("no log for instance ", id)});
  }
  const std::string path = absl::StrCat(options_.log_dir, "/", id, ".log");
  int lines = 100;
  if (req.has_param("tail") && !absl::SimpleAtoi(req.get_param_value("tail"), &lines)) {
    return SendFailure(res, {400, "", "tail must be a number of lines"});
  }
  absl::StatusOr<LogTail> tail = TailFile(path, lines);
  if (!tail.ok()) {
    return SendFailure(res, {404, "", absl::StrCat("no log for instance ", id, " on this node")});
  }
  const std::string follow = req.get_param_value("follow");
  if (follow != "true" && follow != "1") {
    res.set_content(tail->text, "text/plain");
    return;
  }
  // Follow: the tail first, then whatever the engine writes, until the reader goes away.
  auto offset = std::make_shared<uint64_t>(tail->end_offset);
  auto first = std::make_shared<std::string>(std::move(tail->text));
  res.set_chunked_content_provider("text/plain",
                                   [path, offset, first](size_t, httplib::DataSink& sink) {
                                     if (!first->empty()) {
                                       std::string text = std::move(*first);
                                       first->clear();
                                       return sink.write(text.data(), text.size());
                                     }
                                     // Poll for up to ~2 s per call, so a reader that left is
                                     // noticed soon.
                                     for (int i = 0; i < 10 && sink.is_writable(); ++i) {
                                       std::string grown = ReadGrowth(path, offset.get());
                                       if (!grown.empty())
                                         return sink.write(grown.data(), grown.size());
                                       std::this_thread::sleep_for(std::chrono::milliseconds(200));
                                     }
                                     return sink.is_writable();
                                   });
}

void DataServer::ServeListing(const httplib::Request& req, httplib::Response& res) const {
  std::string ns, name, verb, revision;
  if (!SplitRepoPath(req.path, "/api/models/", &ns, &name, &verb, &revision) ||
      (!verb.empty() && verb != "revision") || (verb == "revision" && revision.empty())) {
    return SendFailure(res, {404, "", absl::StrCat("no listing at ", req.path)});
  }
  if (verb.empty()) revision = "main";
  CatalogLookup lookup = catalog_->Find(ns, name, revision);
  if (!lookup.model) return SendNotFound(res, lookup);
  const CatalogModel& info = *lookup.model->info;
  nlohmann::json siblings = nlohmann::json::array();
  for (const auto& [path, i] : info.files) {
    const v1::ModelFile& f = info.manifest.files[i];
    nlohmann::json sibling = {{"rfilename", path}, {"size", f.size_bytes()}};
    if (!f.sha256().empty()) sibling["lfs"] = {{"sha256", f.sha256()}, {"size", f.size_bytes()}};
    if (!f.xxh3_128().empty()) sibling["gswarm"] = {{"xxh3_128", f.xxh3_128()}};
    siblings.push_back(std::move(sibling));
  }
  const std::string id = absl::StrCat(ns, "/", name);
  res.set_header("X-Repo-Commit", info.sha);
  SendJson(res, 200,
           {{"id", id},
            {"modelId", id},
            {"sha", info.sha},
            {"private", false},
            {"gated", false},
            {"siblings", std::move(siblings)}});
}

void DataServer::ServeFile(const httplib::Request& req, httplib::Response& res) const {
  std::string ns, name, verb, rest;
  if (!SplitRepoPath(req.path, "/", &ns, &name, &verb, &rest) || verb != "resolve") {
    return SendFailure(res, {404, "", absl::StrCat("no file at ", req.path)});
  }
  // Revisions with '/' (refs/pr/1) cannot be told from the path here; peers are asked by sha.
  std::pair<std::string, std::string> rev_path = absl::StrSplit(rest, absl::MaxSplits('/', 1));
  const std::string& revision = rev_path.first;
  const std::string& path = rev_path.second;
  CatalogLookup lookup = catalog_->Find(ns, name, revision);
  if (!lookup.model) return SendNotFound(res, lookup);
  const CatalogModel& info = *lookup.model->info;
  const std::string id = absl::StrCat(ns, "/", name);
  auto entry = info.files.find(path);
  if (entry == info.files.end()) {
    return SendFailure(res, {404, "EntryNotFound",
                             absl::StrCat(path, " is not a file of ", id, " at ", info.sha)});
  }
  const v1::ModelFile& file = info.manifest.files[entry->second];
  // Relative to the pinned directory; the path was checked to stay inside it.
  auto fd = std::make_shared<const OwnedFd>(
      ::openat(lookup.model->dir->get(), path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  struct stat st;
  if (fd->get() < 0 || ::fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    spdlog::warn("data port: {} lists {} but it cannot be read: {}", info.dir, path,
                 std::strerror(errno));
    return SendFailure(
        res, {404, "EntryNotFound", absl::StrCat(path, " of ", id, " is missing on this node")});
  }
  // A link in the folder may lead within it (a Hugging Face snapshot's to the repo's blobs), never
  // out of it: a planted link must not hand a peer any other file of this machine.
  if (!common::ResolvesBeneath(absl::StrCat("/proc/self/fd/", fd->get()),
                               common::ModelFilesRoot(info.dir))) {
    spdlog::warn("data port: {} of {} links out of the model's folder; refused", path, info.dir);
    return SendFailure(
        res, {404, "EntryNotFound", absl::StrCat(path, " of ", id, " is missing on this node")});
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size != file.size_bytes()) {
    return SendFailure(
        res, {409, "",
              absl::StrCat(path, " of ", id, " has ", size,
                           " bytes on this node but its manifest says ", file.size_bytes(),
                           ": the copy here is damaged or being replaced "
                           "(gswarm validate)")});
  }
  const std::string etag = file.sha256().empty()
                               ? absl::StrCat("\"", info.sha, "-", entry->second, "-", size, "\"")
                               : absl::StrCat("\"", file.sha256(), "\"");
  res.set_header("ETag", etag);
  res.set_header("X-Repo-Commit", info.sha);
  res.set_header("Accept-Ranges", "bytes");
  ByteRange range = ParseRange(req.get_header_value("Range"), size);
  if (req.has_header("If-Range") && req.get_header_value("If-Range") != etag) range = {};
  if (range.kind == ByteRange::kUnsatisfiable) {
    res.set_header("Content-Range", absl::StrCat("bytes */", size));
    return SendFailure(res, {416, "",
                             absl::StrCat("range ", req.get_header_value("Range"), " is outside ",
                                          path, " (", size, " bytes)")});
  }
  if (range.kind == ByteRange::kPart) {
    res.status = 206;
    res.set_header("Content-Range", absl::StrCat("bytes ", range.first, "-",
                                                 range.first + range.length - 1, "/", size));
  } else {
    res.status = 200;
    range.length = size;
  }
  if (range.length == 0) return res.set_content("", "application/octet-stream");
  ::posix_fadvise(fd->get(), static_cast<off_t>(range.first), static_cast<off_t>(range.length),
                  POSIX_FADV_SEQUENTIAL);
  auto buffer = std::make_shared<std::vector<char>>();
  res.set_content_provider(
      range.length, "application/octet-stream",
      [fd, buffer, start = range.first, dir = info.dir, path](size_t offset, size_t length,
                                                              httplib::DataSink& sink) {
        if (buffer->empty()) buffer->resize(kChunkBytes);
        const size_t want = std::min(length, buffer->size());
        ssize_t got;
        do {
          got = ::pread(fd->get(), buffer->data(), want, static_cast<off_t>(start + offset));
        } while (got < 0 && errno == EINTR);
        if (got <= 0) {  // shrunk or unreadable under us: cut the transfer; the reader resumes
          spdlog::warn("data port: {}/{}: read at {} failed: {}", dir, path, start + offset,
                       got == 0 ? "file shrank" : std::strerror(errno));
          return false;
        }
        return sink.write(buffer->data(), static_cast<size_t>(got));
      });
}

}  // namespace gswarm::client
