#!/usr/bin/env python3
"""Trains a small draft model for speculative beam search (AtSpeed, arXiv 2410.05165).

The target is a checkpoint of tools/train_rec.py (full or EARN). Recipe:
  1. Teacher data: for --teacher-users training prompts (every-prefix train samples, shuffled
     with --seed), the target's catalogue-constrained beam search with --teacher-beams beams;
     for every prefix the search expanded (a "node") the target's log-probabilities of the
     allowed tokens, and the final beams with their code log-probabilities. Cached in
     --teacher-cache (reused, and extended, by later runs against the same target).
  2. The draft (a plain Llama, the target's vocabulary, default 2 layers hidden 64) trained from
     scratch on it with one objective (formulas in tools/draft_objectives.py):
       atspeed-s  mean restricted reverse KL over the nodes + --pd-weight * density regulariser
       atspeed-r  sequence-level TV over the target's top-K beams (+ --pd-weight * regulariser)
       kd         forward KL from the target's next-token distributions at the nodes
     --kd-weight adds the KD term to any objective; --rec-weight (default 1 for atspeed-*, the
     paper's L = L_Rec + L_Align) adds the ground-truth next item's code cross-entropy.
  3. Validation on --val-users valid users, before (untrained draft) and after training: strict
     top-K verification simulated in Python (target K beams, draft N beams, gamma levels per
     round, the engine's rules); the acceptance rate is train_log.json's main number.
The draft is written in Hugging Face format (plain Llama config: no "earn" even for an EARN
target) with the target's tokenizer, catalogue, titles and recommendation.json.

Self-check of the losses (seconds): .venv/bin/python tools/train_draft.py --check
Smoke run: .venv/bin/python tools/train_draft.py --target /tmp/speed/full --out /tmp/draft \
    --teacher-users 64 --teacher-cache /tmp/teacher.pt --time-budget-minutes 2 --val-users 16
"""
import argparse
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import sys
import time

import torch

import beauty_data
import draft_objectives
import rec_model
from earn_model import wrap_prompt

COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "recommendation.json",
                "generation_config.json")
CACHE_VERSION = 3


