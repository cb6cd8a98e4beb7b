#include "host/upstream_connection.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status.h"

namespace gswarm::host {
namespace {

constexpr char kChunkedCut[] = "the chunked answer was cut short";

absl::Status Broken(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

timeval SocketTimeout(absl::Duration d) {
  const int64_t usec = std::max<int64_t>(1, absl::ToInt64Microseconds(d));
  return timeval{static_cast<time_t>(usec / 1000000), static_cast<suseconds_t>(usec % 1000000)};
}

// "http://host:port[/]" -> host, port; IPv6 hosts in brackets.
absl::Status SplitEndpoint(absl::string_view endpoint, std::string* host, std::string* port) {
  absl::string_view rest = endpoint;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine endpoint \"", endpoint, "\" is not http://host:port"));
  }
  absl::ConsumeSuffix(&rest, "/");
  size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos || colon + 1 == rest.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("engine endpoint \"", endpoint, "\" names no port"));
  }
  absl::string_view h = rest.substr(0, colon);
  if (absl::ConsumePrefix(&h, "[")) absl::ConsumeSuffix(&h, "]");
  *host = std::string(h);
  *port = std::string(rest.substr(colon + 1));
  return absl::OkStatus();
}

// Connects `fd` (non-blocking) to `addr` within `timeout`.
bool ConnectWithin(int fd, const addrinfo& addr, absl::Duration timeout) {
  if (::connect(fd, addr.ai_addr, addr.ai_addrlen) == 0) return true;
  if (errno != EINPROGRESS) return false;
  pollfd p{fd, POLLOUT, 0};
  const int ms = static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(timeout)));
  int ready;
  do {
    ready = ::poll(&p, 1, ms);
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) {
    if (ready == 0) errno = ETIMEDOUT;
    return false;
  }
  int error = 0;
  socklen_t len = sizeof(error);
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) return false;
  errno = error;
  return error == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UpstreamConnection>> UpstreamConnection::Connect(
    const std::string& endpoint, absl::Duration connect_timeout, absl::Duration io_timeout) {
  std::string host, port;
  if (absl::Status split = SplitEndpoint(endpoint, &host, &port); !split.ok()) return split;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::UnavailableError(absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  int fd = -1;
  int last_errno = 0;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    if (!ConnectWithin(fd, *a, connect_timeout)) {
      last_errno = errno;
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) {
    errno = last_errno;
    return Broken(absl::StrCat("cannot connect to ", endpoint));
  }
  // Blocking from here on, bounded by the socket's timeouts; small requests go out at once.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  const timeval tv = SocketTimeout(io_timeout);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return std::unique_ptr<UpstreamConnection>(new UpstreamConnection(
      fd, absl::StrCat(host.find(':') == std::string::npos ? host : absl::StrCat("[", host, "]"),
                       ":", port)));
}

UpstreamConnection::UpstreamConnection(int fd, std::string host_header)
    : fd_(fd), host_header_(std::move(host_header)) {}

UpstreamConnection::~UpstreamConnection() { ::close(fd_); }

absl::StatusOr<size_t> UpstreamConnection::Fill() {
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n >= 0) {
      buffer_.append(chunk, static_cast<size_t>(n));
      return static_cast<size_t>(n);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return absl::DeadlineExceededError("the engine went silent mid-answer (read timeout)");
    }
    return Broken("reading the answer");
  }
}

