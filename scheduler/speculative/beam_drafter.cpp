#include "scheduler/speculative/beam_drafter.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "core/logging.h"
#include "scheduler/executor/model_input.h"
#include "scheduler/sampler.h"
#include "scheduler/scheduler.h"

namespace earnserve {
namespace {

struct Candidate {
  int parent = 0;  // index in the frontier
  int32_t token = 0;
  float score = 0.0f;
  int draws = 0;  // sampling mode
};

bool better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.parent != b.parent) return a.parent < b.parent;
  return a.token < b.token;
}

void keep_best(std::vector<Candidate>& c, size_t n) {
  if (c.size() > n) {
    std::nth_element(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(n), c.end(), better);
    c.resize(n);
  }
}

// Sampling mode: draws n candidates i.i.d. from q(c) proportional to exp(score(c)) by inverse CDF
// with counter_uniform(seed, counter++), counts them in Candidate::draws, and keeps only the
// candidates drawn at least once.
void sample_candidates(std::vector<Candidate>& c, int n, uint64_t seed, uint64_t& counter) {
  if (c.empty()) return;
  float max_score = -std::numeric_limits<float>::infinity();
  for (const Candidate& x : c) max_score = std::max(max_score, x.score);
  std::vector<double> cdf(c.size());
  double total = 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    total += std::exp(static_cast<double>(c[i].score) - max_score);
    cdf[i] = total;
  }
  for (int d = 0; d < n; ++d) {
    const double u = counter_uniform(seed, counter++) * total;
    size_t i = static_cast<size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    ++c[std::min(i, c.size() - 1)].draws;
  }
  std::erase_if(c, [](const Candidate& x) { return x.draws == 0; });
}

// One draft beam at the current depth: its tree node, draft sequence, cumulative score and
// catalogue node.
struct FrontierBeam {
  int node = 0;
  Sequence* seq = nullptr;
  float score = 0.0f;
  int32_t trie_node = Catalogue::kRoot;
};

// The job's live beams as the first frontier (empty when the job drafts nothing).
std::vector<FrontierBeam> live_frontier(const DraftJob& job) {
  std::vector<FrontierBeam> frontier;
  if (job.max_depth == 0) return frontier;
  const SequenceGroup& group = *job.group;
  ES_CHECK_EQ(group.spec->draft_beams.size(), group.seqs.size());
  for (size_t b = 0; b < group.seqs.size(); ++b) {
    frontier.push_back({static_cast<int>(b), group.spec->draft_beams[b].get(),
                        group.beam->live_score(static_cast<int>(b)), group.seqs[b]->trie_node});
  }
  return frontier;
}

