// The measurements behind the speculation policy (scheduler/speculative/speculation_policy.h):
//  - StepCostTable: a model forward's wall time as a function of the rows (query tokens) it
//    computes, calibrated at start-up with a few timed forwards and refined online from every
//    step (running averages per row bucket; a bucket never seen online keeps its calibrated
//    value, rescaled by the online/calibrated ratio of the nearest bucket that has both);
//  - AcceptanceTable: how often a drafted level is accepted, given that the levels above it were,
//    per verification mode, per tree width (N relative to the beam width K) and per position in
//    the search (the level's generated-token index), as running averages over the rounds seen,
//    starting from an optimistic prior so that an untried tree is tried when the costs say that
//    it could pay.
// Plain data with value semantics; not thread-safe (the engine thread owns them).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace earnserve {

class StepCostTable {
 public:
  // Buckets cover 1 .. 2^(kNumBuckets - 1) rows and more (the last bucket takes the rest).
  static constexpr int kNumBuckets = 15;
  // Observations after which a bucket's average becomes exponential (adapts to load changes).
  static constexpr int kWindow = 64;

  // A start-up measurement: `rows` computed in `seconds`.
  void calibrate(int rows, double seconds);
  // An online measurement.
  void record(int rows, double seconds);
  // Predicted seconds for a forward of `rows` rows (0 rows: 0). Linear between known points
  // (each at least the one below it), linear through the origin beyond the largest, flat below
  // the smallest; 0 when empty.
  double predict(int rows) const;
  bool empty() const;
  int64_t num_records() const { return num_records_; }

 private:
  struct Point {
    double rows = 0, seconds = 0;
    int64_t count = 0;
  };
  static int bucket_of(int rows);
  static void update(Point& p, double rows, double seconds);

  std::array<Point, kNumBuckets> calibrated_{}, online_{};
  int64_t num_records_ = 0;
};

class AcceptanceTable {
 public:
  enum class Mode { kStrict = 0, kRelaxed = 1 };
  static constexpr int kNumWidthBuckets = 4;  // N <= K, <= 2K, <= 4K, more
  static constexpr int kNumPositions = 16;    // generated-token index, clipped
  static constexpr int kWindow = 256;
  // The prior: a drafted level is accepted with this probability, worth this many observations.
  static constexpr double kPriorAcceptance = 1.0;
  static constexpr double kPriorWeight = 1.0;

  static int width_bucket(int num_draft_beams, int beam_width);
  // P(the drafted level at generated-token index `position` is accepted | the levels above it in
  // the round were).
  double probability(Mode mode, int num_draft_beams, int beam_width, int position) const;
  // Expected accepted levels of a round drafting `depth` levels from generated-token index
  // `position` (the product rule over the levels).
  double expected_levels(Mode mode, int num_draft_beams, int beam_width, int position,
                         int depth) const;
  // A verified round: `depth` levels drafted from `position`, `accepted` of them accepted;
  // `search_ended`: the search finished inside the round (the level after the accepted ones was
  // not rejected, it was never needed).
  void record(Mode mode, int num_draft_beams, int beam_width, int position, int depth, int accepted,
              bool search_ended);
  int64_t num_observations() const { return num_observations_; }

 private:
  struct Cell {
    double mean = kPriorAcceptance;
    int64_t count = 0;
  };
  const Cell& cell(Mode mode, int bucket, int position) const;
  Cell& cell(Mode mode, int bucket, int position);

  std::vector<Cell> cells_ = std::vector<Cell>(2 * kNumWidthBuckets * kNumPositions);
  int64_t num_observations_ = 0;
};

}  // namespace earnserve
