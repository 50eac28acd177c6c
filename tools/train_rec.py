#!/usr/bin/env python3
"""Trains a generative recommender on Amazon Beauty (LC-Rec item codes) from scratch.

One recipe, two variants:
  --variant full                               plain causal Llama
  --variant earn --registers 4 --split-layer K EARN: prefix/suffix registers; layers >= K see
                                               only registers and generated tokens
Samples follow ../shared/datasets/README.md: every prefix of every train sequence (history up
to 20) -> the next item's 4 codes + EOS; the loss is on those 5 tokens only. The tokenizer is
built here (tools/rec_tokenizer.py). AdamW, linear warmup then cosine decay driven by whichever
runs out first, the planned epochs or --time-budget-minutes (the whole run, validation and
saving included, stays inside the budget). After each epoch (and when the budget stops a
partial one) Recall@10 / NDCG@10 on a fixed subset of the valid users, by catalogue-constrained
beam search with 10 beams; the best model so far is what --out holds.

--out gets a Hugging Face checkpoint the engine serves: config.json (architectures
["LlamaForCausalLM"], plus "earn" for EARN), model.safetensors, tokenizer.json,
tokenizer_config.json, recommendation.json, catalogue.json, titles.tsv, train_log.json.

Smoke run: .venv/bin/python tools/train_rec.py --variant full --out /tmp/rec-smoke \
    --time-budget-minutes 2 --max-train-samples 2000
"""
import argparse
import json
import math
import os
import random
import shutil
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import beauty_data
import rec_model
import rec_tokenizer
from earn_model import wrap_prompt

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR, help="Beauty data directory")
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--variant", choices=("full", "earn"), default="full")
    ap.add_argument("--registers", type=int, default=4, help="EARN: prefix and suffix registers each")
    ap.add_argument("--split-layer", type=int, default=1,
                    help="EARN: first layer that sees only registers and generated tokens")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--bpe-vocab", type=int, default=1024, help="BPE part of the vocabulary")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=30, help="upper bound; the time budget usually ends first")
    ap.add_argument("--time-budget-minutes", type=float, default=55.0)
    ap.add_argument("--max-train-samples", type=int, default=0, help="0: all (about 103k)")
    ap.add_argument("--val-users", type=int, default=500, help="valid users scored each epoch")
    ap.add_argument("--val-beams", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.variant == "earn" and not 0 <= args.split_layer <= args.layers:
        ap.error(f"--split-layer must be in [0, {args.layers}]")
    if args.variant == "earn" and args.registers < 1:
        ap.error("--registers must be at least 1 for EARN")
    return args


def load_titles(data_dir):
    path = os.path.join(data_dir, "titles.tsv")
    with open(path) as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]


def encode_samples(tok, index, samples, earn):
    """Token-id lists: [BOS] (registers) prompt (registers) codes EOS; the last 5 are targets."""
    texts = [beauty_data.build_prompt(index, history) for history, _ in samples]
    seqs = []
    for (_, target), enc in zip(samples, tok.encode_batch(texts)):
        ids = enc.ids if earn is None else wrap_prompt(enc.ids, earn, BOS_ID)
        seqs.append(ids + [tok.token_to_id(c) for c in index[target]] + [EOS_ID])
    return seqs


def shared_head(seqs, num_targets):
    """Length of the token prefix every sequence shares (kept short of the targets)."""
    head = min(len(s) for s in seqs) - num_targets - 1
    first = seqs[0]
    for s in seqs:
        n = 0
        while n < head and s[n] == first[n]:
            n += 1
        head = n
    return head


def make_batches(seqs, batch_size, rng):
    """Batches of similar length (little padding), in random order."""
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def batch_loss(model, seqs, rows, head, num_targets, earn, device):
    """Mean cross-entropy of the target tokens of seqs[rows] (right-padded batch)."""
    width = max(len(seqs[r]) for r in rows)
    ids = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    lengths = torch.tensor([len(seqs[r]) for r in rows])
    for i, r in enumerate(rows):
        ids[i, :len(seqs[r])] = torch.tensor(seqs[r])
    ids, lengths = ids.to(device), lengths.to(device)
    valid = torch.arange(width, device=device)[None] < lengths[:, None]
    keep = rec_model.keep_mask(ids, earn)
    pos = torch.arange(width, device=device)[None].expand(len(rows), width)
    split = earn["split_layer"] if earn is not None else None
    # The shared head once, broadcast to the batch as past keys (gradients sum back into it).
    cache = rec_model.KVCache(len(model.model.layers))
    rec_model.forward_hidden(model, ids[:1, :head], pos[:1, :head], valid[:1, :head],
                             keep[:1, :head], split, cache)
    cache.expand(len(rows))
    hidden = rec_model.forward_hidden(model, ids[:, head:], pos[:, head:], valid, keep, split, cache)
    # Position t predicts token t + 1; the targets are the last num_targets tokens.
    offsets = torch.arange(num_targets, device=device)[None]
    target_pos = lengths[:, None] - num_targets + offsets
    batch_index = torch.arange(len(rows), device=device)[:, None]
    logits = model.lm_head(hidden[batch_index, target_pos - 1 - head])
    targets = ids[batch_index, target_pos]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             targets.reshape(-1))


