#include "model/tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/tokenizer/json_reader.h"
#include "model/tokenizer/normalizer.h"
#include "model/tokenizer/post_processor.h"
#include "model/tokenizer/pre_tokenizer.h"
#include "model/tokenizer/token_decoder.h"
#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

using nlohmann::json;

StatusOr<std::string> read_file(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    return not_found(path + ": no such file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(path + ": cannot open file");
  in.seekg(0, std::ios::end);
  std::string content(static_cast<size_t>(std::max<std::streamoff>(in.tellg(), 0)), '\0');
  in.seekg(0, std::ios::beg);
  in.read(content.data(), static_cast<std::streamsize>(content.size()));
  if (!in) return data_loss(path + ": read error");
  return content;
}

StatusOr<json> read_json(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, read_file(path));
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    return invalid_argument(path + ": invalid JSON: " + e.what());
  }
}

// bos_token/eos_token of tokenizer_config.json: "text", {"content": "text"} or null.
std::optional<std::string> token_name(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& value = config[key];
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string()) {
    return value["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

Tokenizer::~Tokenizer() = default;

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_file(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, read_file(path));
  StatusOr<TokenizerJson> parsed = parse_tokenizer_json(text);
  if (!parsed.ok()) return parsed.status().with_prefix(path);
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  try {
    Status status = tokenizer->init(parsed->root, std::move(parsed->bpe));
    if (!status.ok()) return status.with_prefix(path);
  } catch (const json::exception& e) {
    return invalid_argument(path + ": unexpected JSON structure: " + e.what());
  }
  return tokenizer;
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::from_dir(const std::string& dir) {
  std::error_code error;
  if (!std::filesystem::is_directory(dir, error)) return not_found(dir + ": no such directory");
  const std::filesystem::path base(dir);
  ES_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                      from_file((base / "tokenizer.json").string()));
  const std::string config_path = (base / "tokenizer_config.json").string();
  if (std::filesystem::exists(config_path, error)) {
    ES_ASSIGN_OR_RETURN(json config, read_json(config_path));
    try {
      Status status = tokenizer->apply_config(config);
      if (!status.ok()) return status.with_prefix(config_path);
    } catch (const json::exception& e) {
      return invalid_argument(config_path + ": unexpected JSON structure: " + e.what());
    }
  }
  const std::string template_path = (base / "chat_template.jinja").string();
  if (tokenizer->chat_template_.empty() && std::filesystem::exists(template_path, error)) {
    ES_ASSIGN_OR_RETURN(tokenizer->chat_template_, read_file(template_path));
  }
  return tokenizer;
}

Status Tokenizer::init(const json& root, BpeTables bpe) {
  if (!root.is_object()) return invalid_argument("top level is not a JSON object");
  if (!root.contains("model")) return invalid_argument("no 'model'");
  const json& model = root["model"];
  if (!model.is_object()) return invalid_argument("'model' must be an object");
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") return unimplemented("unsupported model type '" + type + "'");
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return invalid_argument("BPE model needs an object 'vocab'");
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return invalid_argument("BPE model needs an array 'merges'");
  }
  ES_ASSIGN_OR_RETURN(model_, BpeModel::from_tables(model, std::move(bpe)));
  ES_ASSIGN_OR_RETURN(normalizer_, make_normalizer(root.value("normalizer", json())));
  ES_ASSIGN_OR_RETURN(pre_tokenizer_, make_pre_tokenizer(root.value("pre_tokenizer", json())));
  ES_ASSIGN_OR_RETURN(post_processor_, make_post_processor(root.value("post_processor", json())));
  ES_ASSIGN_OR_RETURN(decoder_, make_token_decoder(root.value("decoder", json())));
  vocab_size_ = model_->id_limit();
  return init_added_tokens(root.value("added_tokens", json::array()));
}

