// Chat templates: renders the Jinja `chat_template` of a Hugging Face tokenizer_config.json the
// way transformers' tokenizer.apply_chat_template(messages, tokenize=False, ...) does, with a
// Jinja subset interpreter (api/jinja/). Like transformers it drops null message fields, fills
// reasoning_content from "thinking"/"reasoning", and exposes raise_exception, strftime_now and
// namespace to the template.
// A ChatTemplate is parsed once, immutable afterwards, and safe to render from many threads.
// Key order: tojson prints dict keys in the order the JSON holds them; pass ordered_json (as
// transformers keeps Python's insertion order) to match it byte for byte when tools are given.
#pragma once

#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/status.h"

namespace earnserve {

namespace jinja {
struct Template;
}  // namespace jinja

struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  // The calendar time strftime_now() formats; the local time of the call when unset. Tests fix it.
  std::optional<std::tm> now;
};

class ChatTemplate {
 public:
  // Errors (syntax, unknown tag, filter or test) name the template line.
  static StatusOr<ChatTemplate> parse(const std::string& template_text);

  // messages: a non-empty list of message objects ({"role", "content", "tool_calls", ...}).
  // extra_context: template variables such as bos_token, eos_token, tools, enable_thinking,
  // date_string. A raise_exception() in the template comes back as its message.
  StatusOr<std::string> render(const nlohmann::ordered_json& messages,
                               const nlohmann::ordered_json& extra_context,
                               const ChatTemplateOptions& options) const;

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::Template> tmpl) : template_(std::move(tmpl)) {}

  // Constant after construction.
  std::shared_ptr<const jinja::Template> template_;
};

// Parses and renders in one go; see ChatTemplate::render.
StatusOr<std::string> render_chat_template(const std::string& template_text,
                                           const nlohmann::json& messages,
                                           bool add_generation_prompt,
                                           const nlohmann::json& extra_context);

// The chat template of a model directory: chat_template.jinja when present, else
// tokenizer_config.json's "chat_template" (a string, or a list of {name, template} of which
// "default" is taken).
StatusOr<std::string> load_chat_template(const std::string& model_dir);

// The special tokens a template refers to (bos_token, eos_token, unk_token, pad_token, ...) as
// tokenizer_config.json names them, ready to merge into extra_context. Tokens set to null are left
// out, as transformers' special_tokens_map does.
StatusOr<nlohmann::ordered_json> load_chat_template_tokens(const std::string& model_dir);

}  // namespace earnserve