// One depth of the job's draft beam search: the candidates (frontier beam, token) that continue,
// best first: the N best, or (sampling) the distinct ones of N draws from q, whose
// distribution at every frontier beam is recorded in job.expansions. `logprobs`: the draft's
// next-token log-probabilities, [frontier.size(), vocab_size].
std::vector<Candidate> expand_frontier(DraftJob& job, std::span<const FrontierBeam> frontier,
                                       const float* logprobs, int64_t vocab_size) {
  const SequenceGroup& group = *job.group;
  const std::vector<int32_t>& stops = group.beam->options().stop_tokens;
  // Sampling keeps every candidate: q covers them all.
  const size_t num_keep =
      job.sample ? std::numeric_limits<size_t>::max() : static_cast<size_t>(job.num_beams);
  std::vector<int32_t> allowed;
  std::vector<Candidate> candidates, per_beam;
  for (size_t p = 0; p < frontier.size(); ++p) {
    const float* lp = logprobs + p * vocab_size;
    const FrontierBeam& f = frontier[p];
    per_beam.clear();
    auto consider = [&](int32_t token) {
      // Stop tokens end hypotheses: they are never a live beam, so never drafted.
      if (std::find(stops.begin(), stops.end(), token) != stops.end()) return;
      const float v = lp[token];
      if (!std::isfinite(v)) return;
      per_beam.push_back({static_cast<int>(p), token, f.score + v});
    };
    if (group.constraint) {
      group.constraint->allowed_tokens(f.trie_node, allowed);
      for (int32_t t : allowed) consider(t);
    } else {
      for (int32_t t = 0; t < vocab_size; ++t) consider(t);
    }
    keep_best(per_beam, num_keep);
    if (job.sample) {
      DraftExpansion e;
      e.node = f.node;
      e.weight = f.score;
      std::sort(per_beam.begin(), per_beam.end(),
                [](const Candidate& a, const Candidate& b) { return a.token < b.token; });
      for (const Candidate& c : per_beam) {
        e.tokens.push_back(c.token);
        e.logprobs.push_back(lp[c.token]);
      }
      job.expansions.push_back(std::move(e));
    }
    candidates.insert(candidates.end(), per_beam.begin(), per_beam.end());
  }
  if (job.sample) {
    sample_candidates(candidates, job.num_beams, job.seed, job.counter);
  } else {
    keep_best(candidates, num_keep);
  }
  std::sort(candidates.begin(), candidates.end(), better);
  return candidates;
}

}  // namespace

StatusOr<std::unique_ptr<BeamDrafter>> BeamDrafter::create(const DrafterOptions& options,
                                                           const Tokenizer& target_tokenizer,
                                                           const ModelConfig& target_config) {
  std::unique_ptr<BeamDrafter> d(new BeamDrafter());
  d->options_ = options;
  const std::string where = "draft model " + options.executor.model_dir;
  ES_CHECK_LE(options.executor.tensor_parallel.size, 1) << "the draft model runs on rank 0 alone";
  auto executor = Executor::create(options.executor);
  if (!executor.ok()) return executor.status().with_prefix(where);
  d->executor_ = std::move(executor).value();
  auto tokenizer = Tokenizer::from_dir(options.executor.model_dir);
  if (!tokenizer.ok()) return tokenizer.status().with_prefix(where);
  // The draft proposes token ids the target scores: both must mean the same strings.
  if ((*tokenizer)->vocab_size() != target_tokenizer.vocab_size()) {
    return invalid_argument(
        where + ": its tokenizer has " + std::to_string((*tokenizer)->vocab_size()) +
        " tokens; the target's has " + std::to_string(target_tokenizer.vocab_size()));
  }
  for (int32_t id = 0; id < target_tokenizer.vocab_size(); ++id) {
    if ((*tokenizer)->id_to_token(id) != target_tokenizer.id_to_token(id)) {
      return invalid_argument(where + ": its tokenizer differs from the target's at token id " +
                              std::to_string(id));
    }
  }
  const ModelConfig& cfg = d->executor_->config();
  if (cfg.vocab_size != target_config.vocab_size) {
    return invalid_argument(where + ": vocab_size " + std::to_string(cfg.vocab_size) +
                            " differs from the target's " +
                            std::to_string(target_config.vocab_size));
  }
  d->vocab_size_ = cfg.vocab_size;
  d->max_model_len_ = static_cast<int>(cfg.max_position_embeddings);

  d->block_manager_ = std::make_unique<BlockManager>(
      d->executor_->kv_groups(), d->executor_->num_blocks_per_group(), options.executor.block_size,
      options.enable_prefix_caching);
  return d;
}

bool BeamDrafter::matches(const std::string& name) const {
  if (name == model_dir()) return true;
  std::filesystem::path dir(model_dir());
  if (!dir.has_filename()) dir = dir.parent_path();
  return name == dir.filename().string();
}

