#include "client/file_fetcher.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/stream_hasher.h"
#include "common/backoff.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace gswarm::client {
namespace {

constexpr long kBufferBytes = 1 << 20;  // libcurl's receive buffer: big sequential writes
constexpr size_t kMaxErrorBody = 16 << 10;

// What one HTTP attempt came to.
enum class Outcome {
  kDone,     // a whole 200/206 body is on disk
  kRetry,    // transient: try again after a delay, resuming
  kRestart,  // the .part cannot be continued: start the file from zero now
  kCorrupt,  // the bytes do not match the listing: start from zero, at most once
  kFail,     // give up with `status`
};

struct Attempt {
  Outcome outcome = Outcome::kFail;
  absl::Status status;
  absl::Duration wait = absl::ZeroDuration();
};

// The open .part and what has been written to it.
struct PartFile {
  int fd = -1;
  std::string path;
  uint64_t have = 0;
  std::unique_ptr<StreamHasher> hasher;
  const FetchContext* ctx = nullptr;

  ~PartFile() {
    hasher.reset();  // before fd, which it holds for the writeback
    if (fd >= 0) ::close(fd);
  }

  absl::Status Truncate() {
    if (::ftruncate(fd, 0) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot truncate ", path));
    }
    if (have > 0 && ctx->on_bytes) ctx->on_bytes(-static_cast<int64_t>(have), 0);
    have = 0;
    hasher->Reset();
    return absl::OkStatus();
  }

  absl::Status Append(const char* data, size_t n) {
    uint64_t offset = have;
    for (size_t done = 0; done < n;) {
      ssize_t w = ::pwrite(fd, data + done, n - done, static_cast<off_t>(offset + done));
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat("cannot write ", path));
      }
      done += static_cast<size_t>(w);
    }
    hasher->Feed(data, n);
    have += n;
    if (ctx->on_bytes) ctx->on_bytes(static_cast<int64_t>(n), n);
    return absl::OkStatus();
  }
};

// State shared with libcurl's callbacks during one attempt.
struct TransferState {
  CURL* easy = nullptr;
  PartFile* part = nullptr;
  const FetchTarget* target = nullptr;
  const FetchContext* ctx = nullptr;
  std::map<std::string, std::string> headers;
  bool started = false;           // the first body byte of the final response arrived
  bool body = false;              // ... and it is the file (200/206), not an error page
  std::optional<uint64_t> total;  // the file's full size, as the response states it
  std::string error_body;
  absl::Status sink_error;  // the write callback refused: disk error
  bool bad_range = false;   // a 206 that does not start where the .part ends
  bool too_long = false;    // more bytes than the expected size
};

// "bytes <first>-<last>/<total or *>"
bool ParseContentRange(absl::string_view value, uint64_t* first, std::optional<uint64_t>* total) {
  if (!absl::ConsumePrefix(&value, "bytes ")) return false;
  std::pair<absl::string_view, absl::string_view> range_total = absl::StrSplit(value, '/');
  std::pair<absl::string_view, absl::string_view> first_last =
      absl::StrSplit(range_total.first, '-');
  if (!absl::SimpleAtoi(first_last.first, first)) return false;
  uint64_t t = 0;
  if (absl::SimpleAtoi(range_total.second, &t)) *total = t;
  return true;
}

