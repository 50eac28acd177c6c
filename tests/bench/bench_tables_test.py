#!/usr/bin/env python3
"""bench/decode_pairs_table.py and bench/llm_bench_table.py on made-up JSON lines: the two
bandwidth levels are told apart (and one level is left whole), pooled medians, pair by pair
ratios, the medians over rounds and the level by level comparison come out as the samples say.
Stdlib only.

  python3 tests/bench/bench_tables_test.py
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import decode_pairs_table  # noqa: E402
import llm_bench_table  # noqa: E402


def decode_line(engine, dtype, pair, each, gb_per_token=2.0):
  line = {"measure": "decode", "engine": engine, "model": "m", "weight_dtype": dtype,
          "pair": pair, "tokens_per_s": max(each), "tokens_per_s_each": each}
  if engine == "earnserve":
    line["weight_gb_per_s"] = max(each) * gb_per_token
  return line


class LevelsTest(unittest.TestCase):

  def test_two_levels_are_split_at_the_gap(self):
    slow, fast = decode_pairs_table.levels([13.1, 21.8, 12.9, 22.4, 13.6, 20.9, 13.3])
    self.assertEqual(sorted(slow), [12.9, 13.1, 13.3, 13.6])
    self.assertEqual(sorted(fast), [20.9, 21.8, 22.4])

  def test_one_level_is_not_split(self):
    # A 10% spread is noise within a level, not two levels.
    self.assertIsNone(decode_pairs_table.levels([30.0, 31.0, 32.0, 33.0, 31.5, 30.5]))

  def test_a_lone_outlier_is_not_a_level(self):
    self.assertIsNone(decode_pairs_table.levels([31.0, 32.0, 31.5, 51.4]))


class TableTest(unittest.TestCase):

  def run_table(self, rows, table=decode_pairs_table):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
      for row in rows:
        f.write(json.dumps(row) + "\n")
      path = f.name
    try:
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        self.assertEqual(table.main(path), 0)
      return out.getvalue()
    finally:
      os.unlink(path)

  def test_ahead_at_each_level_although_the_pooled_medians_say_behind(self):
    # earnserve drew 2 fast seconds of 8 and llama.cpp 5, so the pooled medians (14 against 17)
    # and the pairs' (0.97x, 0.82x) put it behind, yet it is ahead in both levels: 14 against 12
    # and 22 against 17.
    rows = [{"measure": "machine", "lscpu_model": "X", "threads": 2, "loadavg": "0 0 0"},
            decode_line("earnserve", "bf16", 0, [14.0, 14.0, 14.0, 22.0]),
            decode_line("llama.cpp", "bf16", 0, [12.0, 12.0, 17.0, 17.0]),
            decode_line("llama.cpp", "bf16", 1, [17.0, 17.0, 12.0, 17.0]),
            decode_line("earnserve", "bf16", 1, [14.0, 22.0, 14.0, 14.0])]
    out = self.run_table(rows)
    self.assertIn("pooled medians 0.82x; pair by pair median 0.89x", out)
    self.assertIn("earnserve ahead in 0 of 2 pairs", out)
    self.assertIn("slow level 14.0 (6 decodes, 28.0 GB/s) against 12.0 (3, 24.0 GB/s) = 1.17x",
                  out)
    self.assertIn("fast level 22.0 (2 decodes, 44.0 GB/s) against 17.0 (5, 34.0 GB/s) = 1.29x",
                  out)

  def test_int8_is_compared_with_q8_0_and_one_level_is_said(self):
    rows = [decode_line("earnserve", "i8", 0, [60.0, 62.0, 61.0]),
            decode_line("llama.cpp", "q8_0", 0, [45.0, 46.0, 44.0])]
    out = self.run_table(rows)
    self.assertIn("m int8: earnserve / llama.cpp Q8_0 pooled medians 1.36x", out)
    self.assertIn("one level only in earnserve and llama.cpp's samples", out)

  def test_interleaved_summaries_make_their_own_table(self):
    summary = {"measure": "summary", "model": "m", "ours_dtype": "bf16", "their_dtype": "bf16",
               "rounds": 20, "median_ratio": 1.234, "min_ratio": 1.05, "max_ratio": 1.31,
               "rounds_ahead": 20, "earnserve_median_burst_tokens_per_s": 48.04,
               "llama.cpp_median_burst_tokens_per_s": 39.03, "same_leading_ids_median": 21,
               "ids_per_round": 33}
    out = self.run_table([summary])
    self.assertIn("| m | BF16 | BF16 | 20 | 48.0 | 39.0 | 1.23x (1.05-1.31) | 20 of 20 | 21 of 33 |",
                  out)
    self.assertNotIn("Alternating pairs", out)

  def test_llm_bench_table_medians_of_rounds_and_of_every_timed_run(self):
    rows = []
    for r, (ours, theirs) in enumerate([([14.0, 22.0], [12.0, 17.0]), ([14.0, 14.0], [17.0, 17.0]),
                                         ([22.0, 14.0], [12.0, 17.0])]):
      for line in (decode_line("earnserve", "bf16", 0, ours), decode_line("llama.cpp", "bf16", 0,
                                                                             theirs)):
        line.update({"round": r, "prompt_len": 128})
        rows.append(line)
    out = self.run_table(rows, llm_bench_table)
    # Best of each round: 22, 14, 22 against 17, 17, 17.
    self.assertIn("decode tok/s: bf16 x llama.cpp bf16 1.29", out)
    # Every timed run: 14 (of 14, 14, 14, 14, 22, 22) against 17 (of 12, 12, 17, 17, 17, 17).
    self.assertIn("| decode tok/s, every timed run | - | 14.0 (14-20) |", out)
    self.assertIn("decode, every timed run: bf16 x llama.cpp bf16 0.82", out)
    self.assertIn("decode bf16 x llama.cpp bf16 by bandwidth level: slow 14.0 against 12.0 "
                  "(4 and 2 decodes) = 1.17x; fast 22.0 against 17.0 (2 and 4 decodes) = 1.29x", out)


if __name__ == "__main__":
  unittest.main()
