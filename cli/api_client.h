#pragma once

// The CLI's connection to the host's public API, and the helpers every verb shares.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "cli/output.h"
#include "common/config.h"
#include "grpcpp/client_context.h"
#include "grpcpp/security/credentials.h"
#include "gswarm/v1/api.grpc.pb.h"

namespace gswarm::cli {

// "error: <message>" on stderr; returns the exit code 1.
int PrintError(absl::string_view message);

class ApiClient {
 public:
  // Target, token and TLS from the config: --host / client.host_grpc, --token / GSWARM_TOKEN /
  // client.auth_token / the local token file, host.tls.
  static absl::StatusOr<std::unique_ptr<ApiClient>> Create(const common::Config& config);

  // Calls one unary RPC with a deadline and the token, turning transport failures into
  // sentences that say what to do.
  template <typename Request, typename Response, typename Method>
  absl::Status Call(Method method, const Request& request, Response* response,
                    std::chrono::seconds timeout = std::chrono::seconds(30)) {
    grpc::ClientContext context;
    Prepare(&context, timeout);
    return Explain(((*stub_).*method)(&context, request, response));
  }

  // Sets the token (and a deadline, unless zero) on a context for a streaming call.
  void Prepare(grpc::ClientContext* context, std::chrono::seconds timeout) const;
  absl::Status Explain(const grpc::Status& status) const;
  v1::GSwarm::Stub& stub() { return *stub_; }

 private:
  ApiClient(std::string target, std::string token,
            std::shared_ptr<grpc::ChannelCredentials> credentials);

  std::string target_;
  std::string token_;
  std::unique_ptr<v1::GSwarm::Stub> stub_;
};

// Calls one RPC for a verb. Returns the response to show in a table, or nullopt when the verb is
// finished: the error was printed (exit 1) or --json printed the response (exit 0).
template <typename Response, typename Request, typename Method>
std::optional<Response> Fetch(ApiClient& api, Method method, const Request& request, bool json,
                              int* exit_code,
                              std::chrono::seconds timeout = std::chrono::seconds(30)) {
  Response response;
  if (absl::Status s = api.Call(method, request, &response, timeout); !s.ok()) {
    *exit_code = PrintError(s.message());
    return std::nullopt;
  }
  *exit_code = 0;
  if (!json) return response;
  PrintJson(response);
  return std::nullopt;
}

}  // namespace gswarm::cli
