// Engine: speculative beam search (AtSpeed, arXiv 2410.05165) with strict top-K verification.
//
// A round, for every speculative request whose live beams all run to their end in a step:
//  1. the draft (scheduler/beam_drafter.h) runs beam search with N beams for up to gamma steps
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
#include <algorithm>
#include <numeric>

#include "core/logging.h"
#include "scheduler/engine.h"
#include "scheduler/sampler.h"
#include "scheduler/speculative_verify.h"

namespace earnserve {

void Engine::release_draft(SequenceGroup& group) {
  if (drafter_) drafter_->release(group);
}

Status Engine::prepare_speculative(SchedulerStep& step) {
  rounds_.clear();
  if (!drafter_) return Status::Ok();
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
  std::vector<DraftJob> jobs;
  // Drafted rows come out of the step's token budget, at most N per level of a tree.
  int budget_left = options_.max_num_batched_tokens - step.num_tokens;
  for (SequenceGroup* g : order) {
    const std::vector<int>& idx = scheduled[g];
    if (std::find(idx.begin(), idx.end(), -1) != idx.end()) continue;
    const SpeculativeParams& p = *g->request.params.speculative;
    DraftJob job;
    job.group = g;
    job.num_beams = p.num_draft_beams;
    job.eos_token = eos_token_ids_.empty() ? -1 : eos_token_ids_.front();
    // The step that reaches max_tokens needs no children: draft at most one level less.
    const int steps_left = g->beam->options().max_tokens - g->seqs[0]->num_generated();
    job.max_depth = std::max(0, std::min(p.num_speculative_steps, steps_left - 1));
    job.max_depth = std::min(job.max_depth, std::max(0, budget_left) / p.num_draft_beams);
    budget_left -= job.max_depth * p.num_draft_beams;
    jobs.push_back(std::move(job));
  }
  ES_RETURN_IF_ERROR(drafter_->draft(jobs));

  for (DraftJob& job : jobs) {
    SequenceGroup& g = *job.group;
    const int num_live = static_cast<int>(g.seqs.size());
    SpeculativeRound& round = rounds_[&g];
    round.nodes = std::move(job.nodes);
    round.tokens.assign(num_live, {});
    round.parents.assign(num_live, {});
    round.node_ids.assign(num_live, {});
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
      if (!block_manager_->append_slots(g.seqs[appended]->kv_id, tokens, kept)) break;
    }
    if (appended < num_live) {
      // No room for the tree: this round verifies the live beams' own step only.
      for (int b = 0; b < appended; ++b) {
        if (round.tokens[b].empty()) continue;
        block_manager_->truncate(g.seqs[b]->kv_id, static_cast<int>(g.seqs[b]->tokens.size()));
      }
      round.nodes.clear();
      for (int b = 0; b < num_live; ++b) {
        round.tokens[b].clear();
        round.parents[b].clear();
        round.node_ids[b].clear();
      }
    }
    const std::vector<int>& idx = scheduled[&g];
    step.trees.resize(step.seqs.size());
    for (int b = 0; b < num_live; ++b) {
      step.trees[idx[b]] = {round.tokens[b], round.parents[b]};
      step.num_tokens += static_cast<int>(round.tokens[b].size());
    }
  }
  return Status::Ok();
}

void Engine::process_speculative(SequenceGroup& group, std::vector<std::span<float>>& rows) {
  SpeculativeRound& round = rounds_.at(&group);
  const int64_t vocab = model_->config().vocab_size;
  const int num_live = static_cast<int>(group.seqs.size());
  ES_CHECK_EQ(static_cast<int>(rows.size()), num_live);
  const int num_nodes = num_live + static_cast<int>(round.nodes.size());
  const std::shared_ptr<const Catalogue>& catalogue = group.request.catalogue;

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
  if (catalogue) {
    for (int n = 0; n < num_nodes; ++n) {
      catalogue->allowed_tokens(trie[n], group.exclusion.get(), eos_token_ids_.front(), allowed[n]);
      tree[n].allowed_tokens = allowed[n];
      tree[n].constrained = true;
    }
  }

  StrictVerifyResult result = verify_strict_top_k(*group.beam, tree);
  // The drafted nodes' KV is dropped (accepted tokens are recomputed next round).
  for (int b = 0; b < num_live; ++b) {
    if (round.tokens[b].empty()) continue;
    block_manager_->truncate(group.seqs[b]->kv_id, static_cast<int>(group.seqs[b]->tokens.size()));
  }
  SpeculativeStats& stats = group.spec->stats;
  ++stats.num_rounds;
  stats.accepted_steps.push_back(result.num_accepted);
  ++total_spec_rounds_;
  total_spec_accepted_steps_ += result.num_accepted;
  for (const std::vector<BeamChoice>& choices : result.steps) {
    total_generation_tokens_ += static_cast<int64_t>(choices.size());
  }
  group.beam = std::make_unique<BeamSearch>(std::move(result.state));
  if (group.beam->done()) {
    finished_this_step_.push_back(&group);
    return;
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
  std::vector<std::unique_ptr<Sequence>> next = regroup_beams(std::move(group.seqs), origins);
  for (size_t i = 0; i < next.size(); ++i) {
    Sequence& s = *next[i];
    s.index = static_cast<int>(i);
    for (int32_t token : appended[i]) {
      s.append(token);
      if (catalogue) {
        s.trie_node = catalogue->child(s.trie_node, token);
        ES_CHECK_GE(s.trie_node, 0);
      }
    }
    s.cumulative_logprob = group.beam->live_score(static_cast<int>(i));
  }
  group.seqs = std::move(next);
  drafter_->advance(group, origins, appended);
}

}  // namespace earnserve