class InputError(Exception):
    """Bad input (a missing or malformed file); reported as one line."""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="verify the losses and exit")
    ap.add_argument("--target", help="target checkpoint directory (tools/train_rec.py output)")
    ap.add_argument("--out", help="draft checkpoint directory to write")
    ap.add_argument("--objective", choices=("atspeed-s", "atspeed-r", "kd"), default="atspeed-s")
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR, help="Beauty data directory")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--intermediate", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--teacher-users", type=int, default=6000, help="training prompts with teacher beams")
    ap.add_argument("--teacher-beams", type=int, default=20)
    ap.add_argument("--teacher-cache", help="file caching the teacher data (created or reused)")
    ap.add_argument("--teacher-share", type=float, default=0.5,
                    help="most of the budget teacher generation may take")
    ap.add_argument("--teacher-only", action="store_true",
                    help="only make (or extend) --teacher-cache, with the whole budget")
    ap.add_argument("--top-k", type=int, default=10,
                    help="K: draft top-K tokens of the reverse KL, target top-K beams of TV / PD")
    ap.add_argument("--pd-weight", type=float, default=None,
                    help="density regulariser weight (default 1 for atspeed-s, 0 otherwise)")
    ap.add_argument("--kd-weight", type=float, default=None,
                    help="forward-KL weight (default 1 for kd, 0 otherwise)")
    ap.add_argument("--rec-weight", type=float, default=None,
                    help="ground-truth recommendation loss weight (the paper's L_Rec; default 1 "
                         "for atspeed-s / atspeed-r, 0 for kd)")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per step")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=100, help="upper bound; the budget usually ends first")
    ap.add_argument("--time-budget-minutes", type=float, default=55.0)
    ap.add_argument("--val-users", type=int, default=200)
    ap.add_argument("--val-k", type=int, default=10, help="target beams K in the simulation")
    ap.add_argument("--val-n", type=int, default=40, help="draft beams N in the simulation")
    ap.add_argument("--gamma", type=int, default=4, help="drafted levels per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.check:
        return args
    if not args.target or not (args.out or args.teacher_only):
        ap.error("--target and --out are required (or --check)")
    if args.teacher_only and not args.teacher_cache:
        ap.error("--teacher-only needs --teacher-cache")
    if args.teacher_only:
        args.teacher_share = 1.0
    if args.pd_weight is None:
        args.pd_weight = 1.0 if args.objective == "atspeed-s" else 0.0
    if args.kd_weight is None:
        args.kd_weight = 1.0 if args.objective == "kd" else 0.0
    if args.rec_weight is None:
        args.rec_weight = 0.0 if args.objective == "kd" else 1.0
    for name in ("teacher_users", "teacher_beams", "top_k", "batch_size", "val_k", "val_n",
                 "gamma", "threads", "layers", "hidden"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.val_n < args.val_k:
        ap.error("--val-n must be at least --val-k")
    if args.top_k > args.teacher_beams:
        ap.error("--top-k must not exceed --teacher-beams")
    return args


# ---------------------------------------------------------------------------------------------
# The target checkpoint.

def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e


class Target:
    """The target checkpoint: model, tokenizer, catalogue trie, prompt spec, EARN settings."""

    def __init__(self, path):
        from tokenizers import Tokenizer
        from transformers import LlamaForCausalLM

        self.path = path
        if not os.path.isdir(path):
            raise InputError(f"{path}: not a directory")
        for name in ("config.json", "model.safetensors", "tokenizer.json", "recommendation.json"):
            if not os.path.isfile(os.path.join(path, name)):
                raise InputError(f"{os.path.join(path, name)}: missing (not a train_rec.py checkpoint)")
        self.config = _read_json(os.path.join(path, "config.json"))
        if self.config.get("model_type") != "llama":
            raise InputError(f"{os.path.join(path, 'config.json')}: model_type "
                             f"{self.config.get('model_type')!r} is not 'llama'")
        self.spec = _read_json(os.path.join(path, "recommendation.json"))
        for key in ("catalogue", "prompt_template", "item_separator", "history_limit"):
            if key not in self.spec:
                raise InputError(f"{os.path.join(path, 'recommendation.json')}: no {key!r}")
        self.catalogue_path = os.path.join(path, self.spec["catalogue"])
        self.index = _read_json(self.catalogue_path)
        if not isinstance(self.index, dict) or not self.index:
            raise InputError(f"{self.catalogue_path}: not an item -> codes object")
        try:
            self.tokenizer = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        except Exception as e:  # tokenizers raises a plain Exception on bad files
            raise InputError(f"{os.path.join(path, 'tokenizer.json')}: cannot load ({e})") from e
        try:
            self.trie = rec_model.ItemTrie(self.index, self.tokenizer.token_to_id)
        except ValueError as e:
            raise InputError(f"{self.catalogue_path}: {e}") from e
        try:
            self.model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        except Exception as e:
            raise InputError(f"{path}: cannot load the model ({e})") from e
        self.earn = self.config.get("earn")
        self.vocab_size = self.model.lm_head.out_features
        self.bos_id = self.config.get("bos_token_id", 1)
        self.eos_id = self.config.get("eos_token_id", 2)
        if isinstance(self.eos_id, list):
            self.eos_id = self.eos_id[0]
        self.pad_id = self.config.get("pad_token_id", 0) or 0
        self.children = {}

    def fingerprint(self):
        """Hash of the weights and catalogue: a teacher cache belongs to one target."""
        h = hashlib.sha256()
        for name in ("model.safetensors", "config.json"):
            with open(os.path.join(self.path, name), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        with open(self.catalogue_path, "rb") as f:
            h.update(f.read())
        return h.hexdigest()

    def prompt_ids(self, history_keys):
        """The draft's prompt (plain: [BOS] prompt) for a history of item keys."""
        limit = int(self.spec["history_limit"])
        keys = history_keys[-limit:] if limit > 0 else history_keys
        text = self.spec["prompt_template"].format(
            history=self.spec["item_separator"].join("".join(self.index[k]) for k in keys))
        return self.tokenizer.encode(text).ids

    def target_prompt(self, ids):
        return ids if self.earn is None else wrap_prompt(ids, self.earn, self.bos_id)

    def allowed(self, node):
        """The tokens continuing trie node `node`, sorted (a cached list)."""
        got = self.children.get(node)
        if got is None:
            got = sorted(self.trie.children[node])
            self.children[node] = got
        return got

    def node_of(self, prefix):
        node = 0
        for t in prefix:
            node = self.trie.child(node, t)
        return node


# ---------------------------------------------------------------------------------------------
# Scoring prefixes below a batch of prompts.

class PrefixScorer:
    """A batch of prompts prefilled once; then logits of code prefixes below any of them.

    prompts: B token-id lists (already wrapped for EARN). The prompt KV cache is kept; each
    extend() copies the rows it needs, so calls are independent. With grad enabled the prefill
    and the extensions are differentiable (training). Not thread-safe.
    """

    def __init__(self, model, prompts, earn, pad_id):
        self.model = model
        self.earn = earn
        self.split = earn["split_layer"] if earn is not None else None
        batch, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        valid = torch.zeros(batch, width, dtype=torch.bool)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p)
            valid[row, width - len(p):] = True
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        self.valid = valid
        self.keep = rec_model.keep_mask(ids, earn) & valid
        self.last_pos = positions[:, -1]
        self.cache = rec_model.KVCache(len(model.model.layers))
        hidden = rec_model.forward_hidden(model, ids, positions, valid, self.keep, self.split,
                                          self.cache)
        # [B, V] logits after the prompt: the distribution of the first code.
        self.first_logits = model.lm_head(hidden[:, -1])

    def extend(self, rows, seqs):
        """Logits [n, L, V] after each token of seqs (n lists, right-padded to L) below rows [n]."""
        n, width = len(seqs), max(len(s) for s in seqs)
        rows_t = torch.tensor(rows, dtype=torch.long)
        tokens = torch.zeros(n, width, dtype=torch.long)
        mine = torch.zeros(n, width, dtype=torch.bool)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mine[i, :len(s)] = True
        cache = rec_model.KVCache(len(self.model.model.layers))
        cache.keys = [k.index_select(0, rows_t) for k in self.cache.keys]
        cache.values = [v.index_select(0, rows_t) for v in self.cache.values]
        valid = torch.cat([self.valid[rows_t], mine], dim=1)
        keep = torch.cat([self.keep[rows_t], torch.ones(n, width, dtype=torch.bool)], dim=1)
        positions = self.last_pos[rows_t][:, None] + 1 + torch.arange(width)[None]
        hidden = rec_model.forward_hidden(self.model, tokens, positions, valid, keep, self.split,
                                          cache)
        return self.model.lm_head(hidden)

    def logprobs(self, rows, prefixes):
        """[n, V] full-vocabulary log-probabilities of the next token after each prefix."""
        out = torch.empty(len(rows), self.first_logits.shape[-1])
        empty = [i for i, p in enumerate(prefixes) if not p]
        if empty:
            out[empty] = torch.log_softmax(self.first_logits[[rows[i] for i in empty]].float(), -1)
        rest = [i for i, p in enumerate(prefixes) if p]
        if rest:
            logits = self.extend([rows[i] for i in rest], [list(prefixes[i]) for i in rest])
            last = torch.tensor([len(prefixes[i]) - 1 for i in rest])
            out[rest] = torch.log_softmax(logits[torch.arange(len(rest)), last].float(), -1)
        return out


def constrained_beam_levels(target, scorer, num_rows, num_beams, record=False):
    """Beam search over the trie for rows 0..num_rows-1 of scorer, level by level.

    Returns per row: levels[l] = [(prefix tuple, score)] best first for l = 0..depth (level 0 is
    the empty prefix), and when record is set the expanded nodes {prefix: (allowed, logps)}.
    """
    levels = [[[((), 0.0)]] for _ in range(num_rows)]
    nodes = [{} for _ in range(num_rows)]
    for _ in range(target.trie.depth):
        rows, prefixes = [], []
        for r in range(num_rows):
            for prefix, _ in levels[r][-1]:
                rows.append(r)
                prefixes.append(prefix)
        logp = scorer.logprobs(rows, prefixes)
        cands = [[] for _ in range(num_rows)]
        for i, (r, prefix) in enumerate(zip(rows, prefixes)):
            allowed = target.allowed(target.node_of(prefix))
            lp = logp[i, allowed]
            if record:
                nodes[r][prefix] = (allowed, lp.clone())
            score = dict(levels[r][-1])[prefix]
            cands[r].extend((prefix + (t,), score + v) for t, v in zip(allowed, lp.tolist())
                            if v > -math.inf)
        for r in range(num_rows):
            cands[r].sort(key=lambda c: -c[1])
            levels[r].append(cands[r][:num_beams])
    return levels, nodes


# ---------------------------------------------------------------------------------------------
# Teacher data.

def teacher_prompts(args, target):
    """(history keys, next key) train samples in the seed's fixed random order."""
    samples = beauty_data.train_samples(args.data)
    random.Random(args.seed).shuffle(samples)
    return samples


@torch.no_grad()
def make_teacher_records(target, samples, num_beams):
    """One record per sample: draft prompt ids, expanded nodes, final beams (see module doc)."""
    ids = [target.prompt_ids(h) for h, _ in samples]
    scorer = PrefixScorer(target.model, [target.target_prompt(p) for p in ids], target.earn,
                          target.pad_id)
    levels, nodes = constrained_beam_levels(target, scorer, len(samples), num_beams, record=True)
    records = []
    for r, (history, nxt) in enumerate(samples):
        node_list = sorted(nodes[r].items(), key=lambda kv: (len(kv[0]), kv[0]))
        beams = levels[r][-1]
        records.append({
            "ids": ids[r], "history": history, "next": nxt,
            "next_codes": [target.tokenizer.token_to_id(c) for c in target.index[nxt]],
            # Node i: prefix node_prefix[i], tokens / log-probs [node_ptr[i]:node_ptr[i + 1]].
            "node_prefix": [list(p) for p, _ in node_list],
            "node_ptr": [0] + list(itertools.accumulate(len(a) for _, (a, _) in node_list)),
            "node_tok": torch.tensor([t for _, (a, _) in node_list for t in a], dtype=torch.int32),
            "node_logp": torch.cat([lp for _, (_, lp) in node_list]).float(),
            "beams": [(list(p), s) for p, s in beams],
        })
    return records


def load_or_make_teacher(args, target, budget_s, start):
    """Teacher records for the first --teacher-users samples (cached; generation budgeted)."""
    fingerprint = target.fingerprint()
    meta = {"version": CACHE_VERSION, "target": fingerprint, "beams": args.teacher_beams,
            "seed": args.seed, "data": os.path.abspath(args.data)}
    records = []
    if args.teacher_cache and os.path.exists(args.teacher_cache):
        try:
            cached = torch.load(args.teacher_cache, weights_only=False)
            cached_meta, records = cached["meta"], cached["records"]
        except Exception as e:
            raise InputError(f"{args.teacher_cache}: not a teacher cache ({e})") from e
        if {k: cached_meta.get(k) for k in meta} != meta:
            raise InputError(f"{args.teacher_cache}: made for another target or settings "
                             f"(beams/seed/data); delete it or name another --teacher-cache")
        print(f"teacher cache {args.teacher_cache}: {len(records)} prompts", flush=True)
    made = 0
    t0 = time.time()
    if len(records) < args.teacher_users:
        samples = teacher_prompts(args, target)
        want = min(args.teacher_users, len(samples))
        chunk = 16
        while len(records) < want:
            if time.time() - start > args.teacher_share * budget_s:
                print(f"teacher generation stopped by the budget at {len(records)} prompts", flush=True)
                break
            batch = samples[len(records):min(want, len(records) + chunk)]
            records.extend(make_teacher_records(target, batch, args.teacher_beams))
            made += len(batch)
            if made % 256 < len(batch):
                rate = made / (time.time() - t0)
                print(f"teacher: {len(records)}/{want} prompts, {rate:.1f} prompts/s", flush=True)
        if args.teacher_cache and made:
            tmp = args.teacher_cache + ".tmp"
            torch.save({"meta": meta, "records": records}, tmp)
            os.replace(tmp, args.teacher_cache)
    gen_s = time.time() - t0
    return records[:args.teacher_users], made, gen_s


# ---------------------------------------------------------------------------------------------
# Draft training.

def make_draft(args, target):
    from transformers import LlamaConfig, LlamaForCausalLM

    tc = target.config
    config = LlamaConfig(
        vocab_size=target.vocab_size, hidden_size=args.hidden,
        intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=tc.get("max_position_embeddings", 512),
        rms_norm_eps=tc.get("rms_norm_eps", 1e-6), rope_theta=10000.0,
        tie_word_embeddings=False, bos_token_id=target.bos_id, eos_token_id=target.eos_id,
        pad_token_id=target.pad_id, initializer_range=0.02)
    return LlamaForCausalLM(config).float()


def non_embedding_params(model):
    skip = {id(model.model.embed_tokens.weight), id(model.lm_head.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def batch_losses(draft, records, args):
    """Loss terms (dict of scalars, each a mean over nodes or prompts) for a batch of records."""
    scorer = PrefixScorer(draft, [r["ids"] for r in records], None, 0)
    first = torch.log_softmax(scorer.first_logits.float(), -1)  # [B, V]
    # Every node and beam prefix lies on a maximal sequence: feed those once, right-padded.
    seq_rows, seqs, where = [], [], {}
    for b, rec in enumerate(records):
        prefixes = ({tuple(p) for p in rec["node_prefix"]} | {tuple(p) for p, _ in rec["beams"]}
                    | {tuple(rec["next_codes"])})
        maximal = [p for p in prefixes
                   if p and not any(len(q) > len(p) and q[:len(p)] == p for q in prefixes)]
        for p in sorted(maximal):
            for j in range(1, len(p) + 1):
                where.setdefault((b, p[:j]), (len(seqs), j - 1))
            seq_rows.append(b)
            seqs.append(list(p))
    vocab = first.shape[-1]
    if seqs:
        ext = torch.log_softmax(scorer.extend(seq_rows, seqs).float(), -1)  # [n, L, V]
        stacked = torch.cat([first, ext.reshape(-1, vocab)], dim=0)
        width = ext.shape[1]
    else:
        stacked, width = first, 1

    def row_of(b, prefix):
        if not prefix:
            return b
        s, j = where[(b, tuple(prefix))]
        return len(records) + s * width + j

    # Step level: [num_nodes, A] padded allowed tokens and log-probabilities.
    node_rows, node_toks, node_p = [], [], []
    for b, rec in enumerate(records):
        ptr = rec["node_ptr"]
        for i, prefix in enumerate(rec["node_prefix"]):
            node_rows.append(row_of(b, prefix))
            node_toks.append(rec["node_tok"][ptr[i]:ptr[i + 1]])
            node_p.append(rec["node_logp"][ptr[i]:ptr[i + 1]])
    width_a = max(len(a) for a in node_toks)
    toks = torch.zeros(len(node_toks), width_a, dtype=torch.long)
    p_logp = torch.full((len(node_toks), width_a), -math.inf)
    for i, (a, lp) in enumerate(zip(node_toks, node_p)):
        toks[i, :len(a)] = a
        p_logp[i, :len(a)] = lp
    q_logp = stacked[torch.tensor(node_rows)[:, None], toks]
    q_logp = torch.where(torch.isfinite(p_logp), q_logp, torch.full_like(q_logp, -math.inf))
    # Sequence level: the target's top-K beams (by code log-probability).
    k = args.top_k
    p_seq = torch.full((len(records), k), -math.inf)
    q_terms, q_index = [], []
    for b, rec in enumerate(records):
        for i, (codes, score) in enumerate(rec["beams"][:k]):
            p_seq[b, i] = score
            for j in range(len(codes)):
                q_terms.append((row_of(b, codes[:j]), codes[j]))
                q_index.append(b * k + i)
    q_flat = torch.zeros(len(records) * k).index_add(
        0, torch.tensor(q_index),
        stacked[torch.tensor([r for r, _ in q_terms]), torch.tensor([t for _, t in q_terms])])
    q_seq = torch.where(torch.isfinite(p_seq), q_flat.reshape(len(records), k),
                        torch.full_like(p_seq, -math.inf))
    # Ground truth: mean per-code negative log-likelihood of the next item's codes.
    gt_rows, gt_toks = [], []
    for b, rec in enumerate(records):
        codes = rec["next_codes"]
        for j in range(len(codes)):
            gt_rows.append(row_of(b, codes[:j]))
            gt_toks.append(codes[j])
    out = {
        "rec": -stacked[torch.tensor(gt_rows), torch.tensor(gt_toks)].mean(),
        "kd": draft_objectives.forward_kl(p_logp, q_logp).mean(),
        "rkl": draft_objectives.restricted_reverse_kl(p_logp, q_logp, args.top_k).mean(),
        "pd": draft_objectives.density_regulariser(q_seq).mean(),
        "tv": draft_objectives.sequence_tv(p_seq, q_seq).mean(),
    }
    main = {"atspeed-s": out["rkl"], "atspeed-r": out["tv"], "kd": out["kd"]}[args.objective]
    out["loss"] = (main + args.pd_weight * out["pd"] + args.rec_weight * out["rec"]
                   + (args.kd_weight * out["kd"] if args.objective != "kd" else 0.0))
    return out


# ---------------------------------------------------------------------------------------------
# Validation: strict top-K verification simulated.

@torch.no_grad()
def simulate_strict(target, draft, samples, target_levels, k, n, gamma, batch=16):
    """Acceptance statistics of strict verification (the engine's rounds, see the module doc).

    target_levels: per sample, the target's K-beam levels (constrained_beam_levels output).
    A round from live level s drafts d = min(gamma, depth - s) levels with N beams starting from
    the target's live beams and scores; it accepts the first a levels whose target top-K prefixes
    are all among the drafted ones, then the target applies one more level itself.
    """
    depth = target.trie.depth
    drafted = accepted = rounds = calls = 0
    per_level = [[0, 0] for _ in range(depth)]  # [contained, drafted] by absolute level
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        tl = target_levels[start:start + batch]
        scorer = PrefixScorer(draft, [target.prompt_ids(h) for _, h, _ in chunk], None, 0)
        level = [0] * len(chunk)
        while True:
            active = [u for u in range(len(chunk)) if level[u] <= depth]
            if not active:
                break
            depth_u = {u: min(gamma, depth - level[u]) for u in active}
            frontier = {u: list(tl[u][level[u]][:k]) for u in active}
            found = {u: [] for u in active}
            for j in range(1, max(depth_u.values()) + 1):
                users = [u for u in active if depth_u[u] >= j and frontier[u]]
                if not users:
                    break
                rows, prefixes = [], []
                for u in users:
                    for prefix, _ in frontier[u]:
                        rows.append(u)
                        prefixes.append(prefix)
                logp = scorer.logprobs(rows, prefixes)
                cands = {u: [] for u in users}
                i = 0
                for u in users:
                    for prefix, score in frontier[u]:
                        allowed = target.allowed(target.node_of(prefix))
                        lp = logp[i, allowed].tolist()
                        cands[u].extend((prefix + (t,), score + v) for t, v in zip(allowed, lp)
                                        if v > -math.inf and t != target.eos_id)
                        i += 1
                    cands[u].sort(key=lambda c: -c[1])
                    frontier[u] = cands[u][:n]
                    found[u].append({p for p, _ in frontier[u]})
            for u in active:
                a = 0
                for j, got in enumerate(found[u], start=1):
                    want = {p for p, _ in tl[u][level[u] + j][:k]}
                    ok = want <= got
                    per_level[level[u] + j - 1][0] += int(ok)
                    per_level[level[u] + j - 1][1] += 1
                    if ok and a == j - 1:
                        a = j
                drafted += depth_u[u]
                accepted += a
                rounds += 1
                calls += 1
                level[u] += a + 1
    num = max(1, len(samples))
    return {
        "acceptance_rate": accepted / max(1, drafted),
        "accepted_levels_per_round": accepted / max(1, rounds),
        "target_calls_per_user": calls / num,
        "plain_target_calls_per_user": depth + 1,
        "level_containment": [c / max(1, d) for c, d in per_level],
        "rounds": rounds, "drafted_levels": drafted, "accepted_levels": accepted,
        "users": len(samples), "k": k, "n": n, "gamma": gamma,
    }


@torch.no_grad()
def target_val_levels(target, samples, k, batch=16):
    levels = []
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        ids = [target.target_prompt(target.prompt_ids(h)) for _, h, _ in chunk]
        scorer = PrefixScorer(target.model, ids, target.earn, target.pad_id)
        got, _ = constrained_beam_levels(target, scorer, len(chunk), k)
        levels.extend(got)
    return levels


# ---------------------------------------------------------------------------------------------

def _copy(src, dst):
    # The source may be read-only (copied modes): replace rather than overwrite on a re-run.
    if os.path.lexists(dst):
        os.remove(dst)
    shutil.copy(src, dst)


def write_checkpoint(draft, target, out):
    os.makedirs(out, exist_ok=True)
    draft.save_pretrained(out, safe_serialization=True)
    for name in COPIED_FILES:
        src = os.path.join(target.path, name)
        if os.path.isfile(src):
            _copy(src, os.path.join(out, name))
    _copy(target.catalogue_path, os.path.join(out, target.spec["catalogue"]))
    titles = target.spec.get("titles")
    if titles and os.path.isfile(os.path.join(target.path, titles)):
        _copy(os.path.join(target.path, titles), os.path.join(out, titles))


def run(args):
    start = time.time()
    budget_s = args.time_budget_minutes * 60.0
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    target = Target(args.target)
    for p in target.model.parameters():
        p.requires_grad_(False)
    records, made, gen_s = load_or_make_teacher(args, target, budget_s, start)
    if args.teacher_only:
        print(f"{args.teacher_cache}: {len(records)} prompts ({made} made in {gen_s:.0f}s)")
        return
    os.makedirs(args.out, exist_ok=True)
    if not records:
        raise InputError(f"{args.data}: no training prompts for teacher data")
    draft = make_draft(args, target)
    target_ne = non_embedding_params(target.model)
    draft_ne = non_embedding_params(draft)
    print(f"target {target_ne / 1e3:.0f}k non-embedding parameters, draft {draft_ne / 1e3:.0f}k "
          f"({draft_ne / target_ne:.2f}x), {sum(p.numel() for p in draft.parameters()) / 1e3:.0f}k "
          f"in all; {len(records)} teacher prompts ({made} made in {gen_s:.0f}s)", flush=True)

    val = beauty_data.valid_samples(args.data)
    val = random.Random(args.seed + 1).sample(val, min(args.val_users, len(val)))
    t0 = time.time()
    val_levels = target_val_levels(target, val, args.val_k)
    target_val_s = time.time() - t0
    t0 = time.time()
    draft.eval()
    untrained = simulate_strict(target, draft, val, val_levels, args.val_k, args.val_n, args.gamma)
    val_s = time.time() - t0
    print(f"untrained draft: acceptance {untrained['acceptance_rate']:.3f}, target calls/user "
          f"{untrained['target_calls_per_user']:.2f} (target levels {target_val_s:.0f}s, "
          f"simulation {val_s:.0f}s)", flush=True)

    decay = [p for p in draft.parameters() if p.dim() >= 2]
    no_decay = [p for p in draft.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.98))
    steps_per_epoch = math.ceil(len(records) / args.batch_size)
    planned = steps_per_epoch * args.epochs
    train_start = time.time()
    train_budget = budget_s - (train_start - start) - 1.2 * val_s - 10

    def lr_at(step):
        if step < args.warmup_steps:
            return args.lr * (step + 1) / args.warmup_steps
        progress = max((step - args.warmup_steps) / max(1, planned - args.warmup_steps),
                       (time.time() - train_start) / max(1.0, train_budget))
        progress = min(1.0, progress)
        return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    log = {"objective": args.objective, "args": vars(args), "target": os.path.abspath(args.target),
           "target_earn": target.earn is not None,
           "target_non_embedding_parameters": target_ne, "draft_non_embedding_parameters": draft_ne,
           "draft_parameters": sum(p.numel() for p in draft.parameters()),
           "teacher_prompts": len(records), "teacher_prompts_made": made,
           "teacher_seconds": gen_s, "untrained": untrained, "epochs": []}
    draft.train()
    step = 0
    stop = False
    for epoch in range(args.epochs):
        order = list(range(len(records)))
        rng.shuffle(order)
        # Batches of similar prompt length, in random order.
        order.sort(key=lambda i: len(records[i]["ids"]) // 8)
        batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        rng.shuffle(batches)
        t_epoch = time.time()
        sums, count = {}, 0
        for rows in batches:
            if time.time() - train_start > train_budget:
                stop = True
                break
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            terms = batch_losses(draft, [records[i] for i in rows], args)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            count += 1
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step} " + " ".join(
                    f"{n} {v / count:.4f}" for n, v in sums.items()) +
                    f" elapsed {(time.time() - start) / 60:.1f} min", flush=True)
        if count:
            entry = {"epoch": epoch, "steps": step, "complete": not stop,
                     "seconds": time.time() - t_epoch,
                     "prompts_per_second": count * args.batch_size / (time.time() - t_epoch)}
            entry.update({n: v / count for n, v in sums.items()})
            log["epochs"].append(entry)
            print(f"epoch {epoch}: " + " ".join(f"{n} {v / count:.4f}" for n, v in sums.items()),
                  flush=True)
        if stop or not count:
            break
    draft.eval()
    t0 = time.time()
    trained = simulate_strict(target, draft, val, val_levels, args.val_k, args.val_n, args.gamma)
    log["trained"] = trained
    log["valid_seconds"] = time.time() - t0
    write_checkpoint(draft, target, args.out)
    log["total_seconds"] = time.time() - start
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=2)
    print(f"trained draft: acceptance {trained['acceptance_rate']:.3f} (untrained "
          f"{untrained['acceptance_rate']:.3f}), target calls/user "
          f"{trained['target_calls_per_user']:.2f} of {trained['plain_target_calls_per_user']}; "
          f"wrote {args.out} in {log['total_seconds'] / 60:.1f} min", flush=True)


