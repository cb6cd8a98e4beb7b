// SseResponse: checks one HTTP/1.x response carrying an sse_engine stream, fed its bytes as they
// arrive (stream_load). Whole and in order means: status 200, text/event-stream, a body framed by
// chunked transfer encoding, Content-Length or the close, holding exactly `chunks` `data:` events
// whose text is "c0 ", "c1 ", ... in that order, then `data: [DONE]`, then the end of the body.
// No I/O; not thread-safe.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>
#include <string_view>

namespace gswarm::bench {

class SseResponse {
 public:
  enum class State { kHeaders, kBody, kOk, kFailed };

  explicit SseResponse(int chunks) : chunks_(chunks) {}

  // Takes the next bytes of the response; returns the state after them.
  State Feed(std::string_view data) {
    if (state_ == State::kHeaders) {
      head_.append(data);
      const size_t end = head_.find("\r\n\r\n");
      if (end == std::string::npos) return state_;
      const std::string rest = head_.substr(end + 4);
      head_.resize(end + 2);
      if (!OnHeaders()) return state_;
      state_ = State::kBody;
      if (body_ == Body::kLength && left_ == 0) return BodyEnded();
      OnBody(rest);
    } else if (state_ == State::kBody) {
      OnBody(data);
    }
    return state_;
  }
  // The connection ended: `how` is empty for an orderly close (EOF), else the error.
  State Closed(const std::string& how) {
    if (state_ == State::kBody && body_ == Body::kClose && how.empty()) return BodyEnded();
    if (state_ == State::kHeaders || state_ == State::kBody) {
      Fail(how.empty() ? "incomplete" : "read", "connection ended after " + std::to_string(next_) +
                                                    " events" +
                                                    (how.empty() ? "" : " (" + how + ")"));
    }
    return state_;
  }

  State state() const { return state_; }
  // Set when failed: a short kind (status, protocol, order, incomplete, read) and a message.
  const std::string& error_kind() const { return error_kind_; }
  const std::string& error() const { return error_; }

 private:
  enum class Body { kChunkSize, kChunkData, kChunkEnd, kTrailer, kLength, kClose };

  // The index in an sse_engine event's text ("c17 "), in "content" (chat) or "text"; -1: none.
  static int EventIndex(std::string_view data) {
    for (std::string_view key : {R"("content":"c)", R"("text":"c)"}) {
      if (size_t at = data.find(key); at != std::string_view::npos) {
        return std::atoi(std::string(data.substr(at + key.size(), 12)).c_str());
      }
    }
    return -1;
  }

  bool Fail(const std::string& kind, const std::string& why) {  // false, for `return Fail()`
    state_ = State::kFailed;
    error_kind_ = kind;
    error_ = why;
    return false;
  }

  bool OnHeaders() {
    std::string lower = head_;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const bool http1 = lower.size() > 12 && lower.rfind("http/1.", 0) == 0 && lower[8] == ' ';
    if (!http1 || std::strtol(lower.c_str() + 9, nullptr, 10) != 200) {
      return Fail("status", "answer: " + head_.substr(0, head_.find("\r\n")));
    }
    if (lower.find("\r\ncontent-type: text/event-stream") == std::string::npos) {
      return Fail("protocol", "not text/event-stream: " + head_.substr(0, 300));
    }
    if (lower.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
      body_ = Body::kChunkSize;
    } else if (size_t at = lower.find("\r\ncontent-length:"); at != std::string::npos) {
      body_ = Body::kLength;
      left_ = std::strtoull(lower.c_str() + at + 17, nullptr, 10);
    }
    return true;
  }

  // Decodes the body framing; the payload goes to events_.
  void OnBody(std::string_view data) {
    while (!data.empty() && state_ == State::kBody) {
      switch (body_) {
        case Body::kClose:
        case Body::kLength: {
          const size_t n = body_ == Body::kClose ? data.size() : std::min(left_, data.size());
          events_.append(data.substr(0, n));
          data.remove_prefix(n);
          if (!OnEvents()) return;
          if (body_ == Body::kLength && (left_ -= n) == 0) BodyEnded();
          break;
        }
        case Body::kChunkSize:
        case Body::kChunkEnd:
        case Body::kTrailer: {
          const size_t nl = data.find('\n');
          const size_t n = nl == std::string_view::npos ? data.size() : nl + 1;
          line_.append(data.substr(0, n));
          data.remove_prefix(n);
          if (line_.back() != '\n') break;
          const bool blank = line_ == "\r\n" || line_ == "\n";
          if (body_ == Body::kChunkEnd) {
            if (!blank) return void(Fail("protocol", "no CRLF after a chunk"));
            body_ = Body::kChunkSize;
          } else if (body_ == Body::kTrailer) {
            if (blank) BodyEnded();
          } else {
            char* end = nullptr;
            left_ = std::strtoull(line_.c_str(), &end, 16);
            if (end == line_.c_str()) return void(Fail("protocol", "bad chunk size: " + line_));
            body_ = left_ == 0 ? Body::kTrailer : Body::kChunkData;
          }
          line_.clear();
          break;
        }
        case Body::kChunkData: {
          const size_t n = std::min(left_, data.size());
          events_.append(data.substr(0, n));
          data.remove_prefix(n);
          if ((left_ -= n) == 0) body_ = Body::kChunkEnd;
          if (!OnEvents()) return;
          break;
        }
      }
    }
  }

  // Checks every complete event in events_ (blank-line separated; CRs ignored).
  bool OnEvents() {
    std::erase(events_, '\r');
    size_t at = 0;
    for (size_t end; (end = events_.find("\n\n", at)) != std::string::npos; at = end + 2) {
      const std::string_view event = std::string_view(events_).substr(at, end - at);
      if (event.rfind("data:", 0) != 0) continue;  // comments, other fields
      std::string_view data = event.substr(5);
      if (!data.empty() && data.front() == ' ') data.remove_prefix(1);
      if (done_seen_) return Fail("order", "an event after [DONE]");
      if (data == "[DONE]") {
        done_seen_ = true;
        continue;
      }
      const int index = EventIndex(data);
      if (index != next_) {
        return Fail("order", "event " + std::to_string(index) + " where " + std::to_string(next_) +
                                 " was due");
      }
      ++next_;
    }
    events_.erase(0, at);
    return true;
  }

  State BodyEnded() {
    if (!done_seen_ || next_ != chunks_) {
      Fail("incomplete", "body ended after " + std::to_string(next_) + " events" +
                             (done_seen_ ? "" : " without [DONE]"));
    } else {
      state_ = State::kOk;
    }
    return state_;
  }

  const int chunks_;
  State state_ = State::kHeaders;
  Body body_ = Body::kClose;
  std::string head_, line_, events_;
  size_t left_ = 0;  // bytes left of the current chunk, or of the Content-Length body
  int next_ = 0;     // index of the next expected event
  bool done_seen_ = false;
  std::string error_kind_, error_;
};

}  // namespace gswarm::bench
