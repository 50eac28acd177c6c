#include "model/tokenizer/post_processor.h"

#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "model/tokenizer/component_spec.h"

namespace earnserve {
namespace {

using nlohmann::json;

// Ids before and after the sequence; covers TemplateProcessing's "single" template as well as
// the fixed Roberta/Bert layouts.
class WrapPostProcessor : public PostProcessor {
 public:
  WrapPostProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void add_special_tokens(std::vector<int32_t>* ids) const override {
    ids->insert(ids->begin(), before_.begin(), before_.end());
    ids->insert(ids->end(), after_.begin(), after_.end());
  }

 private:
  const std::vector<int32_t> before_;
  const std::vector<int32_t> after_;
};

class NoOpPostProcessor : public PostProcessor {
 public:
  void add_special_tokens(std::vector<int32_t>*) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void add_special_tokens(std::vector<int32_t>* ids) const override {
    for (const auto& part : parts_) part->add_special_tokens(ids);
  }

 private:
  const std::vector<std::unique_ptr<PostProcessor>> parts_;
};

template <typename T, typename... Args>
std::unique_ptr<PostProcessor> make(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

StatusOr<std::unique_ptr<PostProcessor>> make_template(const json& spec) {
  if (!spec.contains("single") || !spec["single"].is_array()) {
    return invalid_argument("TemplateProcessing needs an array 'single'");
  }
  const json special = spec.value("special_tokens", json::object());
  std::vector<int32_t> before;
  std::vector<int32_t> after;
  bool seen_sequence = false;
  for (const json& item : spec["single"]) {
    if (item.contains("Sequence")) {
      if (seen_sequence) return invalid_argument("TemplateProcessing 'single' has two sequences");
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id") ||
        !item["SpecialToken"]["id"].is_string()) {
      return invalid_argument("TemplateProcessing item is neither Sequence nor SpecialToken: " +
                              item.dump());
    }
    const std::string name = item["SpecialToken"]["id"].get<std::string>();
    if (!special.contains(name) || !special[name].contains("ids") ||
        !special[name]["ids"].is_array()) {
      return invalid_argument("TemplateProcessing special token '" + name + "' has no ids");
    }
    for (const json& id : special[name]["ids"]) {
      if (!id.is_number_integer()) {
        return invalid_argument("TemplateProcessing special token '" + name + "' has a bad id");
      }
      (seen_sequence ? after : before).push_back(id.get<int32_t>());
    }
  }
  if (!seen_sequence) return invalid_argument("TemplateProcessing 'single' has no Sequence");
  return make<WrapPostProcessor>(std::move(before), std::move(after));
}

// "cls"/"sep" of Roberta and Bert processing: ["<s>", 0].
StatusOr<int32_t> pair_id(const json& spec, const char* key) {
  if (!spec.contains(key) || !spec[key].is_array() || spec[key].size() != 2 ||
      !spec[key][1].is_number_integer()) {
    return invalid_argument(std::string("post_processor needs '") + key + "' as [token, id]");
  }
  return spec[key][1].get<int32_t>();
}

}  // namespace

StatusOr<std::unique_ptr<PostProcessor>> make_post_processor(const json& spec) {
  if (spec.is_null()) return std::unique_ptr<PostProcessor>();
  ES_ASSIGN_OR_RETURN(const std::string type, component_type(spec, "post_processor"));
  if (type == "TemplateProcessing") return make_template(spec);
  // ByteLevel only trims offsets, which this tokenizer does not report.
  if (type == "ByteLevel") return make<NoOpPostProcessor>();
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    ES_ASSIGN_OR_RETURN(int32_t cls, pair_id(spec, "cls"));
    ES_ASSIGN_OR_RETURN(int32_t sep, pair_id(spec, "sep"));
    return make<WrapPostProcessor>(std::vector<int32_t>{cls}, std::vector<int32_t>{sep});
  }
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(auto parts, sequence_parts<PostProcessor>(
                                        spec, "processors", "post_processor", make_post_processor));
    return make<SequencePostProcessor>(std::move(parts));
  }
  return unimplemented("unsupported post_processor type '" + type + "'");
}

}  // namespace earnserve