std::unique_ptr<Sequence> BeamDrafter::new_sequence(std::span<const int32_t> tokens,
                                                    std::span<const uint8_t> kept) {
  const int64_t id = next_kv_id_;
  std::optional<int> cached = block_manager_->allocate(id, tokens, kept);
  if (!cached) return nullptr;
  ++next_kv_id_;
  auto seq = std::make_unique<Sequence>();
  seq->kv_id = id;
  seq->tokens.assign(tokens.begin(), tokens.end());
  seq->kept.assign(kept.begin(), kept.end());
  seq->num_prompt_tokens = static_cast<int>(tokens.size());
  seq->num_computed_tokens = *cached;
  return seq;
}

bool BeamDrafter::append(Sequence& seq, std::span<const int32_t> tokens) {
  const std::vector<uint8_t> kept(tokens.size(), 1);
  if (!block_manager_->append_slots(seq.kv_id, tokens, kept)) return false;
  for (int32_t t : tokens) seq.append(t);
  return true;
}

std::unique_ptr<Sequence> BeamDrafter::fork_and_append(Sequence& parent,
                                                       std::span<const int32_t> tokens) {
  ES_CHECK_EQ(parent.num_computed_tokens, static_cast<int>(parent.tokens.size()));
  auto child = std::make_unique<Sequence>();
  child->kv_id = next_kv_id_++;
  block_manager_->fork(parent.kv_id, child->kv_id);
  child->tokens = parent.tokens;
  child->kept = parent.kept;
  child->num_prompt_tokens = parent.num_prompt_tokens;
  child->num_computed_tokens = parent.num_computed_tokens;
  if (!append(*child, tokens)) {
    free_sequence(*child);
    return nullptr;
  }
  return child;
}

void BeamDrafter::free_sequence(Sequence& seq) {
  if (seq.kv_id >= 0) block_manager_->free(seq.kv_id);
  seq.kv_id = -1;
}

void BeamDrafter::release(SequenceGroup& group) {
  if (!group.spec) return;
  for (auto& seq : group.spec->draft_beams) free_sequence(*seq);
  group.spec->draft_beams.clear();
}

bool BeamDrafter::start(SequenceGroup& group, Sequence& prompt) {
  std::vector<std::unique_ptr<Sequence>>& beams = group.spec->draft_beams;
  for (const auto& target : group.seqs) {
    std::span<const int32_t> generated(target->tokens.data() + target->num_prompt_tokens,
                                       target->num_generated());
    std::unique_ptr<Sequence> beam = fork_and_append(prompt, generated);
    if (!beam) {
      release(group);
      return false;
    }
    beams.push_back(std::move(beam));
  }
  return true;
}

StatusOr<std::vector<float>> BeamDrafter::forward(std::span<Sequence* const> seqs,
                                                  std::span<SequenceGroup* const> owners) {
  SchedulerStep step;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Sequence& seq = *seqs[i];
    const int count = seq.num_uncomputed();
    ES_CHECK_GT(count, 0) << "a draft sequence has nothing to compute";
    ScheduledSeq s;
    s.group = owners[i];
    s.seq = &seq;
    s.start = seq.num_computed_tokens;
    s.count = count;
    s.needs_logits = true;
    step.seqs.push_back(s);
    step.num_tokens += count;
  }
  ES_ASSIGN_OR_RETURN(const Tensor logits, executor_->execute(step, *block_manager_));
  ++num_forward_calls_;
  SequenceGroup* last_owner = nullptr;
  for (size_t i = 0; i < seqs.size(); ++i) {
    seqs[i]->num_computed_tokens = static_cast<int>(seqs[i]->tokens.size());
    block_manager_->mark_computed(seqs[i]->kv_id, seqs[i]->num_computed_tokens, seqs[i]->tokens,
                                  seqs[i]->kept);
    // Owners come grouped; count each request's call once.
    if (owners[i] != last_owner && owners[i]->spec) ++owners[i]->spec->stats.num_draft_calls;
    last_owner = owners[i];
  }
  const float* data = logits.data<float>();
  std::vector<float> out(data, data + logits.numel());
  for (size_t i = 0; i < seqs.size(); ++i) {
    std::span<float> row(out.data() + i * vocab_size_, static_cast<size_t>(vocab_size_));
    const float lse = log_sum_exp(row);
    for (float& v : row) v -= lse;
  }
  return out;
}

