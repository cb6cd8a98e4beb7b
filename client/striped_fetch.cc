#include "client/striped_fetch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/http_client.h"
#include "client/sha256.h"
#include "common/fd.h"
#include "common/mutex.h"
#include "common/paths.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr char kTodo = '0', kDone = '1', kRunning = 'r';
// A source that fails this many times in a row is dropped.
constexpr int kMaxFailures = 2;

bool Stopped(const FetchContext& ctx) {
  return (ctx.cancel != nullptr && ctx.cancel->load()) || (ctx.stop != nullptr && ctx.stop->load());
}

// The state every connection and the hashing loop share.
struct Stripes {
  Stripes(const FetchTarget& t, const FetchContext& c, uint64_t chunk, int fd)
      : target(t), ctx(c), chunk(chunk), fd(fd), chunks((*t.size + chunk - 1) / chunk) {}

  const FetchTarget& target;
  const FetchContext& ctx;
  const uint64_t chunk;
  const int fd;
  const size_t chunks;
  std::string done_path;
  common::UniqueFd done_fd;  // the record, open for MarkDone

  std::atomic<uint64_t> from_fallback{0}, from_others{0};

  gswarm::Mutex mu;
  std::string state ABSL_GUARDED_BY(mu);  // one of kTodo, kDone, kRunning per chunk
  size_t done_prefix ABSL_GUARDED_BY(mu) = 0;
  int live_others ABSL_GUARDED_BY(mu) = 0;  // non-fallback sources still in use
  int live ABSL_GUARDED_BY(mu) = 0;
  absl::Status fatal ABSL_GUARDED_BY(mu);
  std::string last_error ABSL_GUARDED_BY(mu);

  uint64_t Length(size_t i) const { return std::min(chunk, *target.size - i * chunk); }

  // Opens the record of finished chunks for MarkDone. `fresh`: every chunk to do, written over
  // whatever was there (truncated first, so a crash meanwhile leaves a record too short to be
  // trusted, never an old one).
  absl::Status OpenRecord(bool fresh) {
    const int flags = O_WRONLY | O_CLOEXEC | (fresh ? O_CREAT | O_TRUNC : 0);
    done_fd.reset(::open(done_path.c_str(), flags, 0644));
    if (!done_fd.valid()) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", done_path));
    }
    if (!fresh) return absl::OkStatus();
    const std::string record(chunks, kTodo);
    const ssize_t n = ::write(done_fd.get(), record.data(), record.size());
    if (n != static_cast<ssize_t>(record.size())) {  // short: the disk is full
      return absl::ErrnoToStatus(n < 0 ? errno : ENOSPC, absl::StrCat("cannot write ", done_path));
    }
    return absl::OkStatus();
  }
  // Chunk i is done: its byte of the record, written in place (one byte is written whole, and
  // nothing is renamed: a rename per chunk waited for the filesystem's journal, ~15 ms on ext4
  // while the chunks' data was being written back). No fsync: a lost mark only means fetching
  // that chunk again.
  void MarkDone(size_t i) const {
    (void)!::pwrite(done_fd.get(), &kDone, 1, static_cast<off_t>(i));
  }
};

// State of one ranged GET.
struct RangeTransfer {
  Stripes* stripes;
  uint64_t offset, length, written = 0;
  bool checked = false, refused = false;
  absl::Status sink;
  std::map<std::string, std::string> headers;
  CURL* easy;
};

size_t OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  ParseHeaderLine(absl::string_view(data, size * nmemb),
                  static_cast<RangeTransfer*>(user)->headers);
  return size * nmemb;
}

size_t OnData(char* data, size_t size, size_t nmemb, void* user) {
  auto* t = static_cast<RangeTransfer*>(user);
  const size_t n = size * nmemb;
  if (!t->checked) {
    t->checked = true;
    long code = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
    uint64_t first = 0;
    absl::string_view range = t->headers["content-range"];
    // Only a 206 that starts where asked is written; anything else is a failed range.
    if (code != 206 || !absl::ConsumePrefix(&range, "bytes ") ||
        !absl::SimpleAtoi(range.substr(0, range.find('-')), &first) || first != t->offset) {
      t->refused = true;
      return 0;
    }
  }
  if (t->written + n > t->length) {
    t->refused = true;
    return 0;
  }
  for (size_t done = 0; done < n;) {
    const ssize_t w = ::pwrite(t->stripes->fd, data + done, n - done,
                               static_cast<off_t>(t->offset + t->written + done));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      t->sink = absl::ErrnoToStatus(
          errno, absl::StrCat("cannot write ", t->stripes->target.final_path, ".stripes"));
      return 0;
    }
    done += static_cast<size_t>(w);
  }
  t->written += n;
  if (t->stripes->ctx.on_bytes) t->stripes->ctx.on_bytes(static_cast<int64_t>(n), n);
  return n;
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return Stopped(static_cast<Stripes*>(user)->ctx) ? 1 : 0;
}

