// SpeculativeRounds: speculative beam search (AtSpeed, arXiv 2410.05165) with strict top-K or
// relaxed sampling verification.
//
// A round, for every speculative request whose live beams all run to their end in a step:
//  1. the draft (scheduler/speculative/beam_drafter.h) runs beam search with N beams for up to
//  gamma steps
//     from the K live beams and returns every drafted beam at every depth as a tree. The
//     tree's rows count against the step's token budget (max_num_batched_tokens): a
//     request drafts fewer levels, or none, when the step is full;
//  2. the step's single target forward computes each live beam's new tokens as usual and, after
//     them, the beam's subtree of drafted nodes as tree-attention query rows (each node attends
//     the beam's context and its own ancestors; position = the beam's last position + depth);
//     the nodes' KV goes to slots appended to the beam's block table for this step only;
//  3. verify_strict_top_k replays the target's BeamSearch over the tree: the result is exactly
//     ordinary beam search, up to gamma + 1 steps per round;
//  4. the drafted slots are truncated away, and the kept beams get the accepted tokens as new,
//     uncomputed tokens: their KV is recomputed in the next round's forward, alongside the next
//     tree. Recomputing costs up to gamma + 1 extra query rows per beam in a forward that runs
//     anyway, and needs no slot-granular KV copy; the draft's beams follow likewise.
//
// Relaxed verification replaces steps 1 and 3: the draft draws N (beam, token) candidates per
// depth from its distribution q instead of keeping its N best (BeamDrafter, DraftJob::sample),
// and verify_relaxed_tree walks the tree level by level with verify_relaxed_sampling against the
// target's p, applying K chosen candidates per level (BeamSearch::apply). A level continues the
// round while every live choice is a drafted node (so the target scored it); the first level
// that takes a token outside the tree (a residual draw) ends it. The result is a sample, not the
// target's beam search; with K = N = 1 it is distributed exactly as sampling from the target.
#include "scheduler/speculative/speculative_round.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "core/logging.h"
#include "scheduler/sampler.h"
#include "scheduler/speculative/speculative_verify.h"

