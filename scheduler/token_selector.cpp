#include "scheduler/token_selector.h"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "core/logging.h"
#include "scheduler/sampler.h"

namespace earnserve {

TokenSelector::TokenSelector(Scheduler& scheduler, OutputProcessor& output,
                             SpeculativeRounds* speculative, std::vector<int32_t> eos_token_ids,
                             int max_model_len, int64_t vocab_size, bool skip_forced_tokens)
    : scheduler_(scheduler),
      output_(output),
      speculative_(speculative),
      eos_token_ids_(std::move(eos_token_ids)),
      max_model_len_(max_model_len),
      vocab_size_(vocab_size),
      skip_forced_tokens_(skip_forced_tokens) {}

std::vector<int32_t> TokenSelector::logits_tokens(const SchedulerStep& step) const {
  std::vector<int32_t> tokens, allowed;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    const ScheduledSeq& s = step.seqs[i];
    if (!s.needs_logits) continue;
    const SequenceGroup& group = *s.group;
    if (group.request.score_over != ScoreOver::kCatalogue || !group.constraint ||
        !step.tree_tokens(i).empty()) {
      return {};
    }
    group.constraint->allowed_tokens(s.seq->trie_node, allowed);
    tokens.insert(tokens.end(), allowed.begin(), allowed.end());
  }
  std::sort(tokens.begin(), tokens.end());
  tokens.erase(std::unique(tokens.begin(), tokens.end()), tokens.end());
  return tokens;
}

void TokenSelector::process(const SchedulerStep& step, const Tensor& logits,
                            std::span<const int32_t> logits_tokens) {
  const int64_t vocab =
      logits_tokens.empty() ? vocab_size_ : static_cast<int64_t>(logits_tokens.size());
  float* base = logits.numel() ? logits.data<float>() : nullptr;
  // Rows in step order; group a request's rows together.
  std::vector<SequenceGroup*> groups;
  std::unordered_map<SequenceGroup*, std::vector<std::pair<Sequence*, std::span<float>>>> rows;
  int row = 0;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    const ScheduledSeq& s = step.seqs[i];
    if (!s.needs_logits) continue;
    // A drafted tree's rows follow its chunk's row.
    const int num_rows = 1 + static_cast<int>(step.tree_tokens(i).size());
    std::span<float> r(base + static_cast<int64_t>(row) * vocab, vocab * num_rows);
    row += num_rows;
    if (!rows.count(s.group)) groups.push_back(s.group);
    rows[s.group].emplace_back(s.seq, r);
  }
  finished_this_step_.clear();
  for (SequenceGroup* group : groups) {
    auto& group_rows = rows[group];
    if (!group->metrics.first_token) group->metrics.first_token = Clock::now();
    if (!group->is_beam()) {
      ES_CHECK(logits_tokens.empty()) << "a sampling request got a subset of the vocabulary";
      process_sampling(*group, group_rows);
      continue;
    }
    if (group->spec && group->beam && !speculative_->steps_plainly(*group)) {
      // A speculative search verifies when SpeculativeRounds::prepare() gave it a round: every
      // live beam ran to its end this step (the scheduler runs a beam search's beams together).
      if (!speculative_->has_round(*group)) continue;
      std::vector<std::span<float>> spans;
      for (auto& [seq, r] : group_rows) spans.push_back(r);
      const SpeculativeRounds::Outcome outcome = speculative_->verify(*group, spans);
      num_generation_tokens_ += outcome.num_generated;
      if (outcome.done) finished_this_step_.push_back(group);
    } else {
      process_beams(*group, group_rows, logits_tokens);
    }
  }
  for (SequenceGroup* g : finished_this_step_) finish_group(*g);
}

void TokenSelector::fan_out(SequenceGroup& group) {
  group.fanned_out = true;
  const int n = group.request.params.n;
  Sequence& first = *group.seqs[0];
  uint64_t base_seed = group.request.params.seed ? *group.request.params.seed : first.seed;
  for (int i = 1; i < n; ++i) {
    auto child = std::make_unique<Sequence>();
    child->index = i;
    child->tokens = first.tokens;
    child->kept = first.kept;
    child->num_prompt_tokens = first.num_prompt_tokens;
    child->seed = mix_seed(base_seed, static_cast<uint64_t>(i));
    scheduler_.fork(first, *child);
    group.seqs.push_back(std::move(child));
  }
}

