#include "client/model_manifest.h"

#include "absl/strings/str_cat.h"
#include "common/paths.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace gswarm::client {

std::string ManifestPath(const std::string& model_dir) {
  return absl::StrCat(model_dir, "/.gswarm/manifest.json");
}

absl::StatusOr<ModelManifest> ReadManifest(const std::string& model_dir) {
  std::string path = ManifestPath(model_dir);
  ASSIGN_OR_RETURN(std::string text, common::ReadFile(path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  ModelManifest m;
  try {
    m.name = j.value("name", "");
    m.source_url = j.value("source_url", "");
    m.revision = j.value("revision", "");
    m.commit = j.value("commit", "");
    m.downloaded_at = j.value("downloaded_at", "");
    for (const nlohmann::json& f : j.at("files")) {
      v1::ModelFile file;
      file.set_path(f.at("path").get<std::string>());
      file.set_size_bytes(f.at("size").get<uint64_t>());
      file.set_sha256(f.value("sha256", ""));
      file.set_xxh3_128(f.value("xxh3_128", ""));
      m.files.push_back(std::move(file));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a GSwarm manifest: ", e.what()));
  }
  return m;
}

absl::Status WriteManifest(const std::string& model_dir, const ModelManifest& m) {
  nlohmann::json files = nlohmann::json::array();
  for (const v1::ModelFile& f : m.files) {
    nlohmann::json file = {{"path", f.path()}, {"size", f.size_bytes()}, {"sha256", f.sha256()}};
    if (!f.xxh3_128().empty()) file["xxh3_128"] = f.xxh3_128();
    files.push_back(std::move(file));
  }
  nlohmann::json j = {{"format", 1},
                      {"name", m.name},
                      {"source_url", m.source_url},
                      {"revision", m.revision},
                      {"commit", m.commit},
                      {"downloaded_at", m.downloaded_at},
                      {"files", files}};
  RETURN_IF_ERROR(common::MakeDirs(absl::StrCat(model_dir, "/.gswarm")));
  return common::WriteFileAtomically(
      ManifestPath(model_dir),
      j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace gswarm::client
