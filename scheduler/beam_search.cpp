#include "scheduler/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/logging.h"

namespace earnserve {
namespace {

struct Candidate {
  int parent;
  int32_t token;
  float score;
};

// Best first; ties by parent then token, so the order never depends on evaluation order.
bool better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.parent != b.parent) return a.parent < b.parent;
  return a.token < b.token;
}

}  // namespace

BeamSearch::BeamSearch(BeamSearchOptions options) : options_(std::move(options)) {
  ES_CHECK_GE(options_.width, 1);
  ES_CHECK_GE(options_.max_tokens, 1);
  live_tokens_.emplace_back();
  live_scores_.push_back(0.0f);
}

bool BeamSearch::is_stop(int32_t token) const {
  return std::find(options_.stop_tokens.begin(), options_.stop_tokens.end(), token) !=
         options_.stop_tokens.end();
}

std::vector<BeamChoice> BeamSearch::step(std::span<const BeamStepInput> inputs) {
  ES_CHECK(!done_);
  ES_CHECK_EQ(inputs.size(), live_tokens_.size());
  const int width = options_.width;
  const size_t keep = static_cast<size_t>(std::max<size_t>(2, 1 + options_.stop_tokens.size()) *
                                          static_cast<size_t>(width));

  // Each beam contributes at most `keep` candidates; the global best `keep` are taken from those.
  std::vector<Candidate> candidates;
  std::vector<Candidate> beam_candidates;
  for (size_t b = 0; b < inputs.size(); ++b) {
    const BeamStepInput& in = inputs[b];
    beam_candidates.clear();
    const float base = live_scores_[b];
    auto consider_logprob = [&](int32_t token, float lp) {
      if (lp == -std::numeric_limits<float>::infinity()) return;
      beam_candidates.push_back({static_cast<int>(b), token, base + lp});
    };
    auto consider = [&](int32_t token) { consider_logprob(token, in.logprobs[token]); };
    if (in.constrained && !in.allowed_logprobs.empty()) {
      ES_CHECK_EQ(in.allowed_logprobs.size(), in.allowed_tokens.size());
      for (size_t i = 0; i < in.allowed_tokens.size(); ++i) {
        consider_logprob(in.allowed_tokens[i], in.allowed_logprobs[i]);
      }
    } else if (in.constrained) {
      for (int32_t t : in.allowed_tokens) consider(t);
    } else {
      for (int32_t t = 0; t < static_cast<int32_t>(in.logprobs.size()); ++t) consider(t);
    }
    if (beam_candidates.size() > keep) {
      std::partial_sort(beam_candidates.begin(), beam_candidates.begin() + keep,
                        beam_candidates.end(), better);
      beam_candidates.resize(keep);
    }
    candidates.insert(candidates.end(), beam_candidates.begin(), beam_candidates.end());
  }
  size_t top = std::min(keep, candidates.size());
  std::partial_sort(candidates.begin(), candidates.begin() + top, candidates.end(), better);
  candidates.resize(top);

  ++num_generated_;
  const bool at_max = num_generated_ >= options_.max_tokens;
  const float length_norm =
      static_cast<float>(std::pow(static_cast<double>(num_generated_), options_.length_penalty));

  // The first `width` candidates that stop become hypotheses (as transformers' top_num_beam_mask).
  const bool full_and_early =
      options_.early_stopping && static_cast<int>(finished_.size()) >= width;
  if (!full_and_early) {
    for (size_t i = 0; i < candidates.size() && i < static_cast<size_t>(width); ++i) {
      const Candidate& c = candidates[i];
      if (!(at_max || is_stop(c.token))) continue;
      BeamHypothesis h;
      h.tokens = live_tokens_[c.parent];
      h.tokens.push_back(c.token);
      h.cumulative_logprob = c.score;
      h.score = c.score / length_norm;
      finished_.push_back(std::move(h));
    }
    std::stable_sort(
        finished_.begin(), finished_.end(),
        [](const BeamHypothesis& a, const BeamHypothesis& b) { return a.score > b.score; });
    if (static_cast<int>(finished_.size()) > width) finished_.resize(width);
  }

  // The best `width` candidates that do not stop continue.
  std::vector<BeamChoice> next;
  if (!at_max) {
    for (const Candidate& c : candidates) {
      if (static_cast<int>(next.size()) >= width) break;
      if (is_stop(c.token)) continue;
      next.push_back({c.parent, c.token, c.score});
    }
  }

  // Stopping: no live beam, early stopping with a full set, or (transformers' heuristic) the best
  // live beam cannot beat the worst of a full set of hypotheses.
  bool stop = next.empty();
  if (!stop && static_cast<int>(finished_.size()) >= width) {
    if (options_.early_stopping) {
      stop = true;
    } else {
      float best_possible = next.front().score / length_norm;
      stop = !(best_possible > finished_.back().score);
    }
  }

  std::vector<std::vector<int32_t>> tokens;
  std::vector<float> scores;
  if (!stop) {
    for (const BeamChoice& c : next) {
      tokens.push_back(live_tokens_[c.parent]);
      tokens.back().push_back(c.token);
      scores.push_back(c.score);
    }
  } else {
    next.clear();
  }
  live_tokens_ = std::move(tokens);
  live_scores_ = std::move(scores);
  done_ = stop;
  return next;
}

std::vector<BeamChoice> BeamSearch::apply(std::span<const BeamChoice> chosen) {
  ES_CHECK(!done_);
  ++num_generated_;
  const bool at_max = num_generated_ >= options_.max_tokens;
  const float length_norm =
      static_cast<float>(std::pow(static_cast<double>(num_generated_), options_.length_penalty));
  std::vector<BeamChoice> next;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<float> scores;
  for (const BeamChoice& c : chosen) {
    ES_CHECK(c.parent >= 0 && c.parent < num_live());
    std::vector<int32_t> t = live_tokens_[c.parent];
    t.push_back(c.token);
    if (at_max || is_stop(c.token)) {
      BeamHypothesis h;
      h.tokens = std::move(t);
      h.cumulative_logprob = c.score;
      h.score = c.score / length_norm;
      finished_.push_back(std::move(h));
      continue;
    }
    next.push_back(c);
    tokens.push_back(std::move(t));
    scores.push_back(c.score);
  }
  std::stable_sort(
      finished_.begin(), finished_.end(),
      [](const BeamHypothesis& a, const BeamHypothesis& b) { return a.score > b.score; });
  if (static_cast<int>(finished_.size()) > options_.width) finished_.resize(options_.width);
  done_ = next.empty() || static_cast<int>(finished_.size()) >= options_.width;
  if (done_) {
    next.clear();
    tokens.clear();
    scores.clear();
  }
  live_tokens_ = std::move(tokens);
  live_scores_ = std::move(scores);
  return next;
}

}  // namespace earnserve
