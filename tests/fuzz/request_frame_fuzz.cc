// Fuzz target: the message frame decoder, internal::DecodeRequestBody
// (lib/internal/instance_channel.h), which parses what any local process
// sends to a primary's socket.
//
// Properties: decoding any bytes is safe; a body that decodes is exactly
// what EncodeRequest() makes of the decoded message (the encoding is
// canonical, so nothing in a frame is ignored); a message built from the
// input survives EncodeRequest() -> DecodeRequestBody() unchanged, with a
// header giving the body's length; a body cut short never decodes.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "onlyone/internal/instance_channel.h"
#include "tests/fuzz/fuzz_support.h"

namespace onlyone::fuzz {
namespace {

using ::onlyone::internal::ChannelMessage;
using ::onlyone::internal::DecodeRequestBody;
using ::onlyone::internal::EncodeRequest;
using ::onlyone::internal::kFrameHeaderBytes;

std::string Show(absl::string_view bytes) {
  return absl::StrCat("\"", absl::CHexEscape(bytes), "\"");
}

bool SameMessage(const ChannelMessage& a, const ChannelMessage& b) {
  return a.arguments == b.arguments &&
         a.working_directory == b.working_directory && a.payload == b.payload;
}

void CheckDecoded(absl::string_view body) {
  const std::optional<ChannelMessage> message = DecodeRequestBody(body);
  if (!message.has_value()) return;
  const std::string frame = EncodeRequest(*message);
  FUZZ_CHECK(frame.size() >= kFrameHeaderBytes &&
                 absl::string_view(frame).substr(kFrameHeaderBytes) == body,
             absl::StrCat(Show(body), " re-encoded as ", Show(frame)));
}

void CheckBuilt(FuzzInput input) {
  ChannelMessage message;
  for (uint64_t count = input.Integer() % 8; count > 0; --count) {
    message.arguments.push_back(input.String(64));
  }
  message.working_directory = input.String(128);
  message.payload = std::string(input.Rest());
  const std::string frame = EncodeRequest(message);
  FUZZ_CHECK(frame.size() >= kFrameHeaderBytes, Show(frame));
  const absl::string_view header =
      absl::string_view(frame).substr(0, kFrameHeaderBytes);
  const absl::string_view body =
      absl::string_view(frame).substr(kFrameHeaderBytes);
  uint32_t length = 0;
  for (int i = 4; i < 8; ++i) {
    length = (length << 8) | static_cast<unsigned char>(header[i]);
  }
  FUZZ_CHECK(header.substr(0, 4) == "OO1Q" && length == body.size(),
             Show(frame));
  const std::optional<ChannelMessage> decoded = DecodeRequestBody(body);
  FUZZ_CHECK(decoded.has_value() && SameMessage(message, *decoded),
             Show(frame));
  // Cut at the last byte and in the middle.
  for (size_t cut : {body.size() - 1, body.size() / 2}) {
    FUZZ_CHECK(!DecodeRequestBody(body.substr(0, cut)).has_value(),
               absl::StrCat(Show(body), " cut to ", cut, " bytes"));
  }
}

}  // namespace
}  // namespace onlyone::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onlyone::fuzz::CheckDecoded(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  onlyone::fuzz::CheckBuilt(onlyone::fuzz::FuzzInput(data, size));
  return 0;
}
