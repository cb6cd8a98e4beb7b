#include "common/model_name.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace gswarm::common {

absl::Status ValidateModelName(absl::string_view name) {
  auto allowed = [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  };
  if (name.empty() || name.size() > 128 ||
      !absl::ascii_isalnum(static_cast<unsigned char>(name.front())) ||
      !std::all_of(name.begin(), name.end(), allowed) || absl::StrContains(name, "..")) {
    return absl::InvalidArgumentError(
        absl::StrCat("model name \"", name,
                     "\" is not valid: use 1-128 letters, digits, '.', '_' or '-', starting with "
                     "a letter or digit and without \"..\""));
  }
  return absl::OkStatus();
}

}  // namespace gswarm::common
