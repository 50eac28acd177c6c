#include "scheduler/speculative/speculation_cost_model.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>

namespace earnserve {

int StepCostTable::bucket_of(int rows) {
  const int b = std::bit_width(static_cast<unsigned>(std::max(rows, 1))) - 1;  // floor(log2)
  return std::min(b, kNumBuckets - 1);
}

void StepCostTable::update(Point& p, double rows, double seconds) {
  ++p.count;
  const double w = 1.0 / static_cast<double>(std::min<int64_t>(p.count, kWindow));
  p.rows += (rows - p.rows) * w;
  p.seconds += (seconds - p.seconds) * w;
}

void StepCostTable::calibrate(int rows, double seconds) {
  if (rows <= 0 || !(seconds >= 0)) return;
  update(calibrated_[bucket_of(rows)], rows, seconds);
}

void StepCostTable::record(int rows, double seconds) {
  if (rows <= 0 || !(seconds >= 0)) return;
  update(online_[bucket_of(rows)], rows, seconds);
  ++num_records_;
}

bool StepCostTable::empty() const {
  for (int b = 0; b < kNumBuckets; ++b) {
    if (calibrated_[b].count > 0 || online_[b].count > 0) return false;
  }
  return true;
}

double StepCostTable::predict(int rows) const {
  if (rows <= 0) return 0.0;
  // Online points as measured; calibrated-only buckets rescaled by the nearest bucket that has
  // both (start-up forwards see a short context and an idle machine; serving steps do not).
  std::vector<std::pair<double, double>> points;
  for (int b = 0; b < kNumBuckets; ++b) {
    if (online_[b].count > 0) {
      points.emplace_back(online_[b].rows, online_[b].seconds);
      continue;
    }
    if (calibrated_[b].count == 0) continue;
    double scale = 1.0;
    int best = kNumBuckets;
    for (int o = 0; o < kNumBuckets; ++o) {
      if (online_[o].count == 0 || calibrated_[o].count == 0 || calibrated_[o].seconds <= 0) {
        continue;
      }
      if (std::abs(o - b) < best) {
        best = std::abs(o - b);
        scale = online_[o].seconds / calibrated_[o].seconds;
      }
    }
    points.emplace_back(calibrated_[b].rows, calibrated_[b].seconds * scale);
  }
  if (points.empty()) return 0.0;
  std::sort(points.begin(), points.end());
  // More rows never cost less: buckets measured under different loads must not say otherwise.
  for (size_t i = 1; i < points.size(); ++i) {
    points[i].second = std::max(points[i].second, points[i - 1].second);
  }
  const double x = rows;
  if (x <= points.front().first) return points.front().second;
  if (x >= points.back().first) return points.back().second * x / points.back().first;
  for (size_t i = 1; i < points.size(); ++i) {
    const auto& [x1, y1] = points[i];
    if (x > x1) continue;
    const auto& [x0, y0] = points[i - 1];
    return x1 == x0 ? y1 : y0 + (y1 - y0) * (x - x0) / (x1 - x0);
  }
  return points.back().second;
}

int AcceptanceTable::width_bucket(int num_draft_beams, int beam_width) {
  const int k = std::max(beam_width, 1);
  if (num_draft_beams <= k) return 0;
  if (num_draft_beams <= 2 * k) return 1;
  if (num_draft_beams <= 4 * k) return 2;
  return 3;
}

const AcceptanceTable::Cell& AcceptanceTable::cell(Mode mode, int bucket, int position) const {
  const int p = std::clamp(position, 0, kNumPositions - 1);
  return cells_[(static_cast<int>(mode) * kNumWidthBuckets + bucket) * kNumPositions + p];
}

AcceptanceTable::Cell& AcceptanceTable::cell(Mode mode, int bucket, int position) {
  const int p = std::clamp(position, 0, kNumPositions - 1);
  return cells_[(static_cast<int>(mode) * kNumWidthBuckets + bucket) * kNumPositions + p];
}

double AcceptanceTable::probability(Mode mode, int num_draft_beams, int beam_width,
                                    int position) const {
  return cell(mode, width_bucket(num_draft_beams, beam_width), position).mean;
}

double AcceptanceTable::expected_levels(Mode mode, int num_draft_beams, int beam_width,
                                        int position, int depth) const {
  const int bucket = width_bucket(num_draft_beams, beam_width);
  double reach = 1.0, expected = 0.0;
  for (int d = 0; d < depth; ++d) {
    reach *= cell(mode, bucket, position + d).mean;
    expected += reach;
  }
  return expected;
}

void AcceptanceTable::record(Mode mode, int num_draft_beams, int beam_width, int position,
                             int depth, int accepted, bool search_ended) {
  const int bucket = width_bucket(num_draft_beams, beam_width);
  auto observe = [&](int level, double accepted_level) {
    Cell& c = cell(mode, bucket, position + level);
    ++c.count;
    const double n = std::min(static_cast<double>(c.count) + kPriorWeight, double{kWindow});
    c.mean += (accepted_level - c.mean) / n;
    ++num_observations_;
  };
  const int kept = std::min(accepted, depth);
  for (int d = 0; d < kept; ++d) observe(d, 1.0);
  if (kept < depth && !search_ended) observe(kept, 0.0);
}

}  // namespace earnserve