// GETs chunk `i` from `source` into place. OK when all its bytes are written.
absl::Status FetchRange(CURL* easy, Stripes& s, const StripeSource& source, size_t i) {
  RangeTransfer t{&s, i * s.chunk, s.Length(i)};
  t.easy = easy;
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, curl_slist_free_all);
  for (const std::string& line : source.headers) {
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next == nullptr) return absl::InternalError("curl_slist_append failed");
    headers.release();
    headers.reset(next);
  }
  const std::string range = absl::StrCat(t.offset, "-", t.offset + t.length - 1);
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_reset(easy);
  curl_easy_setopt(easy, CURLOPT_URL, source.url.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, UserAgent());
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 30L);
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME,
                   std::max(1L, static_cast<long>(absl::ToInt64Seconds(source.stall_timeout))));
  curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 1L << 20);
  curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(easy, CURLOPT_RANGE, range.c_str());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OnData);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &OnProgress);
  curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &s);
  curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
  const CURLcode rc = curl_easy_perform(easy);
  absl::Status status;
  if (!t.sink.ok()) {
    status = t.sink;
  } else if (rc == CURLE_ABORTED_BY_CALLBACK && Stopped(s.ctx)) {
    status = absl::CancelledError(absl::StrCat("download of ", s.target.display_name, " stopped"));
  } else if (t.refused) {
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    status = absl::UnavailableError(absl::StrCat(
        source.name, " answered HTTP ", code, " for bytes ", range, " of ", s.target.display_name));
  } else if (rc != CURLE_OK) {
    status = absl::UnavailableError(
        absl::StrCat(source.name, ": ", errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc)));
  } else if (t.written != t.length) {
    status = absl::UnavailableError(absl::StrCat(source.name, " sent ", t.written, " of ", t.length,
                                                 " bytes of ", s.target.display_name));
  }
  // Received from this source, kept or not: the accounts of where bytes came from add up.
  (source.fallback ? s.from_fallback : s.from_others).fetch_add(t.written);
  if (!status.ok() && t.written > 0 && s.ctx.on_bytes) {
    s.ctx.on_bytes(-static_cast<int64_t>(t.written), 0);  // on disk again later
  }
  return status;
}

// One connection to one source: takes chunks until none is left, the source is dropped, or
// the fetch stops. `source_dead` and `failures` are the source's, shared by its connections
// (guarded by s.mu).
void Connection(Stripes& s, const StripeSource& source, char* source_dead, int* failures) {
  std::unique_ptr<CURL, void (*)(CURL*)> easy(curl_easy_init(), curl_easy_cleanup);
  for (;;) {
    size_t i = 0;
    {
      gswarm::MutexLock lock(&s.mu);
      auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
        if (!s.fatal.ok() || *source_dead || s.done_prefix == s.chunks) return true;
        if (source.fallback && s.live_others > 0) return false;
        return s.state.find(kTodo) != std::string::npos;
      };
      while (!s.mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100))) {
        if (Stopped(s.ctx)) return;
      }
      if (!s.fatal.ok() || *source_dead || Stopped(s.ctx)) return;
      i = s.state.find(kTodo);
      if (i == std::string::npos) return;  // all done or in flight elsewhere
      s.state[i] = kRunning;
    }
    absl::Status got = easy != nullptr ? FetchRange(easy.get(), s, source, i)
                                       : absl::InternalError("curl_easy_init failed");
    if (got.ok()) s.MarkDone(i);
    gswarm::MutexLock lock(&s.mu);
    if (got.ok()) {
      s.state[i] = kDone;
      while (s.done_prefix < s.chunks && s.state[s.done_prefix] == kDone) ++s.done_prefix;
      *failures = 0;
      continue;
    }
    s.state[i] = kTodo;
    if (absl::IsCancelled(got)) return;
    if (absl::IsDataLoss(got) || absl::IsInternal(got) || absl::IsResourceExhausted(got) ||
        absl::IsPermissionDenied(got) || got.code() == absl::StatusCode::kUnknown) {
      s.fatal = got;  // the disk, not the source
      return;
    }
    s.last_error = std::string(got.message());
    spdlog::warn("{}: bytes {}-{} did not arrive ({}); the range goes back to the queue",
                 s.target.display_name, i * s.chunk, i * s.chunk + s.Length(i) - 1, got.message());
    if (*source_dead) return;
    if (++*failures < kMaxFailures) continue;
    *source_dead = 1;
    --s.live;
    if (!source.fallback) --s.live_others;
    spdlog::warn("{}: dropping a source: {}; {}", s.target.display_name, got.message(),
                 s.live > 0 ? "its ranges go to the other sources" : "no source is left");
    if (s.live == 0) {
      s.fatal =
          absl::UnavailableError(absl::StrCat("downloading ", s.target.display_name,
                                              ": every source failed; the last: ", s.last_error));
    }
    return;
  }
}

}  // namespace

