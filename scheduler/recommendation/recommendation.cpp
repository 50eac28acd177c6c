#include "scheduler/recommendation/recommendation.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "model/tokenizer/tokenizer.h"

namespace earnserve {

StatusOr<std::shared_ptr<const RecommendationSpec>> RecommendationSpec::load(
    const std::string& model_dir, const Tokenizer& tokenizer) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path(model_dir) / "recommendation.json";
  if (!fs::exists(path)) return std::shared_ptr<const RecommendationSpec>();
  std::ifstream in(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(path.string() + ": invalid JSON: " + e.what());
  }
  auto spec = std::make_shared<RecommendationSpec>();
  try {
    if (!j.contains("catalogue") || !j.contains("prompt_template")) {
      return invalid_argument(path.string() + ": needs \"catalogue\" and \"prompt_template\"");
    }
    spec->prompt_template_ = j.at("prompt_template").get<std::string>();
    if (spec->prompt_template_.find("{history}") == std::string::npos) {
      return invalid_argument(path.string() + ": prompt_template has no {history} slot");
    }
    spec->item_separator_ = j.value("item_separator", std::string(", "));
    spec->item_format_ = j.value("item_format", std::string("{identifier}"));
    if (spec->item_format_.find("{identifier}") == std::string::npos &&
        spec->item_format_.find("{title}") == std::string::npos) {
      return invalid_argument(path.string() +
                              ": item_format names neither {identifier} nor {title}");
    }
    // Checked before the conversion to int: a float out of its range would be undefined.
    const nlohmann::json limit = j.value("history_limit", nlohmann::json(20));
    if (!limit.is_number_integer() || limit.get<int64_t>() < 1 ||
        limit.get<int64_t>() > std::numeric_limits<int>::max()) {
      return invalid_argument(path.string() + ": history_limit must be a positive integer, got " +
                              limit.dump());
    }
    spec->history_limit_ = limit.get<int>();
    // The files it names are relative to the model directory, as a Hugging Face checkpoint's
    // are: an absolute path would make the directory depend on the machine it was written on.
    std::string resolved[2];
    const char* fields[2] = {"catalogue", "titles"};
    for (int f = 0; f < 2; ++f) {
      if (!j.contains(fields[f])) continue;
      const fs::path relative = j.at(fields[f]).get<std::string>();
      if (relative.empty() || relative.is_absolute()) {
        return invalid_argument(path.string() + ": \"" + fields[f] +
                                "\" must be a file path relative to the model directory, got " +
                                j.at(fields[f]).dump());
      }
      resolved[f] = (fs::path(model_dir) / relative).string();
    }
    ES_ASSIGN_OR_RETURN(spec->catalogue_, Catalogue::load(resolved[0], tokenizer, resolved[1]));
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(path.string() + ": " + e.what());
  }
  return std::shared_ptr<const RecommendationSpec>(std::move(spec));
}

std::string RecommendationSpec::format_item(const CatalogueItem& item) const {
  std::string out = item_format_;
  for (const auto& [slot, value] :
       {std::pair<std::string, const std::string*>{"{identifier}", &item.identifier},
        std::pair<std::string, const std::string*>{"{title}", &item.title}}) {
    for (size_t at = out.find(slot); at != std::string::npos;
         at = out.find(slot, at + value->size())) {
      out.replace(at, slot.size(), *value);
    }
  }
  return out;
}

StatusOr<std::string> RecommendationSpec::build_prompt(
    const std::vector<std::string>& history) const {
  size_t begin =
      history.size() > static_cast<size_t>(history_limit_) ? history.size() - history_limit_ : 0;
  std::string joined;
  for (size_t i = begin; i < history.size(); ++i) {
    int64_t index = catalogue_->find_item(history[i]);
    if (index < 0) return invalid_argument("unknown item id '" + history[i] + "' in history");
    if (i > begin) joined += item_separator_;
    joined += format_item(catalogue_->item(index));
  }
  std::string prompt = prompt_template_;
  prompt.replace(prompt.find("{history}"), 9, joined);
  return prompt;
}

StatusOr<EngineRequest> RecommendationSpec::make_request(const RecommendationQuery& q,
                                                         const Tokenizer& tokenizer,
                                                         const std::string& request_id) const {
  if (q.top_k < 1 || q.top_k > kMaxBeamWidth) return invalid_argument("top_k must be in [1, 512]");
  const int width = q.beam_width > 0 ? q.beam_width : q.top_k;
  if (width < q.top_k || width > kMaxBeamWidth) {
    return invalid_argument("beam_width must be in [top_k, 512]");
  }
  std::string prompt = q.prompt;
  if (prompt.empty()) {
    if (q.history.empty()) return invalid_argument("history must name at least one item");
    ES_ASSIGN_OR_RETURN(prompt, build_prompt(q.history));
  }
  EngineRequest r;
  r.request_id = request_id;
  r.prompt_token_ids = tokenizer.encode(prompt, /*add_special_tokens=*/true);
  r.params.use_beam_search = true;
  r.params.beam_width = width;
  r.params.n = q.top_k;
  r.params.temperature = 0.0f;
  r.params.max_tokens = catalogue_->max_depth() + 1;
  r.catalogue = catalogue_;
  r.score_over = q.score_over;
  std::vector<std::string> excluded = q.exclude_items;
  if (q.exclude_history) excluded.insert(excluded.end(), q.history.begin(), q.history.end());
  for (const std::string& id : excluded) {
    int64_t index = catalogue_->find_item(id);
    if (index < 0) return invalid_argument("unknown item id '" + id + "' in exclusions");
    r.exclude_items.push_back(index);
  }
  return r;
}

std::vector<RecommendedItem> RecommendationSpec::items(const RequestOutput& output) const {
  std::vector<RecommendedItem> items;
  for (const SequenceOutput& o : output.outputs) {
    if (o.item_index < 0) continue;
    const CatalogueItem& item = catalogue_->item(o.item_index);
    items.push_back({item.id, item.identifier, item.title, o.score});
  }
  return items;
}

}  // namespace earnserve
