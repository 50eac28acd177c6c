// ProtocolContext: what request parsing must know about the served model (name, context length,
// vocabulary size, tokenizer, catalogue, chat template, the draft model's defaults), and
// make_protocol_context(), which builds it from a running engine and its model directory for
// `earnserve serve` and `earnserve batch`.
//
// Parsing needs no engine: the fuzzer and the unit tests fill a ProtocolContext by hand with a
// real tokenizer and plain limits. The context borrows the tokenizer; it is immutable once built
// and safe to read from many threads.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/status.h"
#include "scheduler/sampling_params.h"

namespace earnserve {
class ChatTemplate;
class Engine;
class RecommendationSpec;
class Tokenizer;
}  // namespace earnserve

namespace earnserve::api {

// What parsing must know about the served model. Pointees are borrowed and outlive the parse.
struct ProtocolContext {
  std::string served_model_name;
  const Tokenizer* tokenizer = nullptr;  // required
  int max_model_len = 0;
  int vocab_size = 0;  // the model's; token ids must lie in [0, vocab_size)
  // The model's recommendation spec and catalogue; null when the model has none.
  std::shared_ptr<const RecommendationSpec> recommendation;
  std::shared_ptr<const ChatTemplate> chat_template;  // null: the model has none
  nlohmann::ordered_json chat_template_context;       // bos_token, eos_token, ... for the template
  // The loaded draft model of speculative beam search (draft_model = its directory) and the
  // server's defaults for N, gamma and verification; absent when the server has no draft.
  // Recommendations speculate by default; completions when their body has "speculative".
  std::optional<SpeculativeParams> speculative;
};

// The context of `engine` serving `model_dir`. The served name defaults to the model directory's
// last component. The context borrows the engine's tokenizer: the engine must outlive it.
StatusOr<ProtocolContext> make_protocol_context(const Engine& engine, const std::string& model_dir,
                                                const std::string& served_model_name = "");

}  // namespace earnserve::api
