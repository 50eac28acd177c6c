#include "api/protocol/speculative_protocol.h"

#include <algorithm>
#include <filesystem>

#include "model/tokenizer/utf8.h"

namespace earnserve::api {

using nlohmann::json;

namespace {

constexpr const char* kKeys[] = {"draft_model", "num_draft_beams", "num_speculative_steps",
                                 "verification", "policy"};

}  // namespace

std::optional<ApiError> read_speculative_field(const json& body, const ProtocolContext& ctx,
                                               bool by_default, SamplingParams& sp) {
  auto field = body.find("speculative");
  const bool given = field != body.end() && !field->is_null();
  if (!given && !(by_default && ctx.speculative && sp.use_beam_search)) return std::nullopt;
  const json v = given ? *field : json(true);
  if (v.is_boolean() && !v.get<bool>()) return std::nullopt;
  if (!v.is_boolean() && !v.is_object()) {
    return bad_request("speculative must be an object or a boolean", "speculative");
  }
  if (!ctx.speculative) {
    return bad_request(
        "the server has no draft model for speculative decoding (start it with --draft-model DIR)",
        "speculative");
  }
  if (!sp.use_beam_search) {
    return bad_request("speculative decoding needs use_beam_search=true", "speculative");
  }
  SpeculativeParams p = *ctx.speculative;
  // The server's N is a default, raised to the beam width; a request's own N must cover it.
  p.num_draft_beams = std::max(p.num_draft_beams, sp.beam_width);
  if (v.is_object()) {
    for (const auto& item : v.items()) {
      const std::string& key = item.key();  // not a structured binding: clang 14 cannot capture one
      if (std::none_of(std::begin(kKeys), std::end(kKeys),
                       [&](const char* k) { return key == k; })) {
        if (!is_valid_utf8(key))
          return bad_request("speculative has an unknown field", "speculative");
        return bad_request("unknown field speculative." + key +
                               " (expected draft_model, num_draft_beams, num_speculative_steps, "
                               "verification or policy)",
                           "speculative." + key);
      }
    }
    if (auto d = v.find("draft_model"); d != v.end() && !d->is_null()) {
      if (!d->is_string()) {
        return bad_request("speculative.draft_model must be a string", "speculative.draft_model");
      }
      const std::string name = d->get<std::string>();
      if (!names_draft_model(name, ctx.speculative->draft_model)) {
        if (!is_valid_utf8(name)) {
          return bad_request("speculative.draft_model is not valid UTF-8",
                             "speculative.draft_model");
        }
        return bad_request("the draft model '" + name +
                               "' is not loaded; this server drafts with '" +
                               ctx.speculative->draft_model + "'",
                           "speculative.draft_model");
      }
    }
    const FieldReader f(v, "speculative.");
    const bool own_beams = f.present("num_draft_beams");
    ES_API_RETURN_IF(f.read_int("num_draft_beams", 1, kMaxBeamWidth, p.num_draft_beams));
    if (own_beams && p.num_draft_beams < sp.beam_width) {
      return bad_request("speculative.num_draft_beams must be at least the beam width (" +
                             std::to_string(sp.beam_width) + "), got " +
                             std::to_string(p.num_draft_beams),
                         "speculative.num_draft_beams");
    }
    ES_API_RETURN_IF(
        f.read_int("num_speculative_steps", 1, kMaxSpeculativeSteps, p.num_speculative_steps));
    if (auto m = v.find("verification"); m != v.end() && !m->is_null()) {
      if (*m != "strict" && *m != "relaxed") {
        return bad_request("speculative.verification must be 'strict' or 'relaxed'",
                           "speculative.verification");
      }
      p.verification = *m == "strict" ? SpeculativeParams::Verification::kStrict
                                      : SpeculativeParams::Verification::kRelaxed;
    }
    if (auto m = v.find("policy"); m != v.end() && !m->is_null()) {
      if (*m != "auto" && *m != "always") {
        return bad_request("speculative.policy must be 'auto' or 'always'", "speculative.policy");
      }
      p.policy =
          *m == "auto" ? SpeculativeParams::Policy::kAuto : SpeculativeParams::Policy::kAlways;
    }
  }
  sp.speculative = std::move(p);
  return std::nullopt;
}

json speculative_json(const SpeculativeStats& stats) {
  int64_t accepted = 0;
  for (int a : stats.accepted_steps) accepted += a;
  json trees = json::array();
  for (const std::array<int, 2>& t : stats.trees) trees.push_back({t[0], t[1]});
  return {{"rounds", stats.num_rounds},
          {"accepted_steps", accepted},
          {"accepted_steps_per_round", stats.accepted_steps},
          {"target_calls", stats.num_target_calls},
          {"draft_calls", stats.num_draft_calls},
          {"plain_steps", stats.num_plain_steps_cost + stats.num_plain_steps_no_room},
          {"plain_steps_by_reason",
           {{"cost", stats.num_plain_steps_cost}, {"no_room", stats.num_plain_steps_no_room}}},
          {"trees", std::move(trees)}};
}

std::optional<SpeculativeStats> sum_speculative_stats(const std::vector<RequestOutput>& outputs) {
  std::optional<SpeculativeStats> sum;
  for (const RequestOutput& o : outputs) {
    if (!o.speculative) continue;
    if (!sum) sum.emplace();
    sum->num_rounds += o.speculative->num_rounds;
    sum->accepted_steps.insert(sum->accepted_steps.end(), o.speculative->accepted_steps.begin(),
                               o.speculative->accepted_steps.end());
    sum->num_target_calls += o.speculative->num_target_calls;
    sum->num_draft_calls += o.speculative->num_draft_calls;
    sum->num_plain_steps_cost += o.speculative->num_plain_steps_cost;
    sum->num_plain_steps_no_room += o.speculative->num_plain_steps_no_room;
    sum->trees.insert(sum->trees.end(), o.speculative->trees.begin(), o.speculative->trees.end());
  }
  return sum;
}

bool names_draft_model(const std::string& name, const std::string& dir) {
  if (name == dir) return true;
  std::filesystem::path path(dir);
  if (!path.has_filename()) path = path.parent_path();
  return name == path.filename().string();
}

}  // namespace earnserve::api
