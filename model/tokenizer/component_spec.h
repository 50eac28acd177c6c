// What the four tokenizer.json component factories (make_normalizer, make_pre_tokenizer,
// make_token_decoder, make_post_processor) read alike: the component's "type" and the parts of a
// "Sequence" component. Header-only, stateless; thread-safe.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"

namespace earnserve {

// The string "type" of a component spec; `what` names the component in the error
// ("normalizer"). REQUIRES: spec is not null (a null spec means "no component").
inline StatusOr<std::string> component_type(const nlohmann::json& spec, const std::string& what) {
  if (!spec.is_object() || !spec.contains("type") || !spec["type"].is_string()) {
    return invalid_argument(what + " must be an object with a string 'type'");
  }
  return spec["type"].get<std::string>();
}

// The parts of a "Sequence" component: spec[key] must be an array, each element made by
// make_part (a factory above, returning StatusOr<std::unique_ptr<Part>>); null parts (no-op
// components) are dropped. `what` names the component in the error ("normalizer").
template <typename Part, typename MakePart>
StatusOr<std::vector<std::unique_ptr<Part>>> sequence_parts(const nlohmann::json& spec,
                                                            const char* key,
                                                            const std::string& what,
                                                            MakePart&& make_part) {
  if (!spec.contains(key) || !spec[key].is_array()) {
    return invalid_argument(what + " Sequence needs an array '" + key + "'");
  }
  std::vector<std::unique_ptr<Part>> parts;
  for (const nlohmann::json& element : spec[key]) {
    ES_ASSIGN_OR_RETURN(std::unique_ptr<Part> part, make_part(element));
    if (part != nullptr) parts.push_back(std::move(part));
  }
  return parts;
}

}  // namespace earnserve
