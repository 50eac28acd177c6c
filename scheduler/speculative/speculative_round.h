// SpeculativeRounds: the engine's side of speculative beam search (AtSpeed, arXiv 2410.05165):
// before a step's forward it has the draft (scheduler/speculative/beam_drafter.h) draft a tree for
// every speculative request whose live beams all run to their end, and gives the tree's nodes
// target KV slots and rows in the step; after the forward it verifies each round (strict top-K
// or relaxed sampling, scheduler/speculative/speculative_verify.h), applies the accepted beam
// steps to the request's search and rolls the draft beams forward. See speculative_round.cpp.
//
// Requests of policy auto (SpeculativeParams::Policy) draft only when the speculation policy
// (scheduler/speculative/speculation_policy.h) predicts that a tree pays, from the target's step
// times (record_target_step), the draft's forward times and the acceptance of past rounds; a
// step they take without a tree is an ordinary beam step (steps_plainly), counted as a plain
// step with its reason.
//
// Ownership: the rounds of the current step (drafted nodes and their per-beam subtrees, which
// the step's DraftedRows borrow until the next prepare()); borrows the drafter, the target's
// block manager and the scheduler from the engine. Engine thread only; not thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cache/block_manager.h"
#include "core/status.h"
#include "scheduler/executor/executor.h"
#include "scheduler/scheduler.h"
#include "scheduler/speculative/beam_drafter.h"
#include "scheduler/speculative/calibration.h"
#include "scheduler/speculative/speculation_cost_model.h"
#include "scheduler/speculative/speculation_policy.h"

namespace earnserve {

class SpeculativeRounds {
 public:
  SpeculativeRounds(BeamDrafter& drafter, BlockManager& block_manager, Scheduler& scheduler,
                    int max_num_batched_tokens, int64_t vocab_size);
  SpeculativeRounds(const SpeculativeRounds&) = delete;
  SpeculativeRounds& operator=(const SpeculativeRounds&) = delete;

  // Drafts a tree for every speculative request whose live beams all run to their end in
  // `step`, gives its nodes target KV slots after the beams' tokens and attaches them to the
  // step (SchedulerStep::trees). Forgets the previous step's rounds.
  Status prepare(SchedulerStep& step);

  // Whether prepare() gave the request a round this step.
  bool has_round(const SequenceGroup& group) const { return rounds_.count(&group) != 0; }
  // Whether the request (policy auto) takes this step as an ordinary beam step: no tree, no
  // draft beams; the caller steps it as a plain beam search (exactly the target's step).
  bool steps_plainly(const SequenceGroup& group) const { return plain_.count(&group) != 0; }

  // What verifying a round did to the request's search.
  struct Outcome {
    bool done = false;          // the beam search is over (the caller finishes the request)
    int64_t num_generated = 0;  // tokens the applied beam steps chose, over all live beams
  };
  // Verifies the request's round: `rows[b]` holds live beam b's logits at its last token, then
  // at its tree nodes ([1 + subtree, vocab]). Applies the target's accepted beam steps.
  // REQUIRES: has_round(group).
  Outcome verify(SequenceGroup& group, std::vector<std::span<float>>& rows);
  // An ordinary step of a relaxed speculative search (no drafted tree): sampled as relaxed
  // verification of an empty tree, not counted as a round. `rows[b]`: [vocab].
  Outcome sample_relaxed(SequenceGroup& group, std::vector<std::span<float>>& rows);

  // Frees a speculative request's draft pages (finish, abort, preemption).
  void release(SequenceGroup& group) { drafter_.release(group); }

  // Start-up calibration of the target's and the draft's forward times (calibration.h); the
  // target's is skipped under tensor parallelism (online measurements only).
  CalibrationResult calibrate(Executor& target, BlockManager& target_blocks,
                              const CalibrationOptions& options);
  // An online measurement: a target step of `rows` rows took `seconds` (forward and selection).
  // `prompt_rows`: the step computed prompt chunks (not entered in the cost table). After a step
  // with policy-auto trees, it also updates the tree cost factor (PolicyInput).
  void record_target_step(int rows, double seconds, bool prompt_rows);

  int64_t num_rounds() const { return num_rounds_; }
  int64_t num_accepted_steps() const { return num_accepted_steps_; }
  int64_t num_plain_steps_cost() const { return num_plain_steps_cost_; }
  int64_t num_plain_steps_no_room() const { return num_plain_steps_no_room_; }
  const StepCostTable& target_costs() const { return target_costs_; }
  const AcceptanceTable& acceptance() const { return acceptance_; }
  double tree_cost_factor() const { return tree_cost_factor_; }
  // Seconds prepare() spent deciding (grouping, the policy, plain-step bookkeeping), drafting
  // excluded: what policy auto costs a step in which it drafts nothing.
  double planning_seconds() const { return planning_seconds_; }

 private:
  // One speculative request's round in the current step.
  enum class Plain { kNo, kCost, kNoRoom };  // why a policy-auto request steps without a tree
  struct Round {
    int num_draft_beams = 0;
    int position = 0;                        // generated tokens before the round
    std::vector<DraftTreeNode> nodes;        // drafted nodes: tree node num_live + i
    std::vector<DraftExpansion> expansions;  // relaxed verification: the draft's q
    // Per live beam: its subtree (ScheduledSeq::tree_tokens / tree_parents) and their tree nodes.
    std::vector<std::vector<int32_t>> tokens, parents, node_ids;
    void reset(int num_live);
  };
  // Splits a drafted tree into one subtree per live beam and gives the nodes KV slots; a round
  // without room for its tree verifies the live beams' own step only.
  void attach_tree(SequenceGroup& group, Round& round);
  Outcome apply(SequenceGroup& group, Round& round, std::vector<std::span<float>>& rows,
                bool count_round);
  // Counts a verified round in the request's and the engine's statistics and the acceptance
  // table.
  void account(SequenceGroup& group, const Round& round, int num_accepted, bool search_ended);
  // Counts a plain step of a policy-auto request.
  void account_plain(SequenceGroup& group, Plain reason);
  // The policy's choice for this step's auto requests (`auto_groups`, jobs[i] is auto_groups[i]'s):
  // sets each drafting job's N and depth and returns, per job, why it does not draft (kNo: it
  // does). `budget_left` as in prepare().
  std::vector<Plain> plan_auto(const SchedulerStep& step,
                               std::span<SequenceGroup* const> auto_groups,
                               std::span<DraftJob> jobs, int& budget_left);

  // Constant after construction.
  BeamDrafter& drafter_;
  BlockManager& block_manager_;
  Scheduler& scheduler_;
  int max_num_batched_tokens_;
  int64_t vocab_size_;

  std::unordered_map<const SequenceGroup*, Round> rounds_;
  std::unordered_set<const SequenceGroup*> plain_;  // this step's plain auto requests
  StepCostTable target_costs_;
  AcceptanceTable acceptance_;
  int64_t num_rounds_ = 0;
  int64_t num_accepted_steps_ = 0;
  int64_t num_plain_steps_cost_ = 0;
  // The tree cost factor: measured / predicted time of steps with auto trees.
  double tree_cost_factor_ = 1.0;
  int64_t num_tree_steps_ = 0;
  double pending_predicted_seconds_ = 0;  // this step's trees, as predicted (0: none)
  double pending_draft_seconds_ = 0;      // this step's drafting, as measured
  int64_t num_plain_steps_no_room_ = 0;
  double planning_seconds_ = 0;
};

}  // namespace earnserve
