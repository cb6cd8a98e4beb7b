#pragma once

// The dashboard: the page at / and its assets under /dashboard/, built into the binary from
// host/dashboard/ (cmake/embed_assets.cmake). The page reads everything else through the REST API
// and /events with the token the person enters, so the assets themselves need none.
//
// GSWARM_DASHBOARD_DIR, when set, serves the files from that directory instead, read on every
// request: edit the page without rebuilding.
//
// Thread safety: stateless.

#include <cstddef>
#include <string_view>

#include "host/http_server.h"

namespace gswarm::host {

struct DashboardAsset {
  const char* name;  // path under host/dashboard/, e.g. "index.html"
  const char* data;
  size_t size;
};

// Ends with {nullptr, nullptr, 0}. Generated.
extern const DashboardAsset kDashboardAssets[];

// GET / and GET /dashboard/NAME.
void InstallDashboard(http::HttpServer& server);

// Whether `path` is one of the dashboard's (they are served without the token).
bool IsDashboardPath(std::string_view path);

}  // namespace gswarm::host
