// The REST gateway's JSON -> proto mapping (common::FromJson) for the request bodies it takes; the
// first byte picks the message. What parses prints back as JSON.

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/strings/string_view.h"
#include "common/proto_json.h"
#include "gswarm/v1/api.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::unique_ptr<google::protobuf::Message> message;
  switch (data[0] % 8) {
    case 0:
      message = std::make_unique<gswarm::v1::RegisterModelRequest>();
      break;
    case 1:
      message = std::make_unique<gswarm::v1::DownloadRequest>();
      break;
    case 2:
      message = std::make_unique<gswarm::v1::CopyRequest>();
      break;
    case 3:
      message = std::make_unique<gswarm::v1::ServeRequest>();
      break;
    case 4:
      message = std::make_unique<gswarm::v1::StopInstanceRequest>();
      break;
    case 5:
      message = std::make_unique<gswarm::v1::LoadModelRequest>();
      break;
    case 6:
      message = std::make_unique<gswarm::v1::SleepInstanceRequest>();
      break;
    default:
      message = std::make_unique<gswarm::v1::GetCapacityRequest>();
      break;
  }
  const absl::string_view json(reinterpret_cast<const char*>(data + 1), size - 1);
  if (gswarm::common::FromJson(json, message.get()).ok()) {
    (void)gswarm::common::ToJson(*message);
  }
  return 0;
}
