#pragma once

// Small string helpers shared by common/'s parsers (config, engine specs).

#include <string>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace gswarm::common {

// Debian builds Abseil with its own string_view, distinct from std::string_view; public functions
// take std::string_view and convert once with this.
inline absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A value as shown in a message: in double quotes, C-escaped.
inline std::string Quote(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

}  // namespace gswarm::common
