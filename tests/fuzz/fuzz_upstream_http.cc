// An engine's HTTP answer as the router's upstream side reads it: Beast's response parser with
// the relay's limits and buffer body, fed in the relay's chunk size (host/http_upstream.cc).

#include <cstddef>
#include <cstdint>
#include <string>

#include "boost/beast/core/flat_buffer.hpp"
#include "boost/beast/http/buffer_body.hpp"
#include "boost/beast/http/error.hpp"
#include "boost/beast/http/parser.hpp"
#include "host/http_upstream.h"

namespace bhttp = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.header_limit(static_cast<uint32_t>(gswarm::host::UpstreamPool::kMaxHeaders));
  parser.body_limit(gswarm::host::UpstreamPool::kMaxBody);
  parser.eager(true);
  std::string chunk(8 << 10, '\0');
  size_t offset = 0;
  boost::beast::error_code ec;
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    const size_t used = parser.put(boost::asio::buffer(data + offset, size - offset), ec);
    offset += used;
    if (ec == bhttp::error::need_buffer) {
      ec = {};
      continue;
    }
    if (ec == bhttp::error::need_more && offset == size) {
      parser.put_eof(ec);
      break;
    }
    if (ec) break;
    if (used == 0 && offset == size) break;
  }
  if (parser.is_header_done()) {
    (void)parser.get().result_int();
    (void)parser.get().keep_alive();
  }
  return 0;
}
