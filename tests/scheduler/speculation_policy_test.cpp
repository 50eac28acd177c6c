// The speculation policy's decision rule on synthetic cost and acceptance tables: a compute-bound
// machine (forward time proportional to rows) never speculates, even with every level accepted;
// a weight-bound one (time flat in rows) speculates when levels are accepted and stops once
// they are not; the tree's depth and width follow the acceptance per level and per width; the
// token budget and the draft's prefill enter the prediction. Also the tables themselves
// (interpolation, online rescaling of calibrated points, running acceptance) and the start-up
// calibration's time budget on a real model.
#include "scheduler/speculative/speculation_policy.h"

#include <gtest/gtest.h>

#include "scheduler/engine.h"
#include "scheduler/speculative/calibration.h"
#include "scheduler/speculative/speculation_cost_model.h"
#include "test_paths.h"

namespace earnserve {
namespace {

using Mode = AcceptanceTable::Mode;

// time(rows) = fixed + per_row * rows, calibrated at 1, 8, 32, ..., 2048 rows.
StepCostTable linear_costs(double fixed, double per_row) {
  StepCostTable t;
  for (int rows = 1; rows <= 2048; rows *= 4) t.calibrate(rows, fixed + per_row * rows);
  return t;
}

// Every level at generated-token index `position` accepted (or rejected) `times` times.
void observe(AcceptanceTable& a, Mode mode, int n, int k, int position, bool accepted,
             int times = 300) {
  for (int i = 0; i < times; ++i) a.record(mode, n, k, position, 1, accepted ? 1 : 0, false);
}

PolicyInput one_request(int k, int position, int max_depth, int max_n) {
  PolicyInput in;
  in.step_rows = k;
  in.step_levels = 1;
  in.row_budget = 2048;
  PolicyRequest r;
  r.beam_width = k;
  r.position = position;
  r.max_depth = max_depth;
  r.max_draft_beams = max_n;
  in.requests.push_back(r);
  return in;
}

TEST(StepCostTableTest, InterpolatesBetweenPointsAndExtrapolatesThroughTheOrigin) {
  StepCostTable t;
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.predict(10), 0.0);
  t.calibrate(8, 1.0);
  t.calibrate(32, 4.0);
  EXPECT_DOUBLE_EQ(t.predict(8), 1.0);
  EXPECT_DOUBLE_EQ(t.predict(20), 2.5);
  EXPECT_DOUBLE_EQ(t.predict(64), 8.0);  // beyond the last point: proportional
  EXPECT_DOUBLE_EQ(t.predict(2), 1.0);   // below the first: flat
  EXPECT_EQ(t.predict(0), 0.0);
}

TEST(StepCostTableTest, OnlineStepsRescaleCalibratedPointsNearby) {
  StepCostTable t;
  t.calibrate(8, 1.0);
  t.calibrate(128, 10.0);
  // Serving steps at 8 rows take twice the calibrated time: the 128-row point follows.
  for (int i = 0; i < 5; ++i) t.record(8, 2.0);
  EXPECT_DOUBLE_EQ(t.predict(8), 2.0);
  EXPECT_DOUBLE_EQ(t.predict(128), 20.0);
  EXPECT_EQ(t.num_records(), 5);
  // Once measured online, a bucket is its own running average.
  for (int i = 0; i < 3; ++i) t.record(128, 12.0);
  EXPECT_DOUBLE_EQ(t.predict(128), 12.0);
}

TEST(StepCostTableTest, MoreRowsNeverCostLess) {
  StepCostTable t;
  t.calibrate(8, 1.0);
  t.calibrate(128, 3.0);
  t.record(32, 5.0);  // a slow step under load, between two calibrated points
  EXPECT_DOUBLE_EQ(t.predict(32), 5.0);
  EXPECT_GE(t.predict(128), t.predict(32));
  EXPECT_GE(t.predict(64), t.predict(32));
}

TEST(AcceptanceTableTest, StartsOptimisticAndFollowsTheRoundsSeen) {
  AcceptanceTable a;
  EXPECT_DOUBLE_EQ(a.probability(Mode::kStrict, 10, 10, 0), 1.0);
  EXPECT_DOUBLE_EQ(a.expected_levels(Mode::kStrict, 10, 10, 0, 3), 3.0);
  // A round of depth 3 accepting 1: level 0 accepted, level 1 rejected, level 2 unseen.
  a.record(Mode::kStrict, 10, 10, 0, 3, 1, false);
  EXPECT_DOUBLE_EQ(a.probability(Mode::kStrict, 10, 10, 0), 1.0);
  EXPECT_DOUBLE_EQ(a.probability(Mode::kStrict, 10, 10, 1), 0.5);
  EXPECT_DOUBLE_EQ(a.probability(Mode::kStrict, 10, 10, 2), 1.0);
  EXPECT_DOUBLE_EQ(a.expected_levels(Mode::kStrict, 10, 10, 0, 3), 1.0 + 0.5 + 0.5);
  // Other modes and widths are apart.
  EXPECT_DOUBLE_EQ(a.probability(Mode::kRelaxed, 10, 10, 1), 1.0);
  EXPECT_DOUBLE_EQ(a.probability(Mode::kStrict, 40, 10, 1), 1.0);
  // A search that ended inside the round rejected nothing.
  a.record(Mode::kStrict, 40, 10, 0, 3, 1, true);
  EXPECT_DOUBLE_EQ(a.probability(Mode::kStrict, 40, 10, 1), 1.0);
  observe(a, Mode::kStrict, 10, 10, 5, false);
  EXPECT_LT(a.probability(Mode::kStrict, 10, 10, 5), 0.01);
}

TEST(SpeculationPolicyTest, NothingMeasuredMeansNoSpeculation) {
  const PolicyInput in = one_request(10, 1, 3, 40);
  const AcceptanceTable a;
  EXPECT_FALSE(decide_speculation(in, StepCostTable(), StepCostTable(), a).speculate);
  EXPECT_FALSE(decide_speculation(in, linear_costs(1, 0), StepCostTable(), a).speculate);
}

TEST(SpeculationPolicyTest, ComputeBoundForwardsNeverPayEvenWithEveryLevelAccepted) {
  // A CPU: the forward costs its rows (a small fixed part), the draft a quarter of the target.
  const StepCostTable target = linear_costs(0.1e-3, 0.15e-3);
  const StepCostTable draft = linear_costs(0.05e-3, 0.04e-3);
  const AcceptanceTable optimistic;  // every level accepted
  for (int k : {1, 10, 20}) {
    const PolicyDecision d =
        decide_speculation(one_request(k, 1, 4, 40), target, draft, optimistic);
    EXPECT_FALSE(d.speculate) << "K " << k;
    EXPECT_GT(d.plain_levels_per_s, d.spec_levels_per_s) << "K " << k;
  }
}

TEST(SpeculationPolicyTest, WeightBoundForwardsSpeculateWhileLevelsAreAccepted) {
  // A GPU and a 7B target: a forward of up to 2048 rows costs its weight read, a draft forward a
  // twentieth.
  const StepCostTable target = linear_costs(20e-3, 1e-6);
  const StepCostTable draft = linear_costs(1e-3, 0.1e-6);
  AcceptanceTable a;
  for (int pos = 0; pos < 8; ++pos) observe(a, Mode::kStrict, 40, 10, pos, true);
  const PolicyDecision d = decide_speculation(one_request(10, 1, 4, 40), target, draft, a);
  ASSERT_TRUE(d.speculate);
  EXPECT_EQ(d.shape.depth, 4);  // every level pays: the deepest tree
  EXPECT_GT(d.spec_levels_per_s, 4 * d.plain_levels_per_s);

  // The same machine once the draft's levels are rejected at every width: plain steps.
  AcceptanceTable rejected;
  for (int n : {10, 20, 40, 80}) {
    for (int pos = 0; pos < 8; ++pos) observe(rejected, Mode::kStrict, n, 10, pos, false);
  }
  EXPECT_FALSE(decide_speculation(one_request(10, 1, 4, 40), target, draft, rejected).speculate);
}

TEST(SpeculationPolicyTest, DepthStopsWhereAcceptanceEnds) {
  const StepCostTable target = linear_costs(20e-3, 1e-6);
  const StepCostTable draft = linear_costs(2e-3, 1e-6);
  AcceptanceTable a;
  for (int n : {10, 20, 40}) {
    observe(a, Mode::kStrict, n, 10, 1, true);   // the level at index 1 is always accepted
    observe(a, Mode::kStrict, n, 10, 2, false);  // the one after never
  }
  const PolicyDecision d = decide_speculation(one_request(10, 1, 4, 40), target, draft, a);
  ASSERT_TRUE(d.speculate);
  EXPECT_EQ(d.shape.depth, 1);  // deeper levels cost draft forwards and never come back
}

TEST(SpeculationPolicyTest, WidthFollowsAcceptancePerWidth) {
  const StepCostTable target = linear_costs(20e-3, 1e-6);
  const StepCostTable draft = linear_costs(1e-3, 1e-6);
  AcceptanceTable a;
  // N = K drafts miss the target's beams; N = 4K drafts contain them.
  for (int pos = 0; pos < 8; ++pos) {
    observe(a, Mode::kStrict, 10, 10, pos, false);
    observe(a, Mode::kStrict, 20, 10, pos, false);
    observe(a, Mode::kStrict, 40, 10, pos, true);
  }
  const PolicyDecision d = decide_speculation(one_request(10, 0, 2, 40), target, draft, a);
  ASSERT_TRUE(d.speculate);
  const int n = draft_beams_for(d.shape, one_request(10, 0, 2, 40).requests[0]);
  EXPECT_GT(n, 20);
  EXPECT_LE(n, 40);
  // The request's own N caps the grid: with N = 20 allowed nothing pays.
  EXPECT_FALSE(decide_speculation(one_request(10, 0, 2, 20), target, draft, a).speculate);
}

TEST(SpeculationPolicyTest, AMarginalGainIsNotWorthATree) {
  // Two levels (a tree of K nodes, then K recomputed rows) for the price of 1.92 plain steps: a
  // 4% gain with every level accepted, under kMinGain, so no tree.
  StepCostTable target;
  target.calibrate(10, 1.0);
  target.calibrate(30, 1.92);
  StepCostTable draft;
  draft.calibrate(1, 1e-9);
  const AcceptanceTable optimistic;
  const PolicyDecision d = decide_speculation(one_request(10, 1, 1, 10), target, draft, optimistic);
  EXPECT_FALSE(d.speculate);
  EXPECT_GT(d.spec_levels_per_s, d.plain_levels_per_s);
}

TEST(SpeculationPolicyTest, NoRowBudgetMeansNoTree) {
  const StepCostTable target = linear_costs(20e-3, 1e-6);
  const StepCostTable draft = linear_costs(1e-3, 0.1e-6);
  PolicyInput in = one_request(10, 1, 4, 40);
  in.row_budget = 5;  // less than one level of K draft beams
  const PolicyDecision d = decide_speculation(in, target, draft, AcceptanceTable());
  EXPECT_FALSE(d.speculate);
  EXPECT_EQ(d.spec_levels_per_s, 0.0);
}

TEST(SpeculationPolicyTest, TheDraftsPrefillCountsAgainstATree) {
  // Flat target forwards, a draft whose cost grows with its rows: with the draft's KV in place a
  // tree pays, but not when the draft must first prefill a long prompt.
  const StepCostTable target = linear_costs(10e-3, 1e-6);
  const StepCostTable draft = linear_costs(0.1e-3, 50e-6);
  AcceptanceTable a;
  for (int pos = 0; pos < 8; ++pos) observe(a, Mode::kStrict, 10, 10, pos, true);
  PolicyInput in = one_request(10, 1, 1, 10);
  EXPECT_TRUE(decide_speculation(in, target, draft, a).speculate);
  in.requests[0].draft_prefill_rows = 1000;
  EXPECT_FALSE(decide_speculation(in, target, draft, a).speculate);
}

TEST(SpeculationPolicyTest, OtherRequestsInTheStepShareItsCost) {
  // A batch of 31 other requests: the plain step yields 32 levels; a tree adds rows to a forward
  // that is now compute-bound, for one request's extra levels.
  StepCostTable target;
  target.calibrate(10, 10e-3);
  target.calibrate(320, 10e-3);
  target.calibrate(2048, 64e-3);
  const StepCostTable draft = linear_costs(1e-3, 0.1e-6);
  const AcceptanceTable optimistic;
  PolicyInput alone = one_request(10, 1, 3, 40);
  EXPECT_TRUE(decide_speculation(alone, target, draft, optimistic).speculate);
  PolicyInput batch = alone;
  batch.step_rows = 320;
  batch.step_levels = 32;
  EXPECT_FALSE(decide_speculation(batch, target, draft, optimistic).speculate);
}

TEST(CalibrationTest, StaysWithinItsBudgetAndMeasuresUpToTheRowsAllowed) {
  EngineOptions o;
  o.model_dir = testing::tiny_rec_dir();
  o.kv_cache_memory_bytes = 8ll << 20;
  auto executor = Executor::create(o);
  ASSERT_TRUE(executor.ok()) << executor.status().to_string();
  BlockManager blocks((*executor)->kv_groups(), (*executor)->num_blocks_per_group(), o.block_size,
                      true);
  CalibrationOptions none;
  none.budget_seconds = 0;
  StepCostTable empty;
  const CalibrationResult r0 = calibrate_forwards(**executor, blocks, 512, none, empty);
  EXPECT_EQ(r0.max_rows, 0);
  EXPECT_TRUE(empty.empty());

  CalibrationOptions some;
  some.budget_seconds = 30;  // generous: every row count up to max_rows
  StepCostTable table;
  const CalibrationResult r = calibrate_forwards(**executor, blocks, 32, some, table);
  EXPECT_EQ(r.max_rows, 32);
  EXPECT_EQ(r.num_forwards, 1 + 3 * some.repeats);  // warm-up, then 1, 8 and 32 rows
  EXPECT_GT(table.predict(32), 0.0);
  EXPECT_EQ(blocks.num_sequences(), 0);  // the scratch sequences are gone
  EXPECT_EQ(blocks.usage(), 0.0);
}

}  // namespace
}  // namespace earnserve

namespace earnserve {
namespace {

TEST(SpeculationPolicyTest, MeasuredTreeStepsSlowerThanPredictedScaleEveryTree) {
  // A tree predicted at 1.5x the plain step's levels per second is not taken once tree steps
  // have measured twice their predicted time.
  const StepCostTable target = linear_costs(20e-3, 1e-6);
  const StepCostTable draft = linear_costs(10e-3, 1e-6);
  PolicyInput in = one_request(10, 1, 1, 10);
  const AcceptanceTable optimistic;
  const PolicyDecision d = decide_speculation(in, target, draft, optimistic);
  ASSERT_TRUE(d.speculate);
  EXPECT_GT(d.spec_seconds, 0.0);
  in.tree_cost_factor = 2.0;
  const PolicyDecision slower = decide_speculation(in, target, draft, optimistic);
  EXPECT_FALSE(slower.speculate);
  EXPECT_NEAR(slower.spec_levels_per_s, d.spec_levels_per_s / 2, 1e-9);
  EXPECT_DOUBLE_EQ(slower.spec_seconds, d.spec_seconds);  // the tables' own prediction
}

}  // namespace
}  // namespace earnserve
