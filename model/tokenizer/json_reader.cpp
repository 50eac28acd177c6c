#include "model/tokenizer/json_reader.h"

namespace earnserve {
namespace {

using nlohmann::json;

StatusOr<std::pair<std::string, std::string>> split_merge(const std::string& text, size_t index) {
  size_t space = text.find(' ');
  if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
    return invalid_argument("merge " + std::to_string(index) + " '" + text +
                            "' is not two tokens separated by one space");
  }
  return std::make_pair(text.substr(0, space), text.substr(space + 1));
}

// Builds the JSON tree like nlohmann's own DOM parser, except inside model.vocab and
// model.merges, whose entries go to `tables` instead.
class TokenizerSax : public nlohmann::json_sax<json> {
 public:
  explicit TokenizerSax(TokenizerJson* out) : out_(out) {}

  bool null() override { return value(json()); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::kVocab && depth_in_table_ == 1) return vocab_id(v);
    return value(json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab && depth_in_table_ == 1) {
      return vocab_id(v > static_cast<number_unsigned_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v));
    }
    return value(json(v));
  }
  bool number_float(number_float_t v, const string_t&) override {
    if (mode_ != Mode::kNone) return fail("vocab entry '" + key_ + "' has no valid id");
    return value(json(v));
  }
  bool string(string_t& v) override {
    if (mode_ == Mode::kMerges) {
      if (depth_in_table_ == 1) {
        auto pair = split_merge(v, out_->bpe.merges.size());
        if (!pair.ok()) return fail(pair.status().message());
        out_->bpe.merges.push_back(std::move(pair).value());
        return true;
      }
      if (depth_in_table_ == 2 && merge_parts_.size() < 2) {
        merge_parts_.push_back(std::move(v));
        return true;
      }
      return fail(bad_merge());
    }
    if (mode_ == Mode::kVocab) return fail("vocab entry '" + key_ + "' has no valid id");
    return value(json(std::move(v)));
  }
  bool binary(binary_t&) override { return fail("unexpected binary value"); }

  bool start_object(std::size_t) override {
    if (mode_ != Mode::kNone) {
      if (mode_ == Mode::kVocab && depth_in_table_ > 0)
        return fail("vocab entry '" + key_ + "' has no valid id");
      if (mode_ == Mode::kMerges) return fail(bad_merge());
    }
    bool entering_vocab = at_model_field("vocab");
    if (!open(json::object())) return false;
    if (entering_vocab) enter(Mode::kVocab);
    return true;
  }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override {
    if (mode_ == Mode::kMerges && depth_in_table_ == 1) {
      merge_parts_.clear();
      ++depth_in_table_;
      return true;
    }
    if (mode_ != Mode::kNone)
      return fail(mode_ == Mode::kMerges ? bad_merge()
                                         : "vocab entry '" + key_ + "' has no valid id");
    bool entering_merges = at_model_field("merges");
    if (!open(json::array())) return false;
    if (entering_merges) enter(Mode::kMerges);
    return true;
  }
  bool end_array() override {
    if (mode_ == Mode::kMerges && depth_in_table_ == 2) {
      if (merge_parts_.size() != 2) return fail(bad_merge());
      out_->bpe.merges.emplace_back(std::move(merge_parts_[0]), std::move(merge_parts_[1]));
      --depth_in_table_;
      return true;
    }
    return close();
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& e) override {
    return fail("invalid JSON at byte " + std::to_string(position) + ": " + e.what());
  }

  const std::string& error() const { return error_; }

 private:
  enum class Mode { kNone, kVocab, kMerges };

  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }
  std::string bad_merge() const {
    return "merge " + std::to_string(out_->bpe.merges.size()) + " is neither \"a b\" nor [a, b]";
  }
  bool vocab_id(int64_t id) {
    if (id < 0 || id > INT32_MAX) return fail("vocab entry '" + key_ + "' has no valid id");
    out_->bpe.vocab.emplace_back(std::move(key_), id);
    return true;
  }
  // True when the container about to open is the value of key `field` of the top-level "model".
  bool at_model_field(const char* field) const {
    return stack_.size() == 2 && stack_[1] == &model_slot() && key_ == field;
  }
  const json& model_slot() const {
    static const json kNone;
    auto it = out_->root.find("model");
    return it == out_->root.end() ? kNone : *it;
  }
  void enter(Mode mode) {
    mode_ = mode;
    depth_in_table_ = 1;
  }
  // Inserts `v` into the current container; returns where it went.
  json* insert(json v) {
    if (stack_.empty()) {
      out_->root = std::move(v);
      return &out_->root;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }
  bool value(json v) {
    if (mode_ != Mode::kNone) {
      return fail(mode_ == Mode::kMerges ? bad_merge()
                                         : "vocab entry '" + key_ + "' has no valid id");
    }
    insert(std::move(v));
    return true;
  }
  bool open(json container) {
    stack_.push_back(insert(std::move(container)));
    return true;
  }
  bool close() {
    if (mode_ != Mode::kNone) {
      mode_ = Mode::kNone;
      depth_in_table_ = 0;
    }
    stack_.pop_back();
    return true;
  }

  TokenizerJson* out_;
  std::vector<json*> stack_;  // open containers, outermost first
  std::string key_;           // the last object key seen
  Mode mode_ = Mode::kNone;
  int depth_in_table_ = 0;  // 1 directly inside vocab/merges, 2 inside a merge pair
  std::vector<std::string> merge_parts_;
  std::string error_;
};

}  // namespace

StatusOr<TokenizerJson> parse_tokenizer_json(std::string_view text) {
  TokenizerJson out;
  TokenizerSax sax(&out);
  bool ok = json::sax_parse(text.begin(), text.end(), &sax);
  if (!ok) return invalid_argument(sax.error().empty() ? "invalid JSON" : sax.error());
  return out;
}

StatusOr<BpeTables> bpe_tables_from_json(const json& spec) {
  BpeTables tables;
  if (!spec.contains("vocab") || !spec["vocab"].is_object()) {
    return invalid_argument("BPE model needs an object 'vocab'");
  }
  if (!spec.contains("merges") || !spec["merges"].is_array()) {
    return invalid_argument("BPE model needs an array 'merges'");
  }
  for (auto it = spec["vocab"].begin(); it != spec["vocab"].end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      return invalid_argument("vocab entry '" + it.key() + "' has no valid id");
    }
    tables.vocab.emplace_back(it.key(), it.value().get<int64_t>());
  }
  for (const json& merge : spec["merges"]) {
    if (merge.is_string()) {
      ES_ASSIGN_OR_RETURN(auto pair, split_merge(merge.get<std::string>(), tables.merges.size()));
      tables.merges.push_back(std::move(pair));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      tables.merges.emplace_back(merge[0].get<std::string>(), merge[1].get<std::string>());
    } else {
      return invalid_argument("merge " + std::to_string(tables.merges.size()) +
                              " is neither \"a b\" nor [a, b]");
    }
  }
  return tables;
}

}  // namespace earnserve