namespace earnserve {
namespace {

// What a round applied to a request's search, under either verification rule.
struct RoundResult {
  explicit RoundResult(BeamSearch initial) : state(std::move(initial)) {}
  int num_accepted = 0;
  // Each applied step's live choices (parents index the previous step's live beams).
  std::vector<std::vector<BeamChoice>> steps;
  BeamSearch state;
};

// Relaxed sampling verification of a drafted tree (see the file comment). `tree` as for
// verify_strict_top_k; `draws[n]`: how often the draft drew node n; `expansions`: the draft's q at
// every node it expanded. Level by level from the live beams: the candidates are the allowed
// children of the kept beams, p their target distribution (candidate_distribution), q the
// draft's distribution restricted to the kept parents and renormalised, and the draws are the
// drafted children of kept parents, repeated by their counts. Those draws are i.i.d. from that
// restricted q: the draft drew each depth's N candidates i.i.d. from q over the children of all
// its beams, independently of how the previous level was verified, and a draw from q that lands
// on a kept parent is a draw from q conditioned on the kept parents. A level without such draws
// takes its K candidates from p alone. `counter` advances past every uniform used.
RoundResult verify_relaxed_tree(const BeamSearch& target, std::span<const DraftNode> tree,
                                std::span<const int> draws,
                                std::span<const DraftExpansion> expansions, uint64_t seed,
                                uint64_t& counter) {
  RoundResult r(target);
  const int num_live = target.num_live();
  const int num_nodes = static_cast<int>(tree.size());
  std::vector<std::unordered_map<int32_t, int>> children(num_nodes);
  for (int n = num_live; n < num_nodes; ++n) children[tree[n].parent][tree[n].token] = n;
  std::vector<const DraftExpansion*> expansion(num_nodes, nullptr);
  for (const DraftExpansion& e : expansions) expansion[e.node] = &e;
  const int width = target.options().width;

  std::vector<int> kept(num_live);
  std::iota(kept.begin(), kept.end(), 0);
  std::vector<int> cand_beams;
  std::vector<int32_t> cand_tokens;
  std::vector<float> cand_logprobs, scores;
  std::vector<double> q;
  std::vector<int> draw_list;
  while (!r.state.done()) {
    bool scored = true;
    for (int node : kept) scored = scored && !tree[node].logprobs.empty();
    if (!scored) break;
    cand_beams.clear();
    cand_tokens.clear();
    cand_logprobs.clear();
    for (int i = 0; i < static_cast<int>(kept.size()); ++i) {
      const DraftNode& n = tree[kept[i]];
      auto consider = [&](int32_t t) {
        const float lp = n.logprobs[t];
        if (lp == -std::numeric_limits<float>::infinity()) return;
        cand_beams.push_back(i);
        cand_tokens.push_back(t);
        cand_logprobs.push_back(lp);
      };
      if (n.constrained) {
        for (int32_t t : n.allowed_tokens) consider(t);
      } else {
        for (int32_t t = 0; t < static_cast<int32_t>(n.logprobs.size()); ++t) consider(t);
      }
    }
    scores.resize(kept.size());
    for (size_t i = 0; i < kept.size(); ++i) scores[i] = r.state.live_score(static_cast<int>(i));
    const std::vector<double> p = candidate_distribution(scores, cand_beams, cand_logprobs);
    if (std::all_of(p.begin(), p.end(), [](double v) { return v == 0.0; })) {
      r.steps.push_back(r.state.apply({}));  // nothing can follow any live beam: the search ends
      ++r.num_accepted;
      break;
    }
    // q restricted to the kept parents, in log space first.
    const size_t num_cands = cand_beams.size();
    q.assign(num_cands, 0.0);
    std::vector<double> logit(num_cands, -std::numeric_limits<double>::infinity());
    double max_logit = -std::numeric_limits<double>::infinity();
    draw_list.clear();
    for (size_t c = 0; c < num_cands; ++c) {
      const int parent = kept[cand_beams[c]];
      const int32_t token = cand_tokens[c];
      if (const DraftExpansion* e = expansion[parent]) {
        auto it = std::lower_bound(e->tokens.begin(), e->tokens.end(), token);
        if (it != e->tokens.end() && *it == token) {
          logit[c] = static_cast<double>(e->weight) + e->logprobs[it - e->tokens.begin()];
          max_logit = std::max(max_logit, logit[c]);
        }
      }
      if (auto child = children[parent].find(token); child != children[parent].end()) {
        draw_list.insert(draw_list.end(), draws[child->second], static_cast<int>(c));
      }
    }
    if (draw_list.empty()) {
      q = p;  // no draft proposal at this level: the residual rule falls back to p
    } else {
      double total = 0.0;
      for (size_t c = 0; c < num_cands; ++c) {
        q[c] = std::isfinite(logit[c]) ? std::exp(logit[c] - max_logit) : 0.0;
        total += q[c];
      }
      for (double& v : q) v /= total;
    }
    RelaxedVerifyInput in;
    in.draft_probs = q;
    in.target_probs = p;
    in.draws = draw_list;
    in.num_keep = width;
    in.seed = seed;
    in.counter = counter;
    const RelaxedVerifyResult v = verify_relaxed_sampling(in);
    counter += draw_list.size() + static_cast<size_t>(width);

    std::vector<BeamChoice> chosen;
    for (int c : v.chosen) {
      chosen.push_back({cand_beams[c], cand_tokens[c], scores[cand_beams[c]] + cand_logprobs[c]});
    }
    std::sort(chosen.begin(), chosen.end(), [](const BeamChoice& a, const BeamChoice& b) {
      if (a.score != b.score) return a.score > b.score;
      if (a.parent != b.parent) return a.parent < b.parent;
      return a.token < b.token;
    });
    std::vector<BeamChoice> live = r.state.apply(chosen);
    // The round goes on while every new live beam is a drafted node the target scored.
    std::vector<int> next;
    bool in_tree = true;
    for (const BeamChoice& c : live) {
      auto child = children[kept[c.parent]].find(c.token);
      if (child == children[kept[c.parent]].end()) {
        in_tree = false;
        break;
      }
      next.push_back(child->second);
    }
    r.steps.push_back(std::move(live));
    if (!in_tree) break;
    ++r.num_accepted;
    kept = std::move(next);
  }
  return r;
}

}  // namespace

void SpeculativeRounds::Round::reset(int num_live) {
  tokens.assign(num_live, {});
  parents.assign(num_live, {});
  node_ids.assign(num_live, {});
}

SpeculativeRounds::SpeculativeRounds(BeamDrafter& drafter, BlockManager& block_manager,
                                     Scheduler& scheduler, int max_num_batched_tokens,
                                     int64_t vocab_size)
    : drafter_(drafter),
      block_manager_(block_manager),
      scheduler_(scheduler),
      max_num_batched_tokens_(max_num_batched_tokens),
      vocab_size_(vocab_size) {}

Status SpeculativeRounds::prepare(SchedulerStep& step) {
  const auto began = Clock::now();
  rounds_.clear();
  plain_.clear();
  pending_predicted_seconds_ = 0;
  // Each speculative search's scheduled sequences, by live beam.
  std::unordered_map<SequenceGroup*, std::vector<int>> scheduled;
  std::vector<SequenceGroup*> order;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    const ScheduledSeq& s = step.seqs[i];
    SequenceGroup* g = s.group;
    if (!g->spec || !g->beam || g->beam->done() || !s.needs_logits) continue;
    auto [it, inserted] = scheduled.try_emplace(g, std::vector<int>(g->seqs.size(), -1));
    if (inserted) order.push_back(g);
    for (size_t b = 0; b < g->seqs.size(); ++b) {
      if (g->seqs[b].get() == s.seq) it->second[b] = static_cast<int>(i);
    }
  }
  // Policy always first (their trees are fixed), then policy auto.
  std::vector<DraftJob> jobs;
  std::vector<SequenceGroup*> auto_groups;
  // Drafted rows come out of the step's token budget, at most N per level of a tree.
  int budget_left = max_num_batched_tokens_ - step.num_tokens;
  for (int pass = 0; pass < 2; ++pass) {
    for (SequenceGroup* g : order) {
      const std::vector<int>& idx = scheduled[g];
      if (std::find(idx.begin(), idx.end(), -1) != idx.end()) continue;
      const SpeculativeParams& p = *g->request.params.speculative;
      if ((p.policy == SpeculativeParams::Policy::kAlways) != (pass == 0)) continue;
      DraftJob job;
      job.group = g;
      job.num_beams = p.num_draft_beams;
      if (p.verification == SpeculativeParams::Verification::kRelaxed) {
        job.sample = true;
        job.seed = g->spec->seed;
        job.counter = g->spec->draft_counter;
      }
      // The step that reaches max_tokens needs no children: draft at most one level less.
      const int steps_left = g->beam->options().max_tokens - g->seqs[0]->num_generated();
      job.max_depth = std::max(0, std::min(p.num_speculative_steps, steps_left - 1));
      if (pass == 0) {
        job.max_depth = std::min(job.max_depth, std::max(0, budget_left) / p.num_draft_beams);
        budget_left -= job.max_depth * p.num_draft_beams;
      } else {
        auto_groups.push_back(g);
      }
      jobs.push_back(std::move(job));
    }
  }
  const size_t num_always = jobs.size() - auto_groups.size();
  const std::vector<Plain> plain =
      plan_auto(step, auto_groups, std::span(jobs).subspan(num_always), budget_left);
  // Auto requests stepping plainly keep no draft beams (re-prefilled, mostly from the draft's
  // prefix cache, when a later step drafts for them).
  std::vector<DraftJob> drafting;
  for (size_t j = 0; j < jobs.size(); ++j) {
    SequenceGroup& g = *jobs[j].group;
    if (j >= num_always && plain[j - num_always] != Plain::kNo) {
      account_plain(g, plain[j - num_always]);
      plain_.insert(&g);
      drafter_.release(g);
      continue;
    }
    Round& round = rounds_[&g];
    round.position = g.seqs[0]->num_generated();
    round.num_draft_beams = jobs[j].num_beams;
    drafting.push_back(std::move(jobs[j]));
  }
  const auto drafting_began = Clock::now();
  planning_seconds_ += std::chrono::duration<double>(drafting_began - began).count();
  ES_RETURN_IF_ERROR(drafter_.draft(drafting));

