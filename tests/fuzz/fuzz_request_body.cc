// The router's request-body reader (host::RequestBody): parse, then the splice it makes before a
// body goes upstream, whose result must parse again with the model it was given.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "host/request_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<gswarm::host::RequestBody> parsed = gswarm::host::RequestBody::Parse(body);
  if (!parsed.ok()) return 0;
  (void)parsed->stream();
  for (bool drop : {false, true}) {
    const std::string rewritten = parsed->Rewrite(body, "real-model \"x\"", drop);
    absl::StatusOr<gswarm::host::RequestBody> again = gswarm::host::RequestBody::Parse(rewritten);
    if (!again.ok() || again->model() != "real-model \"x\"") std::abort();
    if (drop && again->keep_alive().has_value()) std::abort();
  }
  return 0;
}
