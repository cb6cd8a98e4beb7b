#include "cli/api_client.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/auth.h"
#include "common/grpc_util.h"
#include "common/status.h"
#include "grpcpp/create_channel.h"

namespace gswarm::cli {

int PrintError(absl::string_view message) {
  std::cerr << "error: " << message << "\n";
  return 1;
}

absl::StatusOr<std::unique_ptr<ApiClient>> ApiClient::Create(const common::Config& config) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   common::ClientCredentials(config));
  std::string token =
      !config.client.auth_token.empty() ? config.client.auth_token : common::LocalTokenFallback();
  return std::unique_ptr<ApiClient>(
      new ApiClient(common::HostGrpcTarget(config), std::move(token), credentials));
}

ApiClient::ApiClient(std::string target, std::string token,
                     std::shared_ptr<grpc::ChannelCredentials> credentials)
    : target_(std::move(target)),
      token_(std::move(token)),
      stub_(v1::GSwarm::NewStub(grpc::CreateChannel(target_, credentials))) {}

void ApiClient::Prepare(grpc::ClientContext* context, std::chrono::seconds timeout) const {
  if (timeout.count() > 0) context->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
}

absl::Status ApiClient::Explain(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::UnavailableError(absl::StrCat(
          "cannot reach the GSwarm host at ", target_, " (", status.error_message(),
          "): start one with `gswarm start` or `gswarm host`, or point --host / GSWARM_HOST at "
          "it"));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(absl::StrCat("the GSwarm host at ", target_,
                                                      " did not answer in time (",
                                                      status.error_message(), ")"));
    default:
      return common::FromGrpcStatus(status);
  }
}

}  // namespace gswarm::cli