  for (DraftJob& job : drafting) {
    SequenceGroup& g = *job.group;
    if (job.sample) g.spec->draft_counter = job.counter;
    Round& round = rounds_[&g];
    round.nodes = std::move(job.nodes);
    round.expansions = std::move(job.expansions);
    attach_tree(g, round);
    const std::vector<int>& idx = scheduled[&g];
    step.trees.resize(step.seqs.size());
    for (size_t b = 0; b < g.seqs.size(); ++b) {
      step.trees[idx[b]] = {round.tokens[b], round.parents[b]};
      step.num_tokens += static_cast<int>(round.tokens[b].size());
    }
  }
  pending_draft_seconds_ = std::chrono::duration<double>(Clock::now() - drafting_began).count();
  return Status::Ok();
}

void SpeculativeRounds::record_target_step(int rows, double seconds, bool prompt_rows) {
  if (!prompt_rows) target_costs_.record(rows, seconds);
  if (pending_predicted_seconds_ <= 0) return;
  const double ratio =
      std::clamp((pending_draft_seconds_ + seconds) / pending_predicted_seconds_, 0.25, 8.0);
  ++num_tree_steps_;
  tree_cost_factor_ +=
      (ratio - tree_cost_factor_) / static_cast<double>(std::min<int64_t>(num_tree_steps_, 32));
  pending_predicted_seconds_ = 0;
}

