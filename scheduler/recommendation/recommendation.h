// Recommendation requests: a model directory may ship recommendation.json naming its item
// catalogue, a prompt template with a {history} slot, the item separator and the history limit.
// RecommendationSpec turns a user's history (catalogue item ids) into the prompt and an
// EngineRequest for catalogue-constrained beam search, and the finished beams into ranked items.
// Immutable after load; thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "scheduler/recommendation/catalogue.h"
#include "scheduler/request.h"

namespace earnserve {

class Tokenizer;

struct RecommendationQuery {
  std::vector<std::string> history;  // catalogue item ids, oldest first
  std::string prompt;                // used instead of history when non-empty
  int top_k = 10;
  int beam_width = 0;  // 0: top_k
  bool exclude_history = false;
  std::vector<std::string> exclude_items;
  // What item scores are log-probabilities over (EngineRequest::score_over).
  ScoreOver score_over = ScoreOver::kVocabulary;
};

struct RecommendedItem {
  std::string item_id;
  std::string identifier;
  std::string title;
  float score = 0.0f;  // the beam's log-probability (length-penalised score)
};

class RecommendationSpec {
 public:
  // Reads DIR/recommendation.json; nullptr (not an error) when the file does not exist.
  static StatusOr<std::shared_ptr<const RecommendationSpec>> load(const std::string& model_dir,
                                                                  const Tokenizer& tokenizer);

  const Catalogue& catalogue() const { return *catalogue_; }
  std::shared_ptr<const Catalogue> catalogue_ptr() const { return catalogue_; }
  const std::string& prompt_template() const { return prompt_template_; }
  int history_limit() const { return history_limit_; }

  // The prompt for a history (the last history_limit items). Unknown item ids are an error
  // naming the id.
  StatusOr<std::string> build_prompt(const std::vector<std::string>& history) const;
  // One history item as the prompt shows it: recommendation.json's "item_format" (default
  // "{identifier}"; e.g. "{identifier} {title}") with the item's identifier and title.
  std::string format_item(const CatalogueItem& item) const;

  // A beam-search request: beam_width beams, top_k returned, constrained to the catalogue.
  StatusOr<EngineRequest> make_request(const RecommendationQuery& query, const Tokenizer& tokenizer,
                                       const std::string& request_id) const;

  // Ranked items of a finished request (best first; sequences that reached no item are skipped).
  std::vector<RecommendedItem> items(const RequestOutput& output) const;

 private:
  std::shared_ptr<const Catalogue> catalogue_;
  std::string prompt_template_;
  std::string item_separator_ = ", ";
  // How one history item reads in the prompt: {identifier} and {title} (empty without titles).
  std::string item_format_ = "{identifier}";
  int history_limit_ = 20;
};

}  // namespace earnserve
