#!/usr/bin/env python3
"""Training throughput of tools/train_rec.py's recipe on this machine, in windows per second.

Times optimizer steps of the full variant (teacher forcing on every item, the packed windows
train_rec.py builds) at the given threads and batch sizes, from a checkpoint or from a fresh
model of train_rec's default shape. About a minute. Use it before planning a training run: the
rate on a machine shared with builds can be a tenth of the idle one (tools/TRAINING.md).

  .venv/bin/python tools/train_speed.py --init models/beauty-full --threads 1,2 --batch-sizes 16,64
Prints one JSON line per configuration.
"""
import argparse
import json
import os
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import beauty_data
import rec_tokenizer
import train_rec as tr


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR)
    ap.add_argument("--init", default="", help="checkpoint (default: a fresh 8x128 model)")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--batch-sizes", default="16", help="comma-separated windows per step")
    ap.add_argument("--windows", type=int, default=480, help="timed windows per configuration")
    ap.add_argument("--users", type=int, default=3000, help="sequences packed for the timing")
    return ap.parse_args()


def main():
    args = parse_args()
    index = beauty_data.load_index(args.data)
    tok, _, _ = rec_tokenizer.build_tokenizer(index, tr.load_titles(args.data), 1024, 0)
    code_ids = {k: [tok.token_to_id(c) for c in codes] for k, codes in index.items()}
    seqs = tr.user_sequences(args.data, True)
    random.Random(0).shuffle(seqs)
    packer = tr.Packer(code_ids, None)
    packed = [packer.full(items, first) for s in seqs[:args.users] for items, first in tr.windows(s)]
    order = sorted(range(len(packed)), key=lambda i: len(packed[i][0]))
    for threads in [int(x) for x in args.threads.split(",")]:
        for batch in [int(x) for x in args.batch_sizes.split(",")]:
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            if args.init:
                model = LlamaForCausalLM.from_pretrained(args.init, dtype=torch.float32)
            else:
                model = LlamaForCausalLM(LlamaConfig(
                    vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=384,
                    num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=4,
                    max_position_embeddings=512, tie_word_embeddings=False))
            tr.add_dropout(model, 0.1)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            batches = [order[i:i + batch] for i in range(0, len(order), batch)]
            random.Random(1).shuffle(batches)

            def step(rows):
                loss, _ = tr.batch_loss(model, tr.make_batch(packed, rows, None, "cpu"), None)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for rows in batches[:2]:
                step(rows)  # warm-up
            timed = batches[2:2 + max(4, args.windows // batch)]
            t0 = time.time()
            for rows in timed:
                step(rows)
            seconds = time.time() - t0
            windows = sum(len(r) for r in timed)
            print(json.dumps({"threads": threads, "batch_size": batch, "windows": windows,
                              "seconds": round(seconds, 2),
                              "windows_per_second": round(windows / seconds, 1),
                              "load_average_1m": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