@torch.no_grad()
def check_scorer():
    """PrefixScorer against whole-sequence forwards of a random tiny model (plain and EARN)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from earn_model import EarnLlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=False)
    earn = {"split_layer": 1, "prefix_register_ids": [40, 41], "suffix_register_ids": [42, 43]}
    gen = torch.Generator().manual_seed(1)
    prompts = [[1] + torch.randint(3, 40, (n,), generator=gen).tolist() for n in (5, 9, 2)]
    prefixes = [(), (7,), (7, 11), (30, 31, 32)]
    for variant in (None, earn):
        if variant is None:
            model = LlamaForCausalLM(config).eval()
            wrapped = prompts
        else:
            config.earn = variant
            model = EarnLlamaForCausalLM(config).eval()
            wrapped = [wrap_prompt(p, variant, 1) for p in prompts]
        scorer = PrefixScorer(model, wrapped, variant, 0)
        rows = [r for r in range(len(prompts)) for _ in prefixes]
        got = scorer.logprobs(rows, [q for _ in prompts for q in prefixes])
        for i, (r, q) in enumerate(zip(rows, [q for _ in prompts for q in prefixes])):
            ids = torch.tensor([wrapped[r] + list(q)])
            want = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
            err = (got[i] - want).abs().max().item()
            assert err < 1e-4, f"prefix scorer differs from the full forward by {err}"


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        draft_objectives.self_check()
        check_scorer()
        print("draft objectives and prefix scorer: all checks passed")
        return 0
    try:
        run(args)
    except InputError as e:
        print(f"train_draft: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