absl::StatusOr<StripedResult> FetchStriped(const FetchTarget& target,
                                           const std::vector<StripeSource>& sources,
                                           const FetchContext& ctx, uint64_t chunk_bytes) {
  InitCurl();
  const uint64_t size = target.size.value_or(0);
  const std::string path = target.final_path + ".stripes";
  common::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (fd.get() < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  Stripes s(target, ctx, std::max<uint64_t>(chunk_bytes, 1), fd.get());
  s.done_path = path + ".done";

  // What an earlier run finished, where it is for this very file.
  struct stat st;
  absl::StatusOr<std::string> record = common::ReadFile(s.done_path);
  std::string state(s.chunks, kTodo);
  if (::fstat(fd.get(), &st) == 0 && static_cast<uint64_t>(st.st_size) == size && record.ok() &&
      record->size() == s.chunks &&
      record->find_first_not_of(std::string{kTodo, kDone}) == std::string::npos) {
    state = *record;
    RETURN_IF_ERROR(s.OpenRecord(/*fresh=*/false));
  } else {
    // The record first: no crash in between leaves an old record beside emptied data.
    RETURN_IF_ERROR(s.OpenRecord(/*fresh=*/true));
    if (::ftruncate(fd.get(), 0) != 0 || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot size ", path));
    }
  }
  uint64_t kept = 0;
  for (size_t i = 0; i < s.chunks; ++i) kept += state[i] == kDone ? s.Length(i) : 0;
  if (kept > 0 && ctx.on_bytes) ctx.on_bytes(static_cast<int64_t>(kept), 0);

  std::vector<std::thread> connections;
  std::vector<char> dead(sources.size(), 0);
  std::vector<int> failures(sources.size(), 0);
  {
    gswarm::MutexLock lock(&s.mu);
    s.state = state;
    while (s.done_prefix < s.chunks && s.state[s.done_prefix] == kDone) ++s.done_prefix;
    s.live = static_cast<int>(sources.size());
    for (const StripeSource& source : sources) s.live_others += source.fallback ? 0 : 1;
  }
  // Connections of one source share its dead flag and failure count (under s.mu).
  for (size_t k = 0; k < sources.size(); ++k) {
    for (int c = 0; c < std::max(1, sources[k].connections); ++c) {
      connections.emplace_back([&s, &sources, &dead, &failures, k] {
        Connection(s, sources[k], &dead[k], &failures[k]);
      });
    }
  }

  // Meanwhile, the digests in file order, chunk by chunk as the prefix completes.
  const bool by_xxh3 = IsXxh3Digest(target.xxh3);
  Sha256 sha256;
  Xxh3 xxh3;
  std::vector<char> buffer(static_cast<size_t>(std::min<uint64_t>(s.chunk, 4ull << 20)));
  absl::Status status;
  for (size_t i = 0; i < s.chunks && status.ok(); ++i) {
    {
      gswarm::MutexLock lock(&s.mu);
      auto ready = [&]() ABSL_SHARED_LOCKS_REQUIRED(s.mu) {
        return s.done_prefix > i || !s.fatal.ok();
      };
      while (!s.mu.AwaitWithTimeout(absl::Condition(&ready), absl::Milliseconds(100))) {
        if (Stopped(ctx)) break;
      }
      if (!s.fatal.ok()) status = s.fatal;
      if (status.ok() && s.done_prefix <= i) {
        status =
            absl::CancelledError(absl::StrCat("download of ", target.display_name, " stopped"));
      }
    }
    if (!status.ok()) break;
    absl::StatusOr<uint64_t> read = HashFileRange(path, by_xxh3 ? nullptr : &sha256, &xxh3,
                                                  i * s.chunk, i * s.chunk + s.Length(i));
    if (!read.ok()) status = read.status();
    // The chunk goes to the disk now rather than all of the file at the final fsync. Here, not
    // on the connection that wrote it: starting writeback builds and submits the disk's
    // requests on the calling thread, time the connection spends receiving instead.
    common::StartWriteback(fd.get(), i * s.chunk, s.Length(i));
  }
  if (!status.ok()) {
    gswarm::MutexLock lock(&s.mu);
    if (s.fatal.ok()) s.fatal = status;  // the connections stop
  }
  for (std::thread& t : connections) t.join();
  if (!status.ok()) return status;

  FetchedFile file{size, by_xxh3 ? target.sha256 : sha256.HexDigest(), xxh3.HexDigest(), 0};
  std::string mismatch;
  if (by_xxh3 && file.xxh3_128 != target.xxh3) {
    mismatch = absl::StrCat("expected xxh3_128 ", target.xxh3, ", got ", file.xxh3_128);
  } else if (!by_xxh3 && !target.sha256.empty() && file.sha256 != target.sha256) {
    mismatch = absl::StrCat("expected sha256 ", target.sha256, ", got ", file.sha256);
  }
  if (!mismatch.empty()) {
    ::unlink(path.c_str());
    ::unlink(s.done_path.c_str());
    return absl::DataLossError(absl::StrCat("checksum mismatch for ", target.display_name, ": ",
                                            mismatch, "; the download was corrupted, retry"));
  }
  if (::fsync(fd.get()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", path));
  }
  if (::rename(path.c_str(), target.final_path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("cannot rename ", path, " to ", target.final_path));
  }
  ::unlink(s.done_path.c_str());
  StripedResult result;
  result.file = std::move(file);
  result.bytes_from_fallback = s.from_fallback.load();
  result.bytes_from_others = s.from_others.load();
  return result;
}

}  // namespace gswarm::client
