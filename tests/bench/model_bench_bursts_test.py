#!/usr/bin/env python3
"""bench/model_bench --bursts on a fixture model: the protocol bench/decode_interleaved.py drives.
A burst decodes greedily from where the last one stopped; 'prefill' and a burst that would
outgrow the positions start over from the prompt (so they repeat the first burst's ids); bad
commands get an error line and change nothing; end of input ends the process with status 0.

  python3 tests/bench/model_bench_bursts_test.py BUILD/bench/model_bench MODEL_DIR
"""

import json
import subprocess
import sys
import unittest

BINARY = MODEL = None


class BurstsTest(unittest.TestCase):

  def talk(self, commands, decode_tokens=8):
    proc = subprocess.run(
        [BINARY, "--model", MODEL, "--prompt-len", "8", "--decode-tokens", str(decode_tokens),
         "--threads", "1", "--bursts"],
        input="".join(c + "\n" for c in commands), capture_output=True, text=True, timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

  def test_bursts_continue_and_start_over(self):
    lines = self.talk(["decode 4", "decode 4", "decode 4", "prefill", "decode 4", "decode 2"])
    self.assertEqual([d["measure"] for d in lines],
                     ["ready", "burst", "burst", "burst", "prefilled", "burst", "burst"])
    ready, first, second, third, prefilled, fourth, fifth = lines
    self.assertEqual(ready["max_burst"], 8)
    self.assertEqual(len(first["ids"]), 4)
    self.assertEqual(first["tokens"], 4)
    self.assertGreater(first["tokens_per_s"], 0)
    # The third burst would pass 8 + 8 positions, so it starts over: the first burst's ids.
    self.assertEqual(third["ids"], first["ids"])
    self.assertEqual(fourth["ids"], first["ids"])
    # Greedy continuation: the second burst goes on from the first.
    self.assertEqual(fifth["ids"], second["ids"][:2])
    self.assertIsInstance(prefilled["first_id"], int)

  def test_bad_commands_are_errors_that_change_nothing(self):
    lines = self.talk(["decode 3", "decode 0", "decode 9", "decode", "jump 2", "decode 3"])
    measures = [d["measure"] for d in lines]
    self.assertEqual(measures, ["ready", "burst", "error", "error", "error", "error", "burst"])
    self.assertIn("expected 'decode K' with K in [1, 8]", lines[2]["message"])
    # The bursts around the errors are one greedy sequence: 6 ids, as one burst of 6 gives.
    whole = self.talk(["decode 6"])[1]["ids"]
    self.assertEqual(lines[1]["ids"] + lines[6]["ids"], whole)

  def test_quit_ends_at_once(self):
    lines = self.talk(["quit", "decode 2"])
    self.assertEqual([d["measure"] for d in lines], ["ready"])


if __name__ == "__main__":
  BINARY, MODEL = sys.argv[1], sys.argv[2]
  unittest.main(argv=sys.argv[:1])
