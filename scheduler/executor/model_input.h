// Turns a scheduled step into the model's ForwardBatch: the step's tokens flattened in schedule
// order, their positions, and for each KV group the slot mapping, block tables, KV lengths and
// query offsets read from the block manager; and wrap_prompt(), the tokens a model sees for a
// prompt. Stateless; runs on the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cache/block_manager.h"
#include "model/config.h"
#include "model/forward_batch.h"
#include "scheduler/scheduler.h"

namespace earnserve {

struct ModelInput {
  ForwardBatch batch;
  int num_logits = 0;
};

// `logits_tokens` (ascending; empty = the whole vocabulary): the tokens whose logits the step
// computes (ForwardBatch::logits_token_ids).
// REQUIRES: every scheduled sequence holds slots for its tokens (Scheduler::schedule did that).
ModelInput build_model_input(const SchedulerStep& step, const BlockManager& block_manager,
                             int num_layers, Device device,
                             std::span<const int32_t> logits_tokens = {});

// The tokens `config`'s model sees for a prompt and their kept flags: the prompt itself, every
// token kept; for EARN models [BOS] [prefix registers] prompt [suffix registers] with only the
// registers kept (the upper layers hold KV for registers and generated tokens only).
void wrap_prompt(const ModelConfig& config, std::span<const int32_t> prompt,
                 std::vector<int32_t>& tokens, std::vector<uint8_t>& kept);

}  // namespace earnserve