absl::Status UpstreamConnection::FillTo(size_t size, const char* cut_short) {
  while (buffer_.size() < size) {
    ASSIGN_OR_RETURN(size_t got, Fill());
    if (got == 0) return absl::UnavailableError(cut_short);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> UpstreamConnection::FindLine(size_t max, const char* too_long) {
  size_t line_end;
  while ((line_end = buffer_.find("\r\n")) == std::string::npos) {
    if (buffer_.size() > max) return absl::UnavailableError(too_long);
    ASSIGN_OR_RETURN(size_t got, Fill());
    if (got == 0) return absl::UnavailableError(kChunkedCut);
  }
  return line_end;
}

absl::StatusOr<UpstreamConnection::Answer> UpstreamConnection::Post(const std::string& path,
                                                                    const std::string& content_type,
                                                                    const std::string& body,
                                                                    bool* sent_nothing_back) {
  *sent_nothing_back = false;
  buffer_.clear();
  const std::string head = absl::StrCat(
      "POST ", path, " HTTP/1.1\r\nHost: ", host_header_, "\r\nContent-Type: ", content_type,
      "\r\nContent-Length: ", body.size(), "\r\nAccept-Encoding: identity\r\n\r\n");
  iovec parts[2] = {{const_cast<char*>(head.data()), head.size()},
                    {const_cast<char*>(body.data()), body.size()}};
  size_t index = 0;
  while (index < 2) {
    msghdr message{};
    message.msg_iov = &parts[index];
    message.msg_iovlen = 2 - index;
    const ssize_t sent = ::sendmsg(fd_, &message, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      *sent_nothing_back = errno == EPIPE || errno == ECONNRESET;
      return Broken("sending the request");
    }
    size_t left = static_cast<size_t>(sent);
    while (index < 2 && left >= parts[index].iov_len) left -= parts[index++].iov_len;
    if (index < 2) {
      parts[index].iov_base = static_cast<char*>(parts[index].iov_base) + left;
      parts[index].iov_len -= left;
    }
  }

  Answer answer;
  size_t header_end;
  for (;;) {  // 1xx answers come before the real one
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (buffer_.size() > kMaxHeaders) {
        return absl::UnavailableError("the engine's answer headers exceed 64 KiB");
      }
      absl::StatusOr<size_t> got = Fill();
      if (!got.ok()) {
        *sent_nothing_back = buffer_.empty() && absl::IsUnavailable(got.status());
        return got.status();
      }
      if (*got == 0) {
        *sent_nothing_back = buffer_.empty();
        return absl::UnavailableError("the engine closed the connection before answering");
      }
    }
    if (header_end > kMaxHeaders) {
      return absl::UnavailableError("the engine's answer headers exceed 64 KiB");
    }
    absl::string_view status_line(buffer_.data(), buffer_.find("\r\n"));
    const bool http10 = absl::StartsWith(status_line, "HTTP/1.0 ");
    if (!http10 && !absl::StartsWith(status_line, "HTTP/1.1 ")) {
      return absl::UnavailableError(absl::StrCat("not an HTTP/1.x answer: \"",
                                                 absl::CEscape(status_line.substr(0, 40)), "\""));
    }
    if (status_line.size() < 12 || !absl::SimpleAtoi(status_line.substr(9, 3), &answer.status)) {
      return absl::UnavailableError("an answer without a status code");
    }
    if (answer.status >= 100 && answer.status < 200) {
      buffer_.erase(0, header_end + 4);
      continue;
    }
    answer.reusable = !http10;
    break;
  }

  bool chunked = false;
  bool has_length = false;
  size_t length = 0;
  const absl::string_view headers(buffer_.data(), header_end);
  for (absl::string_view line : absl::StrSplit(headers, "\r\n")) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (name == "content-length") {
      if (!absl::SimpleAtoi(value, &length)) {
        return absl::UnavailableError("an answer with a bad Content-Length");
      }
      has_length = true;
    } else if (name == "transfer-encoding") {
      chunked = absl::StrContains(absl::AsciiStrToLower(value), "chunked");
    } else if (name == "connection") {
      if (absl::EqualsIgnoreCase(value, "close")) answer.reusable = false;
      if (absl::EqualsIgnoreCase(value, "keep-alive")) answer.reusable = true;
    } else if (name == "content-type") {
      answer.content_type = std::string(value);
    }
  }
  buffer_.erase(0, header_end + 4);

  if (chunked) {
    absl::StatusOr<std::string> whole = ReadChunked();
    if (!whole.ok()) return whole.status();
    answer.body = *std::move(whole);
  } else if (has_length || answer.status == 204 || answer.status == 304) {
    if (length > kMaxBody) return absl::UnavailableError("the engine's answer exceeds 256 MiB");
    if (absl::Status s = FillTo(length, "the answer was cut short"); !s.ok()) return s;
    answer.body = buffer_.substr(0, length);
    buffer_.erase(0, length);
  } else {
    // Neither: the answer ends with the connection.
    for (;;) {
      if (buffer_.size() > kMaxBody) {
        return absl::UnavailableError("the engine's answer exceeds 256 MiB");
      }
      absl::StatusOr<size_t> got = Fill();
      if (!got.ok()) return got.status();
      if (*got == 0) break;
    }
    answer.body = std::move(buffer_);
    buffer_.clear();
    answer.reusable = false;
  }
  if (!buffer_.empty()) answer.reusable = false;  // more than one answer: out of step
  return answer;
}

absl::StatusOr<std::string> UpstreamConnection::ReadChunked() {
  std::string body;
  for (;;) {
    ASSIGN_OR_RETURN(size_t line_end, FindLine(1024, "a bad chunk size line"));
    absl::string_view size_text(buffer_.data(), line_end);
    size_text = size_text.substr(0, size_text.find(';'));  // chunk extensions
    size_t size = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size_text), &size)) {
      return absl::UnavailableError("a bad chunk size");
    }
    buffer_.erase(0, line_end + 2);
    if (size == 0) {
      // Trailers, if any, then the empty line.
      for (;;) {
        ASSIGN_OR_RETURN(line_end, FindLine(kMaxHeaders, "trailers too large"));
        buffer_.erase(0, line_end + 2);
        if (line_end == 0) return body;
      }
    }
    if (body.size() + size > kMaxBody) {
      return absl::UnavailableError("the engine's answer exceeds 256 MiB");
    }
    if (absl::Status s = FillTo(size + 2, kChunkedCut); !s.ok()) return s;
    if (buffer_.compare(size, 2, "\r\n") != 0) return absl::UnavailableError("a bad chunk");
    body.append(buffer_, 0, size);
    buffer_.erase(0, size + 2);
  }
}

}  // namespace gswarm::host