void TokenSelector::process_sampling(SequenceGroup& group,
                                     std::vector<std::pair<Sequence*, std::span<float>>>& rows) {
  if (!group.fanned_out) fan_out(group);
  for (auto& [seq, r] : rows) {
    if (group.seqs.size() > 1 && seq == group.seqs[0].get() && seq->num_generated() == 0) {
      // The prompt's row feeds every fanned-out sequence (each samples with its own seed).
      std::vector<float> copy(r.begin(), r.end());
      for (auto& other : group.seqs) {
        std::vector<float> row_copy = copy;
        sample(group, *other, row_copy);
      }
    } else {
      sample(group, *seq, r);
    }
  }
  // Move finished sequences out and free their pages.
  for (auto it = group.seqs.begin(); it != group.seqs.end();) {
    if ((*it)->finished()) {
      scheduler_.free_seq(**it);
      group.done_seqs.push_back(std::move(*it));
      it = group.seqs.erase(it);
    } else {
      ++it;
    }
  }
  if (group.seqs.empty()) {
    finished_this_step_.push_back(&group);
  } else if (group.request.stream) {
    output_.emit(group, false);
  }
}

void TokenSelector::sample(SequenceGroup& group, Sequence& seq, std::span<float> row) {
  const SamplingParams& p = group.request.params;
  std::vector<int32_t> allowed;
  SamplingContext ctx;
  ctx.prompt_tokens = std::span<const int32_t>(seq.tokens.data(), seq.num_prompt_tokens);
  ctx.output_tokens =
      std::span<const int32_t>(seq.tokens.data() + seq.num_prompt_tokens, seq.num_generated());
  ctx.seed = seq.seed;
  std::vector<int32_t> banned;
  if (seq.num_generated() < p.min_tokens) {
    banned = p.stop_token_ids;
    if (!p.ignore_eos) banned.insert(banned.end(), eos_token_ids_.begin(), eos_token_ids_.end());
    ctx.banned_tokens = banned;
  }
  if (group.constraint) {
    group.constraint->allowed_tokens(seq.trie_node, allowed);
    ctx.allowed_tokens = allowed;
    ctx.constrained = true;
  }
  SampledToken t = sample_token(row, p, ctx);
  seq.append(t.token);
  seq.cumulative_logprob += t.logprob;
  if (p.logprobs >= 0) seq.logprobs.push_back({t.token, t.logprob, std::move(t.top_logprobs)});
  ++num_generation_tokens_;
  output_.process_token(group, seq);
}

void TokenSelector::score_over_catalogue(const SequenceGroup& group, const Sequence& seq,
                                         std::span<float> row,
                                         std::span<const int32_t> logits_tokens,
                                         std::vector<int32_t>& allowed,
                                         std::vector<float>& logprobs, BeamStepInput& input) const {
  group.constraint->allowed_tokens(seq.trie_node, allowed);
  logprobs.assign(allowed.size(), 0.0f);
  input.logprobs = row;
  input.allowed_tokens = allowed;
  input.allowed_logprobs = logprobs;
  input.constrained = true;
  // A single allowed token has log-probability 0 among the catalogue's tokens, row or not (a
  // beam forced to its end has none).
  if (allowed.size() <= 1) return;
  ES_CHECK(!row.empty()) << "a beam with " << allowed.size() << " allowed tokens has no logits";
  // Both lists ascend: one walk finds each allowed token's column.
  size_t column = 0;
  for (size_t i = 0; i < allowed.size(); ++i) {
    const int32_t t = allowed[i];
    if (logits_tokens.empty()) {
      column = static_cast<size_t>(t);
    } else {
      while (column < logits_tokens.size() && logits_tokens[column] < t) ++column;
      ES_CHECK(column < logits_tokens.size() && logits_tokens[column] == t)
          << "allowed token " << t << " has no logit column";
    }
    logprobs[i] = row[column];
  }
  const float lse = log_sum_exp(logprobs);
  for (float& v : logprobs) v -= lse;
}

