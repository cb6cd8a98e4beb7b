// The router's lean upstream connection against a scripted HTTP server on loopback: every way an
// answer can be framed (Content-Length, chunked with extensions and trailers, ended by closing,
// after a 100 Continue, HTTP/1.0), keep-alive reuse, an idle connection the engine closed, and
// engines that go silent, lie or flood.

#include "host/upstream_connection.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace gswarm::host {
namespace {

// Accepts connections one at a time; for each request read, answers with the next script entry
// (raw bytes). An entry may close the connection after writing.
class ScriptedServer {
 public:
  struct Reply {
    std::string bytes;
    bool close_after = false;
    bool close_before = false;  // close the connection instead of answering
  };

  explicit ScriptedServer(std::vector<Reply> script) : script_(std::move(script)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    socklen_t len = sizeof(addr);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    EXPECT_EQ(::listen(listen_fd_, 8), 0);
    thread_ = std::thread([this] { Run(); });
  }

  ~ScriptedServer() {
    stopping_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    thread_.join();
  }

  std::string endpoint() const { return absl::StrCat("http://127.0.0.1:", port_); }
  int connections() const { return connections_.load(); }
  std::vector<std::string> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  // One request: headers, then Content-Length bytes. False at the end of the stream.
  bool ReadRequest(int fd) {
    std::string data;
    char buf[4096];
    size_t end;
    while ((end = data.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      data.append(buf, static_cast<size_t>(n));
    }
    size_t length = 0;
    const size_t at = data.find("Content-Length: ");
    if (at != std::string::npos) {
      if (!absl::SimpleAtoi(data.substr(at + 16, data.find("\r\n", at) - at - 16), &length)) {
        return false;
      }
    }
    while (data.size() < end + 4 + length) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      data.append(buf, static_cast<size_t>(n));
    }
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(data);
    return true;
  }

  void Run() {
    size_t next = 0;
    while (!stopping_ && next < script_.size()) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      ++connections_;
      while (next < script_.size() && ReadRequest(fd)) {
        const Reply& reply = script_[next++];
        if (reply.close_before) break;
        ::send(fd, reply.bytes.data(), reply.bytes.size(), MSG_NOSIGNAL);
        if (reply.close_after) break;
      }
      ::close(fd);
    }
  }

  std::vector<Reply> script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_ = false;
  std::atomic<int> connections_ = 0;
  mutable std::mutex mu_;
  std::vector<std::string> requests_;
};

absl::StatusOr<std::unique_ptr<UpstreamConnection>> Connect(const ScriptedServer& server,
                                                            absl::Duration io = absl::Seconds(5)) {
  return UpstreamConnection::Connect(server.endpoint(), absl::Seconds(2), io);
}

absl::StatusOr<UpstreamConnection::Answer> Post(UpstreamConnection& connection,
                                                bool* nothing = nullptr) {
  bool ignored = false;
  return connection.Post("/v1/completions", "application/json", R"({"prompt": "hi"})",
                         nothing != nullptr ? nothing : &ignored);
}

TEST(UpstreamConnectionTest, ReadsEveryFramingAndKeepsTheConnection) {
  ScriptedServer server({
      {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"},
      {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "4;ext=1\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n"},
      {"HTTP/1.1 204 No Content\r\n\r\n"},
      {"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
       /*close_after=*/true},
  });
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection = Connect(server);
  ASSERT_TRUE(connection.ok()) << connection.status();
  absl::StatusOr<UpstreamConnection::Answer> answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 200);
  EXPECT_EQ(answer->content_type, "application/json");
  EXPECT_EQ(answer->body, "{\"a\":1}");
  EXPECT_TRUE(answer->reusable);

  answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 201);
  EXPECT_EQ(answer->body, "ok");

  answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->body, "Wikipedia in \r\n\r\nchunks.");
  EXPECT_TRUE(answer->reusable);

  answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 204);
  EXPECT_EQ(answer->body, "");

  answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->status, 500);
  EXPECT_EQ(answer->body, "oops");
  EXPECT_FALSE(answer->reusable);
  EXPECT_EQ(server.connections(), 1);

  // What went out: one request each, with its length and the body whole.
  const std::vector<std::string> requests = server.requests();
  ASSERT_EQ(requests.size(), 5u);
  EXPECT_EQ(requests[0].rfind("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:", 0), 0u)
      << requests[0];
  EXPECT_NE(requests[0].find("Content-Length: 16\r\n"), std::string::npos);
  EXPECT_EQ(requests[0].substr(requests[0].size() - 16), R"({"prompt": "hi"})");
}