def write_static_files(out, tok, data_dir):
    rec_tokenizer.save_tokenizer(tok, out)
    shutil.copy(os.path.join(data_dir, "beauty.LCRec-1e-3lr.json"), os.path.join(out, "catalogue.json"))
    shutil.copy(os.path.join(data_dir, "titles.tsv"), os.path.join(out, "titles.tsv"))
    spec = {"catalogue": "catalogue.json", "titles": "titles.tsv",
            "prompt_template": beauty_data.PROMPT_TEMPLATE,
            "item_separator": beauty_data.ITEM_SEPARATOR,
            "history_limit": beauty_data.HISTORY_LIMIT}
    with open(os.path.join(out, "recommendation.json"), "w") as f:
        json.dump(spec, f, indent=2)


def save_model(model, out):
    model.save_pretrained(out, safe_serialization=True)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    start = time.time()
    budget_s = args.time_budget_minutes * 60.0
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)

    index = beauty_data.load_index(args.data)
    tok, prefix_ids, suffix_ids = rec_tokenizer.build_tokenizer(
        index, load_titles(args.data), args.bpe_vocab,
        args.registers if args.variant == "earn" else 0)
    earn = None
    if args.variant == "earn":
        earn = {"split_layer": args.split_layer, "prefix_register_ids": prefix_ids,
                "suffix_register_ids": suffix_ids}
    write_static_files(args.out, tok, args.data)

    samples = beauty_data.train_samples(args.data)
    rng.shuffle(samples)
    if args.max_train_samples > 0:
        samples = samples[:args.max_train_samples]
    seqs = encode_samples(tok, index, samples, earn)
    num_targets = len(next(iter(index.values()))) + 1
    head = shared_head(seqs, num_targets)
    val = beauty_data.valid_samples(args.data)
    val = random.Random(args.seed + 1).sample(val, min(args.val_users, len(val)))
    trie = rec_model.ItemTrie(index, tok.token_to_id)

    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=args.hidden,
        intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, initializer_range=0.02)
    if earn is not None:
        config.earn = earn
    model = LlamaForCausalLM(config).float().to(device)
    num_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(len(seqs) / args.batch_size)
    planned_steps = steps_per_epoch * args.epochs
    print(f"{args.variant}: {num_params / 1e6:.2f}M parameters, vocab {config.vocab_size}, "
          f"{len(seqs)} samples, {steps_per_epoch} steps/epoch, shared head {head} tokens, "
          f"{len(val)} valid users", flush=True)

    def validate():
        model.eval()
        t0 = time.time()
        m = rec_model.evaluate(model, tok, index, val, args.val_beams, [args.val_beams],
                               earn=earn, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, trie=trie)
        model.train()
        return m, time.time() - t0

    # The end-of-run validation must fit in the budget: time one batch of it now.
    model.eval()
    t0 = time.time()
    rec_model.evaluate(model, tok, index, val[:16], args.val_beams, [args.val_beams], earn=earn,
                       trie=trie)
    val_estimate_s = (time.time() - t0) * max(1, len(val)) / min(16, max(1, len(val)))
    model.train()

    log = {"variant": args.variant, "args": vars(args), "earn": earn,
           "num_parameters": num_params, "vocab_size": config.vocab_size,
           "num_train_samples": len(seqs), "shared_head_tokens": head,
           "num_valid_users": len(val), "epochs": []}
    best = -1.0
    step = 0
    stop = False

    def lr_at(progress_steps):
        if progress_steps < args.warmup_steps:
            return args.lr * (progress_steps + 1) / args.warmup_steps
        progress = max((progress_steps - args.warmup_steps) / max(1, planned_steps - args.warmup_steps),
                       (time.time() - start) / budget_s)
        progress = min(1.0, progress)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    for epoch in range(args.epochs):
        t_epoch = time.time()
        losses = []
        for rows in make_batches(seqs, args.batch_size, rng):
            if time.time() - start + 1.2 * val_estimate_s + 15 > budget_s:
                stop = True
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            loss = batch_loss(model, seqs, rows, head, num_targets, earn, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 50 == 0:
                rate = len(losses) * args.batch_size / (time.time() - t_epoch)
                print(f"epoch {epoch} step {step} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} "
                      f"lr {optimizer.param_groups[0]['lr']:.2e} {rate:.0f} samples/s "
                      f"elapsed {(time.time() - start) / 60:.1f} min", flush=True)
        if not losses:
            break
        train_s = time.time() - t_epoch
        metrics, val_s = validate()
        val_estimate_s = val_s
        mean_loss = sum(losses) / len(losses)
        entry = {"epoch": epoch, "steps": step, "complete": not stop, "train_loss": mean_loss,
                 "train_seconds": train_s, "samples_per_second": len(losses) * args.batch_size / train_s,
                 "valid_seconds": val_s, "valid": metrics}
        key = f"recall@{args.val_beams}"
        if metrics[key] > best:
            best = metrics[key]
            save_model(model, args.out)
            entry["saved"] = True
        log["epochs"].append(entry)
        print(f"epoch {epoch}: loss {mean_loss:.4f}, valid {json.dumps(metrics)}, "
              f"train {train_s:.0f}s, valid {val_s:.0f}s{' (saved)' if entry.get('saved') else ''}",
              flush=True)
        log["best_valid_" + key] = best
        log["total_seconds"] = time.time() - start
        with open(os.path.join(args.out, "train_log.json"), "w") as f:
            json.dump(log, f, indent=2)
        if stop:
            break
    if best < 0:
        save_model(model, args.out)
    log["total_seconds"] = time.time() - start
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=2)
    print(f"wrote {args.out} in {log['total_seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