Status BeamDrafter::draft(std::span<DraftJob> jobs) {
  // Jobs without draft beams (first round, or after the draft ran out of pages): prefill the
  // prompt once, then fork it for every live beam.
  std::vector<std::unique_ptr<Sequence>> prompts;
  std::vector<Sequence*> seqs;
  std::vector<SequenceGroup*> owners;
  std::vector<size_t> starting;
  for (size_t j = 0; j < jobs.size(); ++j) {
    DraftJob& job = jobs[j];
    job.nodes.clear();
    job.expansions.clear();
    SequenceGroup& group = *job.group;
    ES_CHECK(group.spec && group.beam && !group.beam->done());
    const Sequence& first = *group.seqs[0];
    // The draft's positions must stay inside its context.
    const int draft_len = static_cast<int>(group.spec->draft_beams.empty()
                                               ? first.num_generated() + first.num_prompt_tokens
                                               : group.spec->draft_beams[0]->tokens.size());
    job.max_depth = std::max(0, std::min(job.max_depth, max_model_len_ - 1 - draft_len));
    if (job.max_depth == 0 || !group.spec->draft_beams.empty()) continue;
    std::vector<int32_t> tokens;
    std::vector<uint8_t> kept;
    wrap_prompt(executor_->config(), group.request.prompt_token_ids, tokens, kept);
    if (static_cast<int>(tokens.size()) + first.num_generated() + job.max_depth >= max_model_len_) {
      job.max_depth = 0;
      continue;
    }
    std::unique_ptr<Sequence> prompt = new_sequence(tokens, kept);
    if (!prompt) {
      job.max_depth = 0;
      continue;
    }
    seqs.push_back(prompt.get());
    owners.push_back(&group);
    prompts.push_back(std::move(prompt));
    starting.push_back(j);
  }
  // Each level's forward goes to step_costs_ with the work around it (expanding the frontier,
  // forking the beams' KV): the policy needs what a level of drafting costs. Prompt prefills
  // are left out: their rows cost far less per row.
  auto record = [&](int rows, Clock::time_point since) {
    step_costs_.record(rows, std::chrono::duration<double>(Clock::now() - since).count());
  };
  if (!seqs.empty()) {
    StatusOr<std::vector<float>> ran = forward(seqs, owners);
    if (!ran.ok()) {
      for (auto& p : prompts) free_sequence(*p);
      return ran.status();
    }
    for (size_t i = 0; i < starting.size(); ++i) {
      DraftJob& job = jobs[starting[i]];
      if (!start(*job.group, *prompts[i])) job.max_depth = 0;
      free_sequence(*prompts[i]);
    }
  }

  // Beam search with N beams, one draft forward per depth over every job still expanding.
  std::vector<std::vector<FrontierBeam>> frontier(jobs.size());
  std::vector<std::vector<std::unique_ptr<Sequence>>> owned(jobs.size());
  int max_depth = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    frontier[j] = live_frontier(jobs[j]);
    if (!frontier[j].empty()) max_depth = std::max(max_depth, jobs[j].max_depth);
  }
  Status status = Status::Ok();
  for (int depth = 1; depth <= max_depth; ++depth) {
    seqs.clear();
    owners.clear();
    for (size_t j = 0; j < jobs.size(); ++j) {
      for (const FrontierBeam& f : frontier[j]) {
        seqs.push_back(f.seq);
        owners.push_back(jobs[j].group);
      }
    }
    if (seqs.empty()) break;
    const auto began = Clock::now();
    int rows = 0;
    for (Sequence* seq : seqs) rows += seq->num_uncomputed();
    StatusOr<std::vector<float>> logprobs = forward(seqs, owners);
    if (!logprobs.ok()) {
      status = logprobs.status();
      break;
    }
    size_t row = 0;
    for (size_t j = 0; j < jobs.size(); ++j) {
      if (frontier[j].empty()) continue;
      DraftJob& job = jobs[j];
      SequenceGroup& group = *job.group;
      const std::vector<Candidate> candidates =
          expand_frontier(job, frontier[j], logprobs->data() + row * vocab_size_, vocab_size_);
      row += frontier[j].size();
      const int num_live = static_cast<int>(group.seqs.size());
      std::vector<FrontierBeam> next;
      std::vector<std::unique_ptr<Sequence>> next_owned;
      bool expand = depth < job.max_depth;
      for (const Candidate& c : candidates) {
        const FrontierBeam& f = frontier[j][c.parent];
        const int32_t trie = group.constraint ? group.constraint->child(f.trie_node, c.token) : 0;
        const int node = num_live + static_cast<int>(job.nodes.size());
        job.nodes.push_back({f.node, c.token, trie, c.draws});
        if (!expand) continue;
        std::unique_ptr<Sequence> child = fork_and_append(*f.seq, std::span(&c.token, 1));
        if (!child) {
          // Out of draft pages: this depth's nodes stay as leaves.
          expand = false;
          continue;
        }
        next.push_back({node, child.get(), c.score, trie});
        next_owned.push_back(std::move(child));
      }
      if (!expand) {
        for (auto& s : next_owned) free_sequence(*s);
        next.clear();
        next_owned.clear();
      }
      for (auto& s : owned[j]) free_sequence(*s);
      owned[j] = std::move(next_owned);
      frontier[j] = std::move(next);
    }
    record(rows, began);
  }
  for (auto& list : owned) {
    for (auto& s : list) free_sequence(*s);
  }
  return status;
}

