#include "api/protocol/protocol_context.h"

#include <filesystem>

#include "api/jinja/chat_template.h"
#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"

namespace earnserve::api {

StatusOr<ProtocolContext> make_protocol_context(const Engine& engine, const std::string& model_dir,
                                                const std::string& served_model_name) {
  ProtocolContext context;
  std::string name = served_model_name;
  if (name.empty()) {
    const std::filesystem::path dir = std::filesystem::path(model_dir).lexically_normal();
    name = dir.filename().string();
    if (name.empty()) name = dir.parent_path().filename().string();
  }
  context.served_model_name = name;
  context.tokenizer = &engine.tokenizer();
  context.max_model_len = engine.max_model_len();
  context.vocab_size = static_cast<int>(engine.model_config().vocab_size);
  ES_ASSIGN_OR_RETURN(context.recommendation,
                      RecommendationSpec::load(model_dir, engine.tokenizer()));
  if (StatusOr<std::string> text = load_chat_template(model_dir); text.ok() && !text->empty()) {
    StatusOr<ChatTemplate> parsed = ChatTemplate::parse(*text);
    if (!parsed.ok()) return parsed.status().with_prefix("chat template");
    context.chat_template = std::make_shared<const ChatTemplate>(std::move(*parsed));
    StatusOr<nlohmann::ordered_json> tokens = load_chat_template_tokens(model_dir);
    if (tokens.ok()) context.chat_template_context = std::move(*tokens);
  }
  return context;
}

}  // namespace earnserve::api
