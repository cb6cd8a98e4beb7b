#pragma once

// One keep-alive HTTP/1.1 connection from the router to an engine, for requests whose answer is
// copied back whole (not streamed). It does the least per request: the request goes out in one
// writev(), and the answer is read with blocking reads bounded by the socket's timeouts
// (SO_RCVTIMEO) instead of a poll() before every read and write. Answers with a Content-Length,
// chunked ones, and ones ended by closing the connection are read.
//
// Thread safety: one request at a time per connection (the router's pool hands it to one
// request).

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gswarm::host {

class UpstreamConnection {
 public:
  struct Answer {
    int status = 0;
    std::string content_type;
    std::string body;
    // The engine keeps the connection open for the next request.
    bool reusable = false;
  };

  // Connects to `endpoint` ("http://host:port"). UNAVAILABLE when it cannot within
  // `connect_timeout`; INVALID_ARGUMENT for an endpoint that is not http://host:port. Reads and
  // writes give up after `io_timeout` of silence.
  static absl::StatusOr<std::unique_ptr<UpstreamConnection>> Connect(const std::string& endpoint,
                                                                     absl::Duration connect_timeout,
                                                                     absl::Duration io_timeout);
  ~UpstreamConnection();
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  // POSTs `body` to `path`. UNAVAILABLE when the exchange breaks (the connection is then
  // unusable); `sent_nothing_back` tells whether the engine closed without a byte of answer (a
  // kept-alive connection it had already closed: the request can go again on a new one).
  absl::StatusOr<Answer> Post(const std::string& path, const std::string& content_type,
                              const std::string& body, bool* sent_nothing_back);

  // The largest answer read (an engine gone wrong must not exhaust the host's memory).
  static constexpr size_t kMaxBody = size_t{256} << 20;
  static constexpr size_t kMaxHeaders = size_t{64} << 10;

 private:
  UpstreamConnection(int fd, std::string host_header);
  // Reads more into buffer_; 0 at the end of the stream.
  absl::StatusOr<size_t> Fill();
  // Reads until buffer_ holds `size` bytes; UNAVAILABLE(`cut_short`) if the stream ends first.
  absl::Status FillTo(size_t size, const char* cut_short);
  // Reads until buffer_ holds a CRLF and returns where; UNAVAILABLE(`too_long`) past `max` bytes
  // without one. Used inside chunked answers.
  absl::StatusOr<size_t> FindLine(size_t max, const char* too_long);
  absl::StatusOr<std::string> ReadChunked();

  const int fd_;
  const std::string host_header_;
  std::string buffer_;  // read but not yet used
};

}  // namespace gswarm::host