std::vector<SpeculativeRounds::Plain> SpeculativeRounds::plan_auto(
    const SchedulerStep& step, std::span<SequenceGroup* const> auto_groups,
    std::span<DraftJob> jobs, int& budget_left) {
  std::vector<Plain> plain(auto_groups.size(), Plain::kNo);
  if (auto_groups.empty()) return plain;
  PolicyInput in;
  in.step_rows = max_num_batched_tokens_ - budget_left;  // the step's rows and fixed trees
  in.row_budget = std::max(0, budget_left);
  const SequenceGroup* last = nullptr;
  for (const ScheduledSeq& s : step.seqs) {
    if (s.needs_logits && s.group != last) ++in.step_levels;
    last = s.group;
  }
  for (size_t i = 0; i < auto_groups.size(); ++i) {
    const SequenceGroup& g = *auto_groups[i];
    const SpeculativeParams& p = *g.request.params.speculative;
    PolicyRequest r;
    r.beam_width = static_cast<int>(g.seqs.size());
    r.position = g.seqs[0]->num_generated();
    r.max_depth = jobs[i].max_depth;
    r.max_draft_beams = p.num_draft_beams;
    r.mode = p.verification == SpeculativeParams::Verification::kRelaxed
                 ? AcceptanceTable::Mode::kRelaxed
                 : AcceptanceTable::Mode::kStrict;
    if (g.spec->draft_beams.empty()) {
      r.draft_prefill_rows = static_cast<int>(g.request.prompt_token_ids.size()) + r.position;
    }
    in.requests.push_back(r);
  }
  in.tree_cost_factor = tree_cost_factor_;
  const PolicyDecision d =
      decide_speculation(in, target_costs_, drafter_.step_costs(), acceptance_);
  if (d.speculate) pending_predicted_seconds_ = d.spec_seconds;
  ES_LOG(Debug) << "speculation policy: " << in.requests.size() << " auto requests, "
                << in.step_rows << " rows, " << in.step_levels << " levels: plain "
                << d.plain_levels_per_s << " levels/s, best tree " << d.spec_levels_per_s
                << " levels/s (N x" << d.shape.width_multiple << ", gamma " << d.shape.depth << ")"
                << (d.speculate ? ": speculate" : "");
  for (size_t i = 0; i < jobs.size(); ++i) {
    DraftJob& job = jobs[i];
    if (job.max_depth == 0) {
      plain[i] = Plain::kNoRoom;
      continue;
    }
    if (!d.speculate) {
      plain[i] = Plain::kCost;
      job.max_depth = 0;
      continue;
    }
    job.num_beams = draft_beams_for(d.shape, in.requests[i]);
    job.max_depth =
        std::min({job.max_depth, d.shape.depth, std::max(0, budget_left) / job.num_beams});
    budget_left -= job.max_depth * job.num_beams;
    if (job.max_depth == 0) plain[i] = Plain::kNoRoom;
  }
  return plain;
}

CalibrationResult SpeculativeRounds::calibrate(Executor& target, BlockManager& target_blocks,
                                               const CalibrationOptions& options) {
  CalibrationOptions half = options;
  half.budget_seconds = options.budget_seconds / 2;
  CalibrationResult t;
  if (!target.leads_workers()) {
    t = calibrate_forwards(target, target_blocks, max_num_batched_tokens_, half, target_costs_);
  }
  half.budget_seconds = options.budget_seconds - t.seconds;
  const CalibrationResult d = drafter_.calibrate(max_num_batched_tokens_, half);
  return {t.seconds + d.seconds, t.num_forwards + d.num_forwards, std::max(t.max_rows, d.max_rows)};
}