void TokenSelector::process_beams(SequenceGroup& group,
                                  std::vector<std::pair<Sequence*, std::span<float>>>& rows,
                                  std::span<const int32_t> logits_tokens) {
  const SamplingParams& p = group.request.params;
  if (!group.beam) {
    BeamSearchOptions o;
    o.width = p.beam_width;
    o.length_penalty = p.length_penalty;
    o.early_stopping = p.early_stopping;
    o.max_tokens = std::min(p.max_tokens, max_model_len_ - group.seqs[0]->num_prompt_tokens);
    if (!p.ignore_eos) o.stop_tokens = eos_token_ids_;
    o.stop_tokens.insert(o.stop_tokens.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
    group.beam = std::make_unique<BeamSearch>(o);
    group.fanned_out = true;
  }
  if (p.speculative && p.speculative->verification == SpeculativeParams::Verification::kRelaxed) {
    // Relaxed speculative searches sample every step, also those without a drafted tree.
    ES_CHECK_EQ(rows.size(), group.seqs.size());
    std::vector<std::span<float>> spans;
    for (auto& [seq, r] : rows) spans.push_back(r);
    const SpeculativeRounds::Outcome outcome = speculative_->sample_relaxed(group, spans);
    num_generation_tokens_ += outcome.num_generated;
    if (outcome.done) finished_this_step_.push_back(&group);
    return;
  }
  const size_t num_beams = group.seqs.size();
  // Each live beam's row, in the group's order; none for a beam forced to its end.
  std::vector<std::span<float>> row_of(num_beams);
  size_t next_row = 0;
  for (size_t b = 0; b < num_beams; ++b) {
    if (group.seqs[b]->forced_to_end) continue;
    ES_CHECK(next_row < rows.size() && rows[next_row].first == group.seqs[b].get())
        << "live beam " << b << " has no row";
    row_of[b] = rows[next_row++].second;
  }
  ES_CHECK_EQ(next_row, rows.size());
  const bool over_catalogue = scores_over_catalogue(group);
  ES_CHECK(over_catalogue || logits_tokens.empty())
      << "a vocabulary-scored beam search got a subset of the vocabulary";
  std::vector<std::vector<int32_t>> allowed(num_beams);
  std::vector<std::vector<float>> allowed_logprobs(num_beams);
  std::vector<BeamStepInput> inputs(num_beams);
  for (size_t b = 0; b < num_beams; ++b) {
    if (over_catalogue) {
      score_over_catalogue(group, *group.seqs[b], row_of[b], logits_tokens, allowed[b],
                           allowed_logprobs[b], inputs[b]);
      continue;
    }
    // Otherwise normalise each row to log-probabilities (the constraint is applied on top, as
    // transformers' prefix_allowed_tokens_fn does).
    std::span<float> r = row_of[b];
    float lse = log_sum_exp(r);
    for (float& v : r) v -= lse;
    inputs[b].logprobs = r;
    if (group.constraint) {
      group.constraint->allowed_tokens(group.seqs[b]->trie_node, allowed[b]);
      inputs[b].allowed_tokens = allowed[b];
      inputs[b].constrained = true;
    }
  }
  step_beams(group, inputs);
  // Once every live beam is forced to its end, the search runs to its end here, no forward more.
  auto all_forced = [&group] {
    return std::all_of(group.seqs.begin(), group.seqs.end(),
                       [](const auto& seq) { return seq->forced_to_end; });
  };
  while (!group.beam->done() && all_forced()) {
    const size_t n = group.seqs.size();
    allowed.assign(n, {});
    allowed_logprobs.assign(n, {});
    inputs.assign(n, {});
    for (size_t b = 0; b < n; ++b) {
      score_over_catalogue(group, *group.seqs[b], {}, {}, allowed[b], allowed_logprobs[b],
                           inputs[b]);
    }
    step_beams(group, inputs);
  }
  if (group.beam->done()) finished_this_step_.push_back(&group);
}

bool TokenSelector::scores_over_catalogue(const SequenceGroup& group) const {
  return group.request.score_over == ScoreOver::kCatalogue && group.constraint != nullptr;
}

void TokenSelector::step_beams(SequenceGroup& group, std::span<const BeamStepInput> inputs) {
  for (const auto& seq : group.seqs) num_forced_tokens_ += seq->forced_to_end ? 1 : 0;
  std::vector<BeamChoice> choices = group.beam->step(inputs);
  num_generation_tokens_ += static_cast<int64_t>(choices.size());

  std::vector<int> parents;
  for (const BeamChoice& c : choices) parents.push_back(c.parent);
  std::vector<std::unique_ptr<Sequence>> next =
      scheduler_.regroup_beams(std::move(group.seqs), parents);
  const bool mark_forced = skip_forced_tokens_ && scores_over_catalogue(group);
  for (size_t i = 0; i < choices.size(); ++i) {
    Sequence& s = *next[i];
    s.index = static_cast<int>(i);
    s.append(choices[i].token);
    s.cumulative_logprob = choices[i].score;
    if (group.constraint) s.trie_node = group.constraint->advance(s.trie_node, choices[i].token);
    s.forced_to_end = mark_forced && group.constraint->forced_to_end(s.trie_node);
  }
  group.seqs = std::move(next);
}

void TokenSelector::finish_group(SequenceGroup& group) {
  group.metrics.finished = Clock::now();
  group.status = GroupStatus::kFinished;
  if (speculative_) speculative_->release(group);
  // A beam search's live beams make way for its best finished hypotheses.
  for (auto& seq : group.seqs) scheduler_.free_seq(*seq);
  group.seqs.clear();
  output_.finish_group(group);
  scheduler_.remove_finished(&group);
}

}  // namespace earnserve
