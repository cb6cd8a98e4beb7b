#pragma once

// The few top-level fields the router reads from an OpenAI-style request body ("model",
// "stream", "keep_alive"), found in one pass without building a JSON document, and the edits it
// makes before the body goes upstream (the model's real name for an alias, "keep_alive" taken
// out), spliced into the original bytes. A chat request with a long context is tens or hundreds
// of kilobytes: parsing it into a DOM and printing it again would cost more than the rest of the
// router's work on it.
//
// The whole body is still checked to be one well-formed JSON object (RFC 8259's grammar; the
// bytes inside strings are not checked to be UTF-8), so a request the router forwards is one the
// engine can parse.
//
// Thread safety: plain values.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gswarm::host {

class RequestBody {
 public:
  // INVALID_ARGUMENT when `body` is not one JSON object (says where it breaks), when "model" is
  // there but not a string, or when nesting is deeper than 512.
  static absl::StatusOr<RequestBody> Parse(std::string_view body);

  // "model", when present (a string).
  const std::optional<std::string>& model() const { return model_; }
  // "stream" is true.
  bool stream() const { return stream_; }
  // The value of "keep_alive", when present, parsed.
  const std::optional<nlohmann::json>& keep_alive() const { return keep_alive_; }

  // The body with "model" set to `model` (added first when absent) and, with `drop_keep_alive`,
  // without "keep_alive"; every other byte as it came. Duplicate keys are all rewritten.
  std::string Rewrite(std::string_view body, const std::string& model, bool drop_keep_alive) const;

 private:
  // One top-level member: its key's opening quote to the end of its value.
  struct Member {
    size_t begin = 0;
    size_t value_begin = 0;
    size_t end = 0;
    std::string key;
  };

  RequestBody() = default;

  std::vector<Member> members_;
  size_t open_brace_ = 0;
  std::optional<std::string> model_;
  bool stream_ = false;
  std::optional<nlohmann::json> keep_alive_;
};

}  // namespace gswarm::host