// Called once, with the first body bytes of the final response.
void OnFirstBytes(TransferState* st) {
  long status = 0;
  if (curl_easy_getinfo(st->easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK) return;
  uint64_t n = 0;
  if (status == 206) {
    uint64_t first = 0;
    if (!ParseContentRange(st->headers["content-range"], &first, &st->total) ||
        first != st->part->have) {
      st->bad_range = true;
      return;
    }
    st->body = true;
  } else if (status == 200) {
    // The server ignored the Range: its body starts at byte zero.
    if (st->part->have > 0) st->sink_error = st->part->Truncate();
    if (absl::SimpleAtoi(st->headers["content-length"], &n)) st->total = n;
    st->body = st->sink_error.ok();
  }
}

size_t OnData(char* data, size_t size, size_t nmemb, void* user) {
  auto* st = static_cast<TransferState*>(user);
  size_t n = size * nmemb;
  if (!st->started) {
    st->started = true;
    OnFirstBytes(st);
    if (st->bad_range || !st->sink_error.ok()) return 0;
  }
  if (!st->body) {
    if (st->error_body.size() < kMaxErrorBody) st->error_body.append(data, n);
    return n;
  }
  std::optional<uint64_t> limit = st->target->size ? st->target->size : st->total;
  if (limit && st->part->have + n > *limit) {
    st->too_long = true;
    return 0;
  }
  st->sink_error = st->part->Append(data, n);
  return st->sink_error.ok() ? n : 0;
}

size_t OnHeader(char* data, size_t size, size_t nmemb, void* user) {
  auto* st = static_cast<TransferState*>(user);
  ParseHeaderLine(absl::string_view(data, size * nmemb), st->headers);
  return size * nmemb;
}

bool Stopped(const FetchContext& ctx) {
  return (ctx.cancel != nullptr && ctx.cancel->load()) || (ctx.stop != nullptr && ctx.stop->load());
}

int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return Stopped(*static_cast<const FetchContext*>(user)) ? 1 : 0;
}

absl::Status Cancelled(const FetchTarget& target) {
  return absl::CancelledError(absl::StrCat("download of ", target.display_name, " stopped"));
}

// One HTTP GET of the rest of the file.
Attempt RunTransfer(CURL* easy, PartFile& part, const FetchTarget& target,
                    const FetchContext& ctx) {
  TransferState st;
  st.easy = easy;
  st.part = &part;
  st.target = &target;
  st.ctx = &ctx;
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, curl_slist_free_all);
  for (const std::string& line : target.headers) {
    curl_slist* next = curl_slist_append(headers.get(), line.c_str());
    if (next == nullptr) return {Outcome::kFail, absl::InternalError("curl_slist_append failed")};
    headers.release();
    headers.reset(next);
  }
  std::string range = absl::StrCat(part.have, "-");
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_reset(easy);
  CURLcode rc = CURLE_OK;
  auto set = [&rc](CURLcode r) {
    if (rc == CURLE_OK) rc = r;
  };
  set(curl_easy_setopt(easy, CURLOPT_URL, target.url.c_str()));
  set(curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L));
  set(curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf));
  set(curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"));
  set(curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L));
  set(curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 10L));
  set(curl_easy_setopt(easy, CURLOPT_USERAGENT, UserAgent()));
  set(curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 30L));
  set(curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L));
  set(curl_easy_setopt(
      easy, CURLOPT_LOW_SPEED_TIME,
      std::max(1L, static_cast<long>(absl::ToInt64Seconds(ctx.hub->low_speed_time)))));
  set(curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, kBufferBytes));
  set(curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L));
  set(curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers.get()));
  if (part.have > 0) set(curl_easy_setopt(easy, CURLOPT_RANGE, range.c_str()));
  set(curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &OnData));
  set(curl_easy_setopt(easy, CURLOPT_WRITEDATA, &st));
  set(curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &OnHeader));
  set(curl_easy_setopt(easy, CURLOPT_HEADERDATA, &st));
  set(curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &OnProgress));
  set(curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &ctx));
  set(curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L));
  if (rc != CURLE_OK) {
    return {Outcome::kFail,
            absl::InternalError(absl::StrCat("cannot set up the download of ", target.url, ": ",
                                             curl_easy_strerror(rc)))};
  }
  rc = curl_easy_perform(easy);
  std::string reason = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  if (!st.sink_error.ok()) return {Outcome::kFail, st.sink_error};
  if (st.bad_range) {
    return {Outcome::kRestart,
            absl::DataLossError(
                absl::StrCat(target.display_name, ": the server answered a different byte range"))};
  }
  if (st.too_long) {
    return {Outcome::kCorrupt,
            absl::DataLossError(absl::StrCat("size mismatch for ", target.display_name,
                                             ": the server sent more than the expected ",
                                             target.size ? *target.size : *st.total, " bytes"))};
  }
  if (rc == CURLE_ABORTED_BY_CALLBACK) return {Outcome::kFail, Cancelled(target)};
  if (rc != CURLE_OK) {
    absl::Status status = absl::UnavailableError(absl::StrCat(target.url, ": ", reason));
    return {IsTransientCurlError(rc) ? Outcome::kRetry : Outcome::kFail, status};
  }
  long code = 0;
  if (curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code) != CURLE_OK) {
    return {Outcome::kRetry, absl::UnavailableError(absl::StrCat(target.url, ": no HTTP status"))};
  }
  if (code == 200 || code == 206) {
    if (!st.started) {
      // An empty body: nothing to append, but a 200 still means "from zero".
      if (code == 206) {
        return {Outcome::kRetry, absl::UnavailableError(absl::StrCat(target.url, ": empty 206"))};
      }
      if (absl::Status s = part.Truncate(); !s.ok()) return {Outcome::kFail, s};
      uint64_t n = 0;
      if (absl::SimpleAtoi(st.headers["content-length"], &n)) st.total = n;
    }
    if (st.total && part.have != *st.total) {
      return {Outcome::kRetry,
              absl::UnavailableError(absl::StrCat(target.url, ": the answer ended after ",
                                                  part.have, " of ", *st.total, " bytes"))};
    }
    return {Outcome::kDone, absl::OkStatus()};
  }
  HttpResponse response;
  response.status = code;
  response.headers = st.headers;
  response.body = std::move(st.error_body);
  if (code == 416 && part.have > 0) {
    return {Outcome::kRestart,
            absl::DataLossError(
                absl::StrCat(target.display_name, ": the partial file is longer than the file"))};
  }
  if (IsTransientHttpStatus(code)) {
    return {Outcome::kRetry, absl::UnavailableError(absl::StrCat(target.url, ": HTTP ", code)),
            std::min(RetryAfter(response.headers), absl::Minutes(5))};
  }
  return {Outcome::kFail, ctx.http_error
                              ? ctx.http_error(target, response)
                              : absl::UnknownError(absl::StrCat(target.url, ": HTTP ", code))};
}

