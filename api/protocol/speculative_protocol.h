// The wire side of speculative beam search (earnserve extension to the OpenAI protocol): the
// request field `"speculative"` of /v1/completions (beam search) and /v1/recommendations, and the
// request's stats reported in `usage.speculative`.
//
// Request field: absent or null = the server's default (recommendations speculate whenever the
// server has a draft model; completions do not), false = off, true = the server's parameters
// (--num-draft-beams, --num-speculative-steps), or an object
//   {"draft_model": name, "num_draft_beams": N, "num_speculative_steps": G,
//    "verification": "strict", "policy": "auto"}
// overriding them ("policy": "always" forces a tree of N x G every round; "auto", the server's
// default unless --speculative-policy always, drafts only when the cost model predicts it pays).
// Every bad value is a 400 whose param names the field ("speculative.<key>"); so is a request for
// speculation when the server has no draft or names another draft. "relaxed" verification samples
// (the request's `seed` makes it reproducible for a given batch). Free functions over plain data;
// thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "api/protocol/fields.h"
#include "api/protocol/protocol_context.h"
#include "scheduler/request.h"
#include "scheduler/sampling_params.h"

namespace earnserve::api {

// Reads body["speculative"] into sp.speculative. `by_default`: speculate when the field is absent
// and ctx has a draft. REQUIRES: sp.use_beam_search and sp.beam_width are final.
std::optional<ApiError> read_speculative_field(const nlohmann::json& body,
                                               const ProtocolContext& ctx, bool by_default,
                                               SamplingParams& sp);

// {"rounds", "accepted_steps" (total), "accepted_steps_per_round", "target_calls",
// "draft_calls", "plain_steps" (policy auto: steps without a tree), "plain_steps_by_reason"
// ({"cost", "no_room"}), "trees" (per round: [N, levels drafted])}.
nlohmann::json speculative_json(const SpeculativeStats& stats);

// The stats of the speculative outputs among `outputs` added up (rounds and calls summed, the
// per-round lists concatenated); nullopt when none speculated.
std::optional<SpeculativeStats> sum_speculative_stats(const std::vector<RequestOutput>& outputs);

// Whether `name` names the draft model in `dir`: the directory as given or its last component
// (the rule of BeamDrafter::matches).
bool names_draft_model(const std::string& name, const std::string& dir);

}  // namespace earnserve::api
