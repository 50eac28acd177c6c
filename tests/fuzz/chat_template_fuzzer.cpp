// libFuzzer target over chat templates (api/jinja/chat_template.h): the input is a template, a
// 0x00 byte, then the messages as JSON (a list, or an object with "messages" and the extra
// context). The template is parsed and, when it parses, rendered with those messages, or with a
// fixed conversation when they are not JSON. Any crash or sanitizer report is a bug; errors are
// expected.
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <nlohmann/json.hpp>
#include <string>

#include "api/jinja/chat_template.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

nlohmann::ordered_json default_messages() {
  return nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello", "tool_calls": [
      {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
    {"role": "tool", "content": "42"},
    {"role": "user", "content": [{"type": "text", "text": "more"}]}])");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = earnserve::fuzz::split_input(data, size, '\0', 2);
  auto tmpl = earnserve::ChatTemplate::parse(std::string(parts[0]));
  if (!tmpl.ok()) return 0;
  nlohmann::ordered_json messages = default_messages();
  nlohmann::ordered_json extra = {{"bos_token", "<s>"}, {"eos_token", "</s>"}};
  if (parts.size() > 1) {
    auto json = nlohmann::ordered_json::parse(parts[1], nullptr, /*allow_exceptions=*/false);
    if (json.is_array()) {
      messages = std::move(json);
    } else if (json.is_object()) {
      if (auto it = json.find("messages"); it != json.end()) messages = *it;
      extra.update(json);
    }
  }
  earnserve::ChatTemplateOptions options;
  options.add_generation_prompt = size % 2 == 0;
  options.now = std::tm{};
  (void)tmpl->render(messages, extra, options);
  return 0;
}