void SpeculativeRounds::attach_tree(SequenceGroup& g, Round& round) {
  const int num_live = static_cast<int>(g.seqs.size());
  round.reset(num_live);
  // Split the tree into one subtree per live beam; a node's parent is either the beam's last
  // token (-1) or an earlier node of the same subtree.
  const int num_nodes = num_live + static_cast<int>(round.nodes.size());
  std::vector<int> root(num_nodes), local(num_nodes, -1);
  std::iota(root.begin(), root.begin() + num_live, 0);
  for (int i = 0; i < static_cast<int>(round.nodes.size()); ++i) {
    const DraftTreeNode& n = round.nodes[i];
    const int node = num_live + i;
    ES_CHECK(n.parent >= 0 && n.parent < node);
    const int b = root[n.parent];
    root[node] = b;
    local[node] = static_cast<int>(round.tokens[b].size());
    round.tokens[b].push_back(n.token);
    round.parents[b].push_back(n.parent < num_live ? -1 : local[n.parent]);
    round.node_ids[b].push_back(node);
  }
  // Slots for the nodes, after each beam's tokens, for this step only.
  int appended = 0;
  for (; appended < num_live; ++appended) {
    const std::vector<int32_t>& tokens = round.tokens[appended];
    if (tokens.empty()) continue;
    const std::vector<uint8_t> kept(tokens.size(), 1);
    if (!block_manager_.append_slots(g.seqs[appended]->kv_id, tokens, kept)) break;
  }
  if (appended < num_live) {
    // No room for the tree: this round verifies the live beams' own step only.
    for (int b = 0; b < appended; ++b) {
      if (round.tokens[b].empty()) continue;
      block_manager_.truncate(g.seqs[b]->kv_id, static_cast<int>(g.seqs[b]->tokens.size()));
    }
    round.nodes.clear();
    round.expansions.clear();
    round.reset(num_live);
  }
}

SpeculativeRounds::Outcome SpeculativeRounds::verify(SequenceGroup& group,
                                                     std::vector<std::span<float>>& rows) {
  return apply(group, rounds_.at(&group), rows, /*count_round=*/true);
}

void SpeculativeRounds::account_plain(SequenceGroup& group, Plain reason) {
  SpeculativeStats& stats = group.spec->stats;
  if (reason == Plain::kCost) {
    ++stats.num_plain_steps_cost;
    ++num_plain_steps_cost_;
  } else {
    ++stats.num_plain_steps_no_room;
    ++num_plain_steps_no_room_;
  }
}

void SpeculativeRounds::account(SequenceGroup& group, const Round& round, int num_accepted,
                                bool search_ended) {
  SpeculativeStats& stats = group.spec->stats;
  ++stats.num_rounds;
  stats.accepted_steps.push_back(num_accepted);
  ++num_rounds_;
  num_accepted_steps_ += num_accepted;
  // The drafted depth: nodes come parents first.
  const int num_live = static_cast<int>(round.tokens.size());
  std::vector<int> depth(num_live + round.nodes.size(), 0);
  int max_depth = 0;
  for (size_t i = 0; i < round.nodes.size(); ++i) {
    depth[num_live + i] = depth[round.nodes[i].parent] + 1;
    max_depth = std::max(max_depth, depth[num_live + i]);
  }
  stats.trees.push_back({round.num_draft_beams, max_depth});
  if (max_depth == 0) return;
  const SpeculativeParams& p = *group.request.params.speculative;
  const auto mode = p.verification == SpeculativeParams::Verification::kRelaxed
                        ? AcceptanceTable::Mode::kRelaxed
                        : AcceptanceTable::Mode::kStrict;
  acceptance_.record(mode, round.num_draft_beams, num_live, round.position, max_depth, num_accepted,
                     search_ended);
}

SpeculativeRounds::Outcome SpeculativeRounds::sample_relaxed(SequenceGroup& group,
                                                             std::vector<std::span<float>>& rows) {
  Round round;
  round.reset(static_cast<int>(rows.size()));
  return apply(group, round, rows, /*count_round=*/false);
}

