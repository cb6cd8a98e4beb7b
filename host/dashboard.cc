#include "host/dashboard.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/paths.h"
#include "host/rest_gateway.h"

namespace gswarm::host {
namespace {

constexpr std::string_view kPrefix = "/dashboard/";

std::string ContentType(std::string_view name) {
  const auto ends = [&](std::string_view suffix) { return name.ends_with(suffix); };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  if (ends(".json")) return "application/json";
  return "application/octet-stream";
}

// The asset `name`: from GSWARM_DASHBOARD_DIR when set, else built in.
std::optional<std::string> Asset(const std::string& name) {
  if (name.empty() || name.find("..") != std::string::npos) return std::nullopt;
  if (const char* dir = std::getenv("GSWARM_DASHBOARD_DIR"); dir != nullptr && *dir != '\0') {
    absl::StatusOr<std::string> text = common::ReadFile(std::string(dir) + "/" + name);
    if (!text.ok()) return std::nullopt;
    return *std::move(text);
  }
  for (const DashboardAsset* asset = kDashboardAssets; asset->name != nullptr; ++asset) {
    if (name == asset->name) return std::string(asset->data, asset->size);
  }
  return std::nullopt;
}

void Serve(const std::shared_ptr<http::Exchange>& exchange, const std::string& name) {
  std::optional<std::string> body = Asset(name);
  http::Response response;
  if (!body.has_value()) {
    return exchange->Reply(
        RestStatusReply(absl::NotFoundError(absl::StrCat("no such dashboard file: ", name))));
  }
  response.content_type = ContentType(name);
  response.body = *std::move(body);
  // The page changes with the binary; a browser revalidates rather than keep a stale one.
  response.headers = {{"Cache-Control", "no-cache"},
                      {"X-Content-Type-Options", "nosniff"},
                      {"Referrer-Policy", "no-referrer"}};
  exchange->Reply(std::move(response));
}

}  // namespace

void InstallDashboard(http::HttpServer& server) {
  server.Route("GET", "/",
               [](std::shared_ptr<http::Exchange> exchange) { Serve(exchange, "index.html"); });
  server.Route("GET", "/dashboard/(.+)", [](std::shared_ptr<http::Exchange> exchange) {
    Serve(exchange, exchange->request().matches[0]);
  });
}

bool IsDashboardPath(std::string_view path) { return path == "/" || path.starts_with(kPrefix); }

}  // namespace gswarm::host
