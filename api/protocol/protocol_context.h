// Builds the ProtocolContext (what request parsing must know about the served model: name,
// limits, tokenizer, catalogue, chat template) from a running engine and its model directory.
// Shared by `earnserve serve` and `earnserve batch`.
#pragma once

#include <string>

#include "api/protocol/openai_protocol.h"
#include "scheduler/engine.h"

namespace earnserve::api {

// The served name defaults to the model directory's last component.
StatusOr<ProtocolContext> make_protocol_context(const Engine& engine, const std::string& model_dir,
                                                const std::string& served_model_name = "");

}  // namespace earnserve::api