SpeculativeRounds::Outcome SpeculativeRounds::apply(SequenceGroup& group, Round& round,
                                                    std::vector<std::span<float>>& rows,
                                                    bool count_round) {
  const int64_t vocab = vocab_size_;
  const int num_live = static_cast<int>(group.seqs.size());
  ES_CHECK_EQ(static_cast<int>(rows.size()), num_live);
  const int num_nodes = num_live + static_cast<int>(round.nodes.size());
  const CatalogueConstraint* constraint = group.constraint.get();

  std::vector<DraftNode> tree(num_nodes);
  std::vector<int32_t> trie(num_nodes, Catalogue::kRoot);
  for (int b = 0; b < num_live; ++b) {
    tree[b].parent = -1;
    tree[b].token = group.seqs[b]->tokens.back();
    trie[b] = group.seqs[b]->trie_node;
  }
  for (int i = 0; i < static_cast<int>(round.nodes.size()); ++i) {
    tree[num_live + i].parent = round.nodes[i].parent;
    tree[num_live + i].token = round.nodes[i].token;
    trie[num_live + i] = round.nodes[i].trie_node;
  }
  // Rows to log-probabilities: beam b's rows are its last token, then its subtree in order.
  for (int b = 0; b < num_live; ++b) {
    const size_t num_rows = 1 + round.node_ids[b].size();
    ES_CHECK_EQ(rows[b].size(), num_rows * static_cast<size_t>(vocab));
    for (size_t k = 0; k < num_rows; ++k) {
      std::span<float> r = rows[b].subspan(k * vocab, vocab);
      const float lse = log_sum_exp(r);
      for (float& v : r) v -= lse;
      tree[k == 0 ? b : round.node_ids[b][k - 1]].logprobs = r;
    }
  }
  std::vector<std::vector<int32_t>> allowed(num_nodes);
  if (constraint) {
    for (int n = 0; n < num_nodes; ++n) {
      constraint->allowed_tokens(trie[n], allowed[n]);
      tree[n].allowed_tokens = allowed[n];
      tree[n].constrained = true;
    }
  }

  RoundResult result(*group.beam);
  if (group.request.params.speculative->verification == SpeculativeParams::Verification::kRelaxed) {
    std::vector<int> draws(num_nodes, 0);
    for (int i = 0; i < static_cast<int>(round.nodes.size()); ++i) {
      draws[num_live + i] = round.nodes[i].draws;
    }
    result = verify_relaxed_tree(*group.beam, tree, draws, round.expansions,
                                 mix_seed(group.spec->seed, 2), group.spec->verify_counter);
  } else {
    StrictVerifyResult strict = verify_strict_top_k(*group.beam, tree);
    result.num_accepted = strict.num_accepted;
    result.steps = std::move(strict.steps);
    result.state = std::move(strict.state);
  }
  // The drafted nodes' KV is dropped (accepted tokens are recomputed next round).
  for (int b = 0; b < num_live; ++b) {
    if (round.tokens[b].empty()) continue;
    block_manager_.truncate(group.seqs[b]->kv_id, static_cast<int>(group.seqs[b]->tokens.size()));
  }
  if (count_round) account(group, round, result.num_accepted, result.state.done());
  Outcome outcome;
  for (const std::vector<BeamChoice>& choices : result.steps) {
    outcome.num_generated += static_cast<int64_t>(choices.size());
  }
  group.beam = std::make_unique<BeamSearch>(std::move(result.state));
  if (group.beam->done()) {
    outcome.done = true;
    return outcome;
  }

  // Each new live beam is an old live beam followed by the tokens the applied steps chose.
  std::vector<int> origins(num_live);
  std::iota(origins.begin(), origins.end(), 0);
  std::vector<std::vector<int32_t>> appended(num_live);
  for (const std::vector<BeamChoice>& choices : result.steps) {
    std::vector<int> next_origins;
    std::vector<std::vector<int32_t>> next_appended;
    for (const BeamChoice& c : choices) {
      next_origins.push_back(origins[c.parent]);
      next_appended.push_back(appended[c.parent]);
      next_appended.back().push_back(c.token);
    }
    origins = std::move(next_origins);
    appended = std::move(next_appended);
  }
  ES_CHECK_EQ(static_cast<int>(origins.size()), group.beam->num_live());

  // The origins hold exactly their computed tokens now, as regroup_beams wants.
  std::vector<std::unique_ptr<Sequence>> next =
      scheduler_.regroup_beams(std::move(group.seqs), origins);
  for (size_t i = 0; i < next.size(); ++i) {
    Sequence& s = *next[i];
    s.index = static_cast<int>(i);
    for (int32_t token : appended[i]) {
      s.append(token);
      if (constraint) s.trie_node = constraint->advance(s.trie_node, token);
    }
    s.cumulative_logprob = group.beam->live_score(static_cast<int>(i));
  }
  group.seqs = std::move(next);
  drafter_.advance(group, origins, appended);
  return outcome;
}

}  // namespace earnserve