void BeamDrafter::advance(SequenceGroup& group, std::span<const int> origins,
                          std::span<const std::vector<int32_t>> appended) {
  ES_CHECK_EQ(origins.size(), appended.size());
  if (!group.spec || group.spec->draft_beams.empty()) return;
  std::vector<std::unique_ptr<Sequence>> old = std::move(group.spec->draft_beams);
  group.spec->draft_beams.clear();
  std::vector<int> first_child(old.size(), -1);
  for (size_t i = 0; i < origins.size(); ++i) {
    ES_CHECK(origins[i] >= 0 && origins[i] < static_cast<int>(old.size()));
    if (first_child[origins[i]] < 0) first_child[origins[i]] = static_cast<int>(i);
  }
  auto fail = [&](std::vector<std::unique_ptr<Sequence>>& made) {
    for (auto& s : old) {
      if (s) free_sequence(*s);
    }
    for (auto& s : made) {
      if (s) free_sequence(*s);
    }
  };
  std::vector<std::unique_ptr<Sequence>> next(origins.size());
  // Forks first, while the origins hold exactly their computed tokens.
  for (size_t i = 0; i < origins.size(); ++i) {
    if (first_child[origins[i]] == static_cast<int>(i)) continue;
    Sequence& parent = *old[origins[i]];
    if (parent.num_uncomputed() > 0) {
      // The draft skipped this round (no depth to draft): start over next round.
      fail(next);
      return;
    }
    next[i] = fork_and_append(parent, appended[i]);
    if (!next[i]) {
      fail(next);
      return;
    }
  }
  for (size_t b = 0; b < old.size(); ++b) {
    if (first_child[b] < 0) {
      free_sequence(*old[b]);
      old[b].reset();
      continue;
    }
    const int i = first_child[b];
    if (!append(*old[b], appended[i])) {
      fail(next);
      return;
    }
    next[i] = std::move(old[b]);
  }
  group.spec->draft_beams = std::move(next);
}

}  // namespace earnserve