Status Tokenizer::init_added_tokens(const json& list) {
  if (!list.is_array()) return invalid_argument("'added_tokens' is not an array");
  std::vector<std::string> raw_patterns;
  std::vector<int> raw_indices;
  std::vector<std::string> normalized_patterns;
  std::vector<int> normalized_indices;
  for (const json& entry : list) {
    if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
        !entry.contains("content") || !entry["content"].is_string()) {
      return invalid_argument("added token without integer 'id' and string 'content': " +
                              entry.dump());
    }
    AddedToken token;
    token.id = entry["id"].get<int32_t>();
    token.content = entry["content"].get<std::string>();
    token.special = entry.value("special", false);
    token.normalized = entry.value("normalized", !token.special);
    token.single_word = entry.value("single_word", false);
    token.lstrip = entry.value("lstrip", false);
    token.rstrip = entry.value("rstrip", false);
    if (token.id < 0)
      return invalid_argument("added token '" + token.content + "' has a negative id");
    if (token.content.empty() || !is_valid_utf8(token.content)) {
      return invalid_argument("added token " + std::to_string(token.id) +
                              " has empty or bad content");
    }
    if (added_index_by_id_.contains(token.id)) {
      return invalid_argument("two added tokens have id " + std::to_string(token.id));
    }
    const int index = static_cast<int>(added_tokens_.size());
    std::string decode_form = token.content;
    if (token.normalized) {
      if (normalizer_ != nullptr) decode_form = normalizer_->normalize(token.content);
      normalized_patterns.push_back(decode_form);
      normalized_indices.push_back(index);
    } else {
      raw_patterns.push_back(token.content);
      raw_indices.push_back(index);
    }
    added_index_by_id_.emplace(token.id, index);
    added_id_by_content_.emplace(token.content, token.id);
    vocab_size_ = std::max(vocab_size_, token.id + 1);
    added_decode_forms_.push_back(std::move(decode_form));
    added_tokens_.push_back(std::move(token));
  }
  raw_splitter_ = std::make_unique<AddedTokenSplitter>(&added_tokens_, raw_patterns, raw_indices);
  normalized_splitter_ =
      std::make_unique<AddedTokenSplitter>(&added_tokens_, normalized_patterns, normalized_indices);
  return Status::Ok();
}

Status Tokenizer::apply_config(const json& config) {
  if (!config.is_object()) return invalid_argument("top level is not a JSON object");
  auto resolve = [&](const char* key, std::optional<int32_t>* id) -> Status {
    std::optional<std::string> name = token_name(config, key);
    if (!name) return Status::Ok();
    *id = token_to_id(*name);
    if (!*id)
      return invalid_argument(std::string(key) + " '" + *name + "' is not in the vocabulary");
    return Status::Ok();
  };
  ES_RETURN_IF_ERROR(resolve("bos_token", &bos_token_id_));
  ES_RETURN_IF_ERROR(resolve("eos_token", &eos_token_id_));
  if (config.contains("chat_template")) {
    const json& chat = config["chat_template"];
    if (chat.is_string()) {
      chat_template_ = chat.get<std::string>();
    } else if (chat.is_array()) {
      // Named templates: [{"name": "default", "template": "..."}, ...]; take "default".
      for (const json& named : chat) {
        if (named.value("name", std::string()) == "default" && named.contains("template")) {
          chat_template_ = named["template"].get<std::string>();
        }
      }
    }
  }
  return Status::Ok();
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  for (const TextSegment& segment : raw_splitter_->split(text)) {
    if (segment.token_index >= 0) {
      ids.push_back(added_tokens_[segment.token_index].id);
    } else {
      encode_segment(text.substr(segment.begin, segment.end - segment.begin), segment.begin == 0,
                     &ids);
    }
  }
  if (add_special_tokens && post_processor_ != nullptr) post_processor_->add_special_tokens(&ids);
  return ids;
}

void Tokenizer::encode_segment(std::string_view text, bool starts_input,
                               std::vector<int32_t>* ids) const {
  std::string normalized =
      normalizer_ != nullptr ? normalizer_->normalize(text) : std::string(text);
  std::vector<std::string> words;
  for (const TextSegment& segment : normalized_splitter_->split(normalized)) {
    if (segment.token_index >= 0) {
      ids->push_back(added_tokens_[segment.token_index].id);
      continue;
    }
    if (segment.begin == segment.end) continue;
    words.assign(1, normalized.substr(segment.begin, segment.end - segment.begin));
    if (pre_tokenizer_ != nullptr) {
      pre_tokenizer_->pre_tokenize(&words, starts_input && segment.begin == 0);
    }
    for (const std::string& word : words) model_->tokenize(word, ids);
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto it = added_index_by_id_.find(id);
    if (it != added_index_by_id_.end()) {
      if (skip_special_tokens && added_tokens_[it->second].special) continue;
      tokens.push_back(added_decode_forms_[it->second]);
    } else if (const std::string* token = model_->id_to_token(id)) {
      tokens.push_back(*token);
    }
  }
  std::string text;
  if (decoder_ == nullptr) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) text.push_back(' ');
      text.append(tokens[i]);
    }
    return text;
  }
  decoder_->decode_chain(&tokens);
  for (const std::string& piece : tokens) text.append(piece);
  return text;
}

const AddedToken* Tokenizer::added_token(int32_t id) const {
  auto it = added_index_by_id_.find(id);
  return it == added_index_by_id_.end() ? nullptr : &added_tokens_[it->second];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = added_id_by_content_.find(token);
  if (it != added_id_by_content_.end()) return it->second;
  return model_->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* token = added_token(id)) return token->content;
  const std::string* token = model_->id_to_token(id);
  return token != nullptr ? *token : std::string();
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* token = added_token(id);
  return token != nullptr && token->special;
}

}  // namespace earnserve
