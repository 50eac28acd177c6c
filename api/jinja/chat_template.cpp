#include "api/jinja/chat_template.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "api/jinja/builtins.h"
#include "api/jinja/eval.h"
#include "api/jinja/parser.h"

namespace earnserve {
namespace {

using OrderedJson = nlohmann::ordered_json;

// Names of message fields that carry reasoning; the first is the one templates read.
constexpr const char* kReasoningFields[] = {"reasoning_content", "thinking", "reasoning"};

// Follows transformers: null fields are dropped (templates handle a missing key better than a
// None), and reasoning under any of its names is copied to "thinking" and "reasoning_content".
StatusOr<OrderedJson> normalise_messages(const OrderedJson& messages) {
  if (!messages.is_array()) return invalid_argument("chat messages must be a list of objects");
  if (messages.empty())
    return invalid_argument("cannot apply a chat template to an empty conversation");
  OrderedJson out = OrderedJson::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const OrderedJson& message = messages[i];
    if (!message.is_object()) {
      return invalid_argument("chat message " + std::to_string(i) + " is not an object");
    }
    OrderedJson kept = OrderedJson::object();
    for (auto it = message.begin(); it != message.end(); ++it) {
      if (!it.value().is_null()) kept[it.key()] = it.value();
    }
    const OrderedJson* reasoning = nullptr;
    for (const char* field : kReasoningFields) {
      auto found = kept.find(field);
      if (found != kept.end()) {
        reasoning = &*found;
        break;
      }
    }
    if (reasoning != nullptr) {
      OrderedJson aliased = OrderedJson::object();
      aliased["thinking"] = *reasoning;
      for (auto it = kept.begin(); it != kept.end(); ++it) aliased[it.key()] = it.value();
      aliased["reasoning_content"] = *reasoning;
      kept = std::move(aliased);
    }
    out.push_back(std::move(kept));
  }
  return out;
}

StatusOr<OrderedJson> read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return not_found(path.string() + ": cannot open");
  OrderedJson json = OrderedJson::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return invalid_argument(path.string() + ": not valid JSON");
  if (!json.is_object()) return invalid_argument(path.string() + ": not a JSON object");
  return json;
}

}  // namespace

StatusOr<ChatTemplate> ChatTemplate::parse(const std::string& template_text) {
  ES_ASSIGN_OR_RETURN(std::shared_ptr<const jinja::Template> tmpl,
                      jinja::parse_template(template_text));
  return ChatTemplate(std::move(tmpl));
}

StatusOr<std::string> ChatTemplate::render(const OrderedJson& messages,
                                           const OrderedJson& extra_context,
                                           const ChatTemplateOptions& options) const {
  if (!extra_context.is_null() && !extra_context.is_object()) {
    return invalid_argument("chat template context must be a JSON object");
  }
  ES_ASSIGN_OR_RETURN(OrderedJson normalised, normalise_messages(messages));
  std::tm now{};
  if (options.now) {
    now = *options.now;
  } else {
    const std::time_t t = std::time(nullptr);
    localtime_r(&t, &now);
  }
  std::vector<std::pair<std::string, jinja::Value>> globals;
  jinja::add_builtin_globals(now, globals);
  globals.emplace_back("tools", jinja::Value::from_json(nullptr));
  globals.emplace_back("documents", jinja::Value::from_json(nullptr));
  if (extra_context.is_object()) {
    for (auto it = extra_context.begin(); it != extra_context.end(); ++it) {
      if (it.key() == "messages" || it.key() == "add_generation_prompt") {
        return invalid_argument("chat template context may not set '" + it.key() + "'");
      }
      globals.emplace_back(it.key(), jinja::Value::from_json(it.value()));
    }
  }
  globals.emplace_back("messages", jinja::Value::from_json(std::move(normalised)));
  globals.emplace_back("add_generation_prompt",
                       jinja::Value::from_json(options.add_generation_prompt));
  return jinja::render_template(*template_, globals);
}

StatusOr<std::string> render_chat_template(const std::string& template_text,
                                           const nlohmann::json& messages,
                                           bool add_generation_prompt,
                                           const nlohmann::json& extra_context) {
  ES_ASSIGN_OR_RETURN(ChatTemplate chat_template, ChatTemplate::parse(template_text));
  ChatTemplateOptions options;
  options.add_generation_prompt = add_generation_prompt;
  return chat_template.render(OrderedJson(messages), OrderedJson(extra_context), options);
}

StatusOr<std::string> load_chat_template(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  const std::filesystem::path jinja_path = dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    std::ifstream in(jinja_path, std::ios::binary);
    if (!in) return not_found(jinja_path.string() + ": cannot open");
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }
  const std::filesystem::path config_path = dir / "tokenizer_config.json";
  ES_ASSIGN_OR_RETURN(OrderedJson config, read_json_file(config_path));
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) {
    return not_found(config_path.string() + ": no chat_template (and no chat_template.jinja)");
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const OrderedJson& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
    return not_found(config_path.string() + ": chat_template lists no template named \"default\"");
  }
  return invalid_argument(config_path.string() + ": chat_template is neither a string nor a list");
}

StatusOr<OrderedJson> load_chat_template_tokens(const std::string& model_dir) {
  const std::filesystem::path config_path =
      std::filesystem::path(model_dir) / "tokenizer_config.json";
  ES_ASSIGN_OR_RETURN(OrderedJson config, read_json_file(config_path));
  static const char* kTokenKeys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                     "pad_token", "cls_token", "mask_token"};
  OrderedJson tokens = OrderedJson::object();
  for (const char* key : kTokenKeys) {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) continue;
    if (it->is_string()) {
      tokens[key] = *it;
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      tokens[key] = (*it)["content"];
    } else {
      return invalid_argument(config_path.string() + ": " + key +
                              " is neither a string nor a token object");
    }
  }
  return tokens;
}

}  // namespace earnserve