TEST(UpstreamConnectionTest, AnswerEndedByCloseAndHttp10AreNotReused) {
  ScriptedServer server({
      {"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", /*close_after=*/true},
      {"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold", /*close_after=*/true},
  });
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection = Connect(server);
  ASSERT_TRUE(connection.ok());
  absl::StatusOr<UpstreamConnection::Answer> answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->body, "until the end");
  EXPECT_FALSE(answer->reusable);

  connection = Connect(server);
  ASSERT_TRUE(connection.ok());
  answer = Post(**connection);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->body, "old");
  EXPECT_FALSE(answer->reusable);
}

TEST(UpstreamConnectionTest, AClosedIdleConnectionSaysNothingCameBack) {
  ScriptedServer server({{"", false, /*close_before=*/true}});
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection = Connect(server);
  ASSERT_TRUE(connection.ok());
  bool nothing = false;
  absl::StatusOr<UpstreamConnection::Answer> answer = Post(**connection, &nothing);
  EXPECT_TRUE(absl::IsUnavailable(answer.status())) << answer.status();
  EXPECT_TRUE(nothing);
}

TEST(UpstreamConnectionTest, BrokenAnswersAreErrorsNotHangs) {
  const std::string huge_headers =
      "HTTP/1.1 200 OK\r\nX-Pad: " + std::string(70 << 10, 'x') + "\r\n\r\n";
  for (const std::string& bytes : {
           std::string("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
           std::string(
               "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"),
           std::string("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
           std::string("SSH-2.0-OpenSSH\r\n\r\n"),
           std::string("HTTP/1.1 2x0 OK\r\n\r\n"),
           std::string("HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"),
           std::string("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"),
           huge_headers,
       }) {
    ScriptedServer server({{bytes, /*close_after=*/true}});
    absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection = Connect(server);
    ASSERT_TRUE(connection.ok());
    bool nothing = true;
    absl::StatusOr<UpstreamConnection::Answer> answer = Post(**connection, &nothing);
    EXPECT_FALSE(answer.ok()) << bytes.substr(0, 60) << " gave " << answer->status;
    EXPECT_FALSE(nothing) << bytes.substr(0, 60);
  }
}

TEST(UpstreamConnectionTest, SilenceEndsAtTheReadTimeout) {
  // Headers, then nothing: the server waits for a next request that never comes, holding the
  // connection open until the test ends.
  ScriptedServer server({{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"}, {"unused"}});
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection =
      Connect(server, absl::Milliseconds(200));
  ASSERT_TRUE(connection.ok());
  absl::StatusOr<UpstreamConnection::Answer> answer = Post(**connection);
  EXPECT_TRUE(absl::IsDeadlineExceeded(answer.status())) << answer.status();
}

TEST(UpstreamConnectionTest, ConnectErrorsNameTheEndpoint) {
  // A port nobody listens on.
  const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(sock);
  const std::string endpoint = absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port));
  absl::StatusOr<std::unique_ptr<UpstreamConnection>> connection =
      UpstreamConnection::Connect(endpoint, absl::Seconds(2), absl::Seconds(2));
  EXPECT_TRUE(absl::IsUnavailable(connection.status())) << connection.status();
  EXPECT_NE(connection.status().message().find(endpoint), absl::string_view::npos);
  for (const char* bad : {"https://127.0.0.1:1", "http://127.0.0.1", "127.0.0.1:80"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(
        UpstreamConnection::Connect(bad, absl::Seconds(1), absl::Seconds(1)).status()))
        << bad;
  }
}

}  // namespace
}  // namespace gswarm::host