// Sleeps `d`, waking early when the fetch is stopped. False when stopped.
bool SleepUnlessStopped(absl::Duration d, const FetchContext& ctx) {
  absl::Time deadline = absl::Now() + d;
  while (absl::Now() < deadline) {
    if (Stopped(ctx)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !Stopped(ctx);
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileFetcher>> FileFetcher::Create() {
  InitCurl();
  CURL* easy = curl_easy_init();
  if (easy == nullptr) return absl::InternalError("curl_easy_init failed");
  return std::unique_ptr<FileFetcher>(new FileFetcher(easy));
}

FileFetcher::~FileFetcher() { curl_easy_cleanup(easy_); }

absl::StatusOr<FetchedFile> FileFetcher::Fetch(const FetchTarget& target, const FetchContext& ctx) {
  PartFile part;
  part.ctx = &ctx;
  part.path = target.final_path + ".part";
  const bool by_xxh3 = IsXxh3Digest(target.xxh3);
  part.hasher = std::make_unique<StreamHasher>(/*sha256=*/!by_xxh3, part.path + ".hash");
  part.fd = ::open(part.path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (part.fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", part.path));
  part.hasher->WriteBehind(part.fd);
  struct stat st;
  if (::fstat(part.fd, &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot stat ", part.path));
  }
  uint64_t existing = static_cast<uint64_t>(st.st_size);
  uint64_t reread = 0;
  if (target.size && existing > *target.size) {
    // Longer than the file can be: not ours to continue. (Never counted as progress.)
    if (::ftruncate(part.fd, 0) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot truncate ", part.path));
    }
    part.hasher->Discard();
  } else if (existing > 0) {
    ASSIGN_OR_RETURN(reread, part.hasher->Resume(part.path, existing));
    part.have = existing;
    spdlog::info("{}: resuming at byte {} (re-read {} bytes to restore its hashes)",
                 target.display_name, existing, reread);
  } else {
    part.hasher->Discard();
  }

  common::Backoff backoff(
      {.initial = ctx.hub->retry_initial_delay, .max = ctx.hub->retry_max_delay});
  int failures = 0;
  int corruptions = 0;
  int restarts = 0;
  for (;;) {
    if (!target.size || part.have < *target.size) {
      if (Stopped(ctx)) return Cancelled(target);
      uint64_t before = part.have;
      Attempt a = RunTransfer(easy_, part, target, ctx);
      if (a.outcome == Outcome::kFail) return a.status;
      if (a.outcome == Outcome::kRestart || a.outcome == Outcome::kCorrupt) {
        if ((a.outcome == Outcome::kCorrupt && ++corruptions > 1) || ++restarts > 3) {
          ::close(std::exchange(part.fd, -1));
          ::unlink(part.path.c_str());
          part.hasher->Discard();
          return absl::Status(a.status.code(), absl::StrCat(a.status.message(),
                                                            "; the download was corrupted, retry"));
        }
        spdlog::warn("{}; starting the file again", a.status.message());
        RETURN_IF_ERROR(part.Truncate());
        continue;
      }
      if (a.outcome == Outcome::kRetry) {
        if (part.have > before) {  // progress: the link works, give it fresh attempts
          failures = 0;
          backoff.Reset();
        }
        if (++failures >= ctx.hub->max_attempts) {
          return absl::UnavailableError(absl::StrCat(
              "downloading ", target.display_name, " failed ", failures,
              " times in a row: ", a.status.message(),
              part.have > 0
                  ? absl::StrCat(" (run the download again to resume from byte ", part.have, ")")
                  : " (check the network and the server, then run the download again)"));
        }
        absl::Duration wait = std::max(a.wait, backoff.Next());
        spdlog::warn("{}: {}; retrying in {} from byte {}", target.display_name, a.status.message(),
                     absl::FormatDuration(wait), part.have);
        if (!SleepUnlessStopped(wait, ctx)) return Cancelled(target);
        continue;
      }
    }
    // The body is complete: check it against what the source promised.
    StreamDigests digests = part.hasher->Finish();
    std::string mismatch;
    if (target.size && part.have != *target.size) {
      mismatch = absl::StrCat("size mismatch for ", target.display_name, ": expected ",
                              *target.size, " bytes, got ", part.have);
    } else if (by_xxh3 && digests.xxh3_128 != target.xxh3) {
      mismatch = absl::StrCat("checksum mismatch for ", target.display_name, ": expected xxh3_128 ",
                              target.xxh3, ", got ", digests.xxh3_128);
    } else if (!by_xxh3 && !target.sha256.empty() && digests.sha256 != target.sha256) {
      mismatch = absl::StrCat("checksum mismatch for ", target.display_name, ": expected sha256 ",
                              target.sha256, ", got ", digests.sha256);
    }
    if (!mismatch.empty()) {
      if (++corruptions > 1) {
        ::close(std::exchange(part.fd, -1));
        ::unlink(part.path.c_str());
        part.hasher->Discard();
        return absl::DataLossError(absl::StrCat(mismatch, "; the download was corrupted, retry"));
      }
      spdlog::warn("{}; fetching the file again", mismatch);
      RETURN_IF_ERROR(part.Truncate());
      continue;
    }
    if (::fsync(part.fd) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot fsync ", part.path));
    }
    ::close(std::exchange(part.fd, -1));
    if (::rename(part.path.c_str(), target.final_path.c_str()) != 0) {
      return absl::ErrnoToStatus(
          errno, absl::StrCat("cannot rename ", part.path, " to ", target.final_path));
    }
    part.hasher->Discard();
    return FetchedFile{part.have, by_xxh3 ? target.sha256 : digests.sha256, digests.xxh3_128,
                       reread};
  }
}

}  // namespace gswarm::client
