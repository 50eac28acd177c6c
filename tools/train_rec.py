#!/usr/bin/env python3
"""Trains a generative recommender on a sequential data set with item codes (Beauty, LC-Rec).

Compact prompt: a history is its items' code tokens, each item closed by </s>:
    [BOS] <a_1><b_2><c_3><d_4></s> <a_5>...</s>          (recommendation.json: template
                                                          "{history}</s>", separator "</s>")
and the model answers with the next item's 4 codes and </s>, which is how every item of the
history ends too. So a user's whole sequence is one training text, and one causal forward
predicts every item of it from the items before (teacher forcing on all item positions); the
serving prompt (the last <= 20 items) is a prefix of such a text.

  --variant full   plain causal Llama, trained from scratch on the sequences
  --variant earn   EARN (--registers R prefix + R suffix registers, layers >= --split-layer see
                   only registers and generated tokens), warm-started with --init FULL_DIR. Its
                   register layout is per target, so each target item gets a branch in the
                   packed sequence: [BOS][prefix regs] i1 </s> i2 </s> ... then, per target t,
                   [suffix regs] codes(t) </s> whose lower layers see the history before t
                   and whose upper layers see only the prefix registers and the branch itself,
                   exactly the engine's EARN prompt for the history before t.

Windows of at most 21 items (20 of history + the predicted one, the protocol's limit); longer
sequences are cut into windows 10 items apart, each item predicted once. Loss on the codes and
</s> of every item but a window's first. Residual and embedding dropout (--dropout). AdamW,
linear warmup, cosine decay driven by the planned epochs or --time-budget-minutes, whichever
runs out first. After each epoch Recall@10 / NDCG@10 on a fixed sample of valid users (history
= train items), beam search with 10 beams over the catalogue; --out keeps the best epoch, or
with --fit-valid (train on train + valid sequences, the test-time model: the valid figures are
then in-sample) the last one.

--data DIR: any folder with sequential_{train,valid,test}.txt (`user item item ...`, items from
1) and the item-code index beauty.LCRec-1e-3lr.json (key = item - 1 -> list of code tokens);
titles.tsv optional.

--out gets a Hugging Face checkpoint the engine serves: config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, generation_config.json, recommendation.json,
catalogue.json, titles.tsv, train_log.json.

Smoke run: .venv/bin/python tools/train_rec.py --out /tmp/rec-smoke --time-budget-minutes 2 \
    --max-train-users 2000 --val-users 64
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

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
INDEX_FILE = "beauty.LCRec-1e-3lr.json"
# The compact prompt (recommendation.json): every history item closed by </s>.
PROMPT_TEMPLATE = "{history}</s>"
ITEM_SEPARATOR = "</s>"
WINDOW = beauty_data.HISTORY_LIMIT + 1
WINDOW_STRIDE = 10


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR, help="data directory")
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--variant", choices=("full", "earn"), default="full")
    ap.add_argument("--init", default="", help="checkpoint to start from (EARN: the trained full model)")
    ap.add_argument("--registers", type=int, default=2, help="EARN: prefix and suffix registers each")
    ap.add_argument("--split-layer", type=int, default=1,
                    help="EARN: first layer that sees only registers and generated tokens")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--intermediate", type=int, default=384)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--bpe-vocab", type=int, default=1024, help="BPE part of the vocabulary")
    ap.add_argument("--dropout", type=float, default=0.1, help="embedding and residual dropout")
    ap.add_argument("--batch-size", type=int, default=32, help="windows (user sequences) per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-steps", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20, help="planned epochs (the cosine's length)")
    ap.add_argument("--time-budget-minutes", type=float, default=45.0)
    ap.add_argument("--fit-valid", action="store_true",
                    help="train on train + valid sequences (the model for the test split)")
    ap.add_argument("--max-train-users", type=int, default=0, help="0: all")
    ap.add_argument("--last-items", type=int, default=0,
                    help="predict only the last N items of each sequence (one window per user, "
                         "the latest transitions: a short fine-tune against drift in time); 0: all")
    ap.add_argument("--val-users", type=int, default=500, help="valid users scored each epoch")
    ap.add_argument("--val-beams", type=int, default=10)
    ap.add_argument("--val-every", type=int, default=1, help="validate every N epochs (and at the end)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.variant == "earn" and not 0 < args.split_layer <= args.layers:
        ap.error(f"--split-layer must be in [1, {args.layers}]")
    if args.variant == "earn" and args.registers < 1:
        ap.error("--registers must be at least 1 for EARN")
    return args


def load_titles(data_dir):
    path = os.path.join(data_dir, "titles.tsv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t", 1)[1] for line in f if "\t" in line]


def user_sequences(data_dir, fit_valid):
    train, valid, _ = beauty_data.load_sequences(data_dir)
    users = sorted(set(train) | (set(valid) if fit_valid else set()))
    seqs = [[beauty_data.item_key(i) for i in train.get(u, []) + (valid.get(u, []) if fit_valid else [])]
            for u in users]
    return [s for s in seqs if len(s) >= 2]


def windows(seq):
    """(items, first predicted index) per window: <= WINDOW items, each item predicted once
    from at least WINDOW_STRIDE items before it (all of them in the first window)."""
    out, covered, start = [], 0, 0
    while True:
        end = min(start + WINDOW, len(seq))
        first = max(1, covered + 1 - start)
        if first < end - start:
            out.append((seq[start:end], first))
        covered = end - 1
        if end == len(seq):
            return out
        start += WINDOW_STRIDE


class Packer:
    """Token ids, positions, masks and labels of one training window."""

    def __init__(self, code_ids, earn):
        self.code_ids = code_ids  # item key -> list of code token ids
        self.earn = earn

    def full(self, items, first):
        ids, labels = [BOS_ID], [-100]
        for j, key in enumerate(items):
            toks = self.code_ids[key] + [EOS_ID]
            ids += toks
            labels += toks if j >= first else [-100] * len(toks)
        return ids, labels

    def earn_window(self, items, first):
        """ids, positions, lower visibility [T, T], kept token indices [K], upper visibility
        among the kept tokens [K, K], labels [T]. Only registers and branch tokens are kept:
        layers >= split compute nothing else (nothing kept attends to other tokens there)."""
        prefix, suffix = self.earn["prefix_register_ids"], self.earn["suffix_register_ids"]
        ids = [BOS_ID] + list(prefix)
        item_end = []  # main-stream length after item j
        for key in items:
            ids += self.code_ids[key] + [EOS_ID]
            item_end.append(len(ids))
        main = len(ids)
        positions = list(range(main))
        labels = [-100] * main
        branches = []
        for t in range(first, len(items)):
            hist = item_end[t - 1]  # main-stream tokens the branch's lower layers see
            toks = list(suffix) + self.code_ids[items[t]] + [EOS_ID]
            start = len(ids)
            ids += toks
            positions += list(range(hist, hist + len(toks)))
            # A label names the token predicted from the position before it; a branch's first
            # token is never a label, so no prediction crosses branches.
            labels += [-100] * len(suffix) + self.code_ids[items[t]] + [EOS_ID]
            branches.append((start, len(ids), hist))
        n = len(ids)
        lower = torch.ones(n, n, dtype=torch.bool).tril()
        lower[main:, :] = False
        for start, end, hist in branches:
            lower[start:end, :hist] = True
            lower[start:end, start:end] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
        kept = list(range(1, 1 + len(prefix))) + list(range(main, n))
        upper = lower[kept][:, kept].clone()
        num_prefix = len(prefix)
        for start, end, hist in branches:
            # Branch rows see the prefix registers and their own branch; nothing of the others.
            rows = slice(num_prefix + start - main, num_prefix + end - main)
            upper[rows, num_prefix:] = False
            upper[rows, rows] = torch.ones(end - start, end - start, dtype=torch.bool).tril()
        return ids, positions, lower, torch.tensor(kept), upper, labels


def add_dropout(model, p):
    """Embedding and residual-branch dropout through forward hooks (active in train mode only)."""
    if p <= 0:
        return
    drop = torch.nn.functional.dropout

    def hook(module, inputs, output):
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (drop(output[0], p, True),) + tuple(output[1:])
        return drop(output, p, True)

    model.model.embed_tokens.register_forward_hook(hook)
    for layer in model.model.layers:
        layer.self_attn.register_forward_hook(hook)
        layer.mlp.register_forward_hook(hook)


def additive(mask, dtype):
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, zero, neg)[:, None]


def masked_forward(model, ids, positions, lower, upper, split):
    """Final-norm hidden states [B, T, hidden]; lower/upper: [B, T, T] bool visibility for
    layers < split and >= split (split None: lower everywhere)."""
    hidden = model.model.embed_tokens(ids)
    pos_emb = model.model.rotary_emb(hidden, position_ids=positions)
    lower_mask = additive(lower, hidden.dtype)
    upper_mask = additive(upper, hidden.dtype) if split is not None else lower_mask
    for i, layer in enumerate(model.model.layers):
        mask = lower_mask if split is None or i < split else upper_mask
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=pos_emb)
    return model.model.norm(hidden)


def make_batch(packed, rows, earn, device):
    """Right-padded tensors of packed windows: ids, labels, positions [B, T], lower [B, T, T]
    and for EARN kept [B, K] and upper [B, K, K] (padding sees only itself)."""
    width = max(len(packed[r][0]) for r in rows)
    b = len(rows)
    ids = torch.full((b, width), PAD_ID, dtype=torch.long)
    labels = torch.full((b, width), -100, dtype=torch.long)
    positions = torch.zeros((b, width), dtype=torch.long)
    lower = torch.eye(width, dtype=torch.bool)[None].repeat(b, 1, 1)
    kept = upper = None
    if earn is not None:
        num_kept = max(len(packed[r][3]) for r in rows)
        kept = torch.zeros((b, num_kept), dtype=torch.long)
        upper = torch.eye(num_kept, dtype=torch.bool)[None].repeat(b, 1, 1)
    for i, r in enumerate(rows):
        item = packed[r]
        n = len(item[0])
        ids[i, :n] = torch.tensor(item[0])
        labels[i, :n] = torch.tensor(item[-1])
        if earn is None:
            positions[i, :n] = torch.arange(n)
            lower[i, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
        else:
            _, pos, low, keep, up, _ = item
            positions[i, :n] = torch.tensor(pos)
            lower[i, :n, :n] = low
            kept[i, :len(keep)] = keep
            # Padding slots point at token 0 and see only themselves; they carry no label.
            upper[i, :len(keep), :len(keep)] = up
    moved = [x.to(device) if x is not None else None for x in (ids, labels, positions, lower, kept, upper)]
    return tuple(moved)


def batch_hidden(model, batch, split):
    """(final-norm hidden states [B, T', hidden], their labels [B, T']); for EARN T' are the
    kept tokens: layers >= split run on them alone."""
    ids, labels, positions, lower, kept, upper = batch
    if split is None:
        return masked_forward(model, ids, positions, lower, None, None), labels
    hidden = model.model.embed_tokens(ids)
    pos_emb = model.model.rotary_emb(hidden, position_ids=positions)
    mask = additive(lower, hidden.dtype)
    for layer in model.model.layers[:split]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=pos_emb)
    hidden = hidden.gather(1, kept[:, :, None].expand(-1, -1, hidden.shape[-1]))
    positions = positions.gather(1, kept)
    labels = torch.where(kept > 0, labels.gather(1, kept), torch.full_like(kept, -100))
    pos_emb = model.model.rotary_emb(hidden, position_ids=positions)
    mask = additive(upper, hidden.dtype)
    for layer in model.model.layers[split:]:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=pos_emb)
    return model.model.norm(hidden), labels


def batch_loss(model, batch, split):
    hidden, labels = batch_hidden(model, batch, split)
    # Position p predicts the token at p + 1 (for EARN, the next kept token of its branch).
    target = labels[:, 1:]
    sel = target != -100
    logits = model.lm_head(hidden[:, :-1][sel])
    return torch.nn.functional.cross_entropy(logits.float(), target[sel]), int(sel.sum())


def write_static_files(out, tok, data_dir):
    rec_tokenizer.save_tokenizer(tok, out)
    shutil.copy(os.path.join(data_dir, INDEX_FILE), os.path.join(out, "catalogue.json"))
    spec = {"catalogue": "catalogue.json"}
    if os.path.exists(os.path.join(data_dir, "titles.tsv")):
        shutil.copy(os.path.join(data_dir, "titles.tsv"), os.path.join(out, "titles.tsv"))
        spec["titles"] = "titles.tsv"
    spec.update({"prompt_template": PROMPT_TEMPLATE, "item_separator": ITEM_SEPARATOR,
                 "history_limit": beauty_data.HISTORY_LIMIT})
    with open(os.path.join(out, "recommendation.json"), "w") as f:
        json.dump(spec, f, indent=2)
    return spec


def build_model(args, tok, earn, device):
    vocab = tok.get_vocab_size()
    if args.init:
        model = LlamaForCausalLM.from_pretrained(args.init, dtype=torch.float32)
        old_vocab = model.config.vocab_size
        if old_vocab > vocab:
            raise SystemExit(f"{args.init}: vocabulary {old_vocab} larger than this tokenizer's {vocab}")
        if old_vocab < vocab:
            # New rows (EARN's registers) start at the mean embedding, as transformers does.
            model.resize_token_embeddings(vocab, mean_resizing=True)
        model.config.vocab_size = vocab
    else:
        config = LlamaConfig(
            vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
            num_hidden_layers=args.layers, num_attention_heads=args.heads,
            num_key_value_heads=args.kv_heads, max_position_embeddings=512, rms_norm_eps=1e-6,
            rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=BOS_ID,
            eos_token_id=EOS_ID, pad_token_id=PAD_ID, initializer_range=0.02)
        model = LlamaForCausalLM(config)
    if earn is not None:
        if not 0 < earn["split_layer"] <= model.config.num_hidden_layers:
            raise SystemExit(f"--split-layer must be in [1, {model.config.num_hidden_layers}]")
        model.config.earn = earn
    return model.float().to(device)


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
    spec = write_static_files(args.out, tok, args.data)
    prompt_fn = beauty_data.prompt_builder(spec)
    code_ids = {k: [tok.token_to_id(c) for c in codes] for k, codes in index.items()}

    seqs = user_sequences(args.data, args.fit_valid)
    rng.shuffle(seqs)
    if args.max_train_users > 0:
        seqs = seqs[:args.max_train_users]
    packer = Packer(code_ids, earn)
    packed = []
    for seq in seqs:
        spans = windows(seq)
        if args.last_items > 0:
            items = seq[-WINDOW:]
            spans = [(items, max(1, len(items) - args.last_items))]
        for items, first in spans:
            packed.append(packer.full(items, first) if earn is None else packer.earn_window(items, first))
    num_targets = sum(sum(1 for x in p[-1] if x != -100) for p in packed)
    num_tokens = sum(len(p[0]) for p in packed)
    val = beauty_data.valid_samples(args.data)
    val = random.Random(args.seed + 1).sample(val, min(args.val_users, len(val)))
    trie = rec_model.ItemTrie(index, tok.token_to_id)

    model = build_model(args, tok, earn, device)
    add_dropout(model, args.dropout)
    num_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(len(packed) / args.batch_size)
    planned_steps = steps_per_epoch * args.epochs
    split = earn["split_layer"] if earn is not None else None
    print(f"{args.variant}: {num_params / 1e6:.2f}M parameters, vocab {tok.get_vocab_size()}, "
          f"{len(seqs)} sequences, {len(packed)} windows, {num_tokens} tokens, {num_targets} "
          f"target tokens, {steps_per_epoch} steps/epoch, {len(val)} valid users", flush=True)

    def validate():
        model.eval()
        t0 = time.time()
        m = rec_model.evaluate(model, tok, index, val, args.val_beams, [args.val_beams], earn=earn,
                               bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, trie=trie,
                               prompt_fn=prompt_fn)
        model.train()
        return m, time.time() - t0

    model.eval()
    t0 = time.time()
    rec_model.evaluate(model, tok, index, val[:16], args.val_beams, [args.val_beams], earn=earn,
                       trie=trie, prompt_fn=prompt_fn)
    val_estimate_s = (time.time() - t0) * max(1, len(val)) / min(16, max(1, len(val)))
    model.train()

    log = {"variant": args.variant, "recipe": "teacher forcing on every item, compact prompt",
           "args": vars(args), "earn": earn, "num_parameters": num_params,
           "vocab_size": tok.get_vocab_size(), "recommendation": spec,
           "num_train_sequences": len(seqs), "num_train_windows": len(packed),
           "num_train_tokens": num_tokens, "num_target_tokens": num_targets,
           "num_valid_users": len(val),
           "valid_in_training": args.fit_valid, "epochs": []}
    key = f"recall@{args.val_beams}"
    best = -1.0
    step = 0
    stop = False

    def lr_at(s):
        if s < args.warmup_steps:
            return args.lr * (s + 1) / args.warmup_steps
        progress = max((s - args.warmup_steps) / max(1, planned_steps - args.warmup_steps),
                       (time.time() - start) / budget_s)
        progress = min(1.0, progress)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    # Batches of similar length (little padding), in random order each epoch.
    for epoch in range(args.epochs):
        t_epoch = time.time()
        order = sorted(range(len(packed)), key=lambda i: (len(packed[i][0]), rng.random()))
        batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        rng.shuffle(batches)
        losses, seen = [], 0
        for rows in batches:
            if time.time() - start + 1.2 * val_estimate_s + 20 > budget_s:
                stop = True
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            loss, _ = batch_loss(model, make_batch(packed, rows, earn, device), split)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            seen += len(rows)
            step += 1
            if step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {sum(losses[-100:]) / len(losses[-100:]):.4f} "
                      f"lr {optimizer.param_groups[0]['lr']:.2e} "
                      f"{seen / (time.time() - t_epoch):.0f} windows/s "
                      f"elapsed {(time.time() - start) / 60:.1f} min", flush=True)
        if not losses:
            break
        train_s = time.time() - t_epoch
        last = stop or epoch + 1 == args.epochs
        if not last and (epoch + 1) % args.val_every:
            log["epochs"].append({"epoch": epoch, "steps": step, "complete": True,
                                  "train_loss": sum(losses) / len(losses), "train_seconds": train_s,
                                  "windows_per_second": seen / train_s})
            print(f"epoch {epoch}: loss {sum(losses) / len(losses):.4f}, train {train_s:.0f}s", flush=True)
            continue
        metrics, val_s = validate()
        val_estimate_s = val_s
        mean_loss = sum(losses) / len(losses)
        entry = {"epoch": epoch, "steps": step, "complete": not stop, "train_loss": mean_loss,
                 "train_seconds": train_s, "windows_per_second": seen / train_s,
                 "valid_seconds": val_s, "valid": metrics}
        if args.fit_valid or metrics[key] > best:
            best = max(best, metrics[key])
            model.save_pretrained(args.out, safe_serialization=True)
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
        model.save_pretrained(args.out, safe_serialization=True)
    log["total_seconds"] = time.time() - start
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=2)
    print(f"wrote {args.out} in {log['total_seconds'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
