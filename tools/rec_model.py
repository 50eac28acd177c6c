"""Forward pass, KV cache and catalogue-constrained beam search for recommendation models.

One forward for both variants of tools/train_rec.py: a plain causal Llama (earn=None) and EARN,
where layers >= split_layer let every token see only register tokens and generated tokens (the
mask of tools/earn_model.EarnLlamaForCausalLM, checked equal by tools/check_rec_model.py). The
model is a transformers LlamaForCausalLM; its decoder layers are called one by one with a mask
per layer and a small KV cache, which makes three things cheap:
  - training: the prompt head shared by every sample ([BOS] [prefix registers] "Below is an
    instruction ...") is computed once per batch and broadcast as past keys/values;
  - beam search: prompts are prefilled once, then each step feeds one token per beam;
  - EARN in beam search without recomputing the whole sequence.
Not thread-safe (torch modules and caches are mutated); CPU or CUDA.
"""
import math

import torch

from beauty_data import rank_metrics  # noqa: F401 (re-exported; eval and training use it)
from earn_model import kept_mask


class KVCache:
    """Per layer: keys and values [batch, num_kv_heads, num_tokens, head_dim], grown by update().

    The decoder layers' attention calls update(); nothing else of transformers' Cache is used.
    """

    def __init__(self, num_layers):
        self.keys = [None] * num_layers
        self.values = [None] * num_layers

    def update(self, key, value, layer_idx, *args, **kwargs):
        if self.keys[layer_idx] is not None:
            key = torch.cat([self.keys[layer_idx], key], dim=2)
            value = torch.cat([self.values[layer_idx], value], dim=2)
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value

    def expand(self, batch):
        """A batch-1 cache (a shared prefix) seen by `batch` rows; gradients flow back to it."""
        self.keys = [k.expand(batch, -1, -1, -1) for k in self.keys]
        self.values = [v.expand(batch, -1, -1, -1) for v in self.values]

    def select(self, rows):
        """Keeps (and reorders, repeats) the rows named by rows [new_batch] (long)."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


def _additive(mask, dtype):
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, zero, neg)[:, None]


def forward_hidden(model, input_ids, position_ids, key_valid, key_keep, split_layer, cache=None):
    """Final-norm hidden states [B, Tq, hidden] of the new tokens.

    input_ids, position_ids: [B, Tq] the new tokens and their positions.
    key_valid: [B, Tk] bool, every key (cached ones first, then the new tokens): not padding.
    key_keep: [B, Tk] bool, keys visible to layers >= split_layer (registers, generated tokens).
    split_layer: None for plain causal attention.
    cache: KVCache holding the first Tk - Tq keys, extended with the new ones; None when Tq == Tk.
    """
    num_keys = key_valid.shape[1]
    num_new = input_ids.shape[1]
    device = input_ids.device
    hidden = model.model.embed_tokens(input_ids)
    position_embeddings = model.model.rotary_emb(hidden, position_ids=position_ids)
    q_index = torch.arange(num_keys - num_new, num_keys, device=device)[:, None]
    k_index = torch.arange(num_keys, device=device)[None, :]
    # A query row with no visible key (padding; a prompt token in EARN's upper layers) sees
    # itself, as in the reference: its output is never read by a kept token.
    eye = (k_index == q_index)[None]
    lower = ((k_index <= q_index)[None] & key_valid[:, None, :]) | eye
    lower_mask = _additive(lower, hidden.dtype)
    upper_mask = lower_mask
    if split_layer is not None:
        upper_mask = _additive((lower & key_keep[:, None, :]) | eye, hidden.dtype)
    for i, layer in enumerate(model.model.layers):
        mask = lower_mask if split_layer is None or i < split_layer else upper_mask
        hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                       past_key_values=cache, position_embeddings=position_embeddings)
    return model.model.norm(hidden)


def keep_mask(input_ids, earn):
    """[B, T] bool keys visible to EARN's upper layers; all False for a plain model."""
    if earn is None:
        return torch.zeros_like(input_ids, dtype=torch.bool)
    return kept_mask(input_ids, earn)


class ItemTrie:
    """The catalogue's code sequences as a trie over token ids; node 0 is the root.

    REQUIRES: every item has the same number of codes (true of LC-Rec indices), so that all
    beams finish on the same step.
    """

    def __init__(self, index, token_to_id):
        self.children = [{}]
        lengths = set()
        for key, codes in index.items():
            ids = []
            for c in codes:
                t = token_to_id(c)
                if t is None:
                    raise ValueError(f"item {key}: code {c!r} is not a token of the tokenizer")
                ids.append(t)
            lengths.add(len(ids))
            node = 0
            for t in ids:
                nxt = self.children[node].get(t)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][t] = nxt
                    self.children.append({})
                node = nxt
        if len(lengths) != 1:
            raise ValueError(f"catalogue items have differing code lengths {sorted(lengths)}")
        self.depth = lengths.pop()
        self._tokens = [torch.tensor(sorted(c), dtype=torch.long) for c in self.children]

    def child(self, node, token):
        """The child of node by token; -1 for a dead beam or a token not in the trie."""
        return -1 if node < 0 else self.children[node].get(token, -1)

    def allowed(self, nodes, vocab_size, device):
        """[len(nodes), vocab_size] bool: the tokens that continue each node."""
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool)
        for row, node in enumerate(nodes):
            if node >= 0:
                mask[row, self._tokens[node]] = True
        return mask.to(device)


@torch.no_grad()
def beam_search(model, prompts, trie, num_beams, eos_id, pad_id, earn=None):
    """Catalogue-constrained beam search, as transformers' generate with num_beams beams,
    prefix_allowed_tokens_fn over the trie (log-softmax over the whole vocabulary, then the
    disallowed tokens masked), length_penalty 1 and the item's codes followed by EOS.

    prompts: list of B token-id lists (already wrapped with registers for EARN).
    Returns, per prompt, up to num_beams (code id tuple, log-probability incl. EOS), best first.
    """
    device = next(model.parameters()).device
    split = earn["split_layer"] if earn is not None else None
    batch = len(prompts)
    width = max(len(p) for p in prompts)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    valid = torch.zeros(batch, width, dtype=torch.bool)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p)
        valid[row, width - len(p):] = True
    ids, valid = ids.to(device), valid.to(device)
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    keep = keep_mask(ids, earn) & valid
    cache = KVCache(len(model.model.layers))
    hidden = forward_hidden(model, ids, positions, valid, keep, split, cache)
    vocab = model.lm_head.out_features
    logp = torch.log_softmax(model.lm_head(hidden[:, -1]).float(), dim=-1)
    logp = logp.masked_fill(~trie.allowed([0] * batch, vocab, device), -math.inf)
    scores, tokens = logp.topk(num_beams, dim=-1)  # [B, K]
    rows = torch.arange(batch, device=device).repeat_interleave(num_beams)
    cache.select(rows)
    valid, keep = valid[rows], keep[rows]
    last_pos = positions[:, -1][rows]
    seqs = tokens.reshape(-1, 1)
    nodes = [trie.child(0, t) if s > -math.inf else -1
             for t, s in zip(seqs[:, 0].tolist(), scores.reshape(-1).tolist())]
    ones = torch.ones(batch * num_beams, 1, dtype=torch.bool, device=device)
    for step in range(1, trie.depth + 1):
        valid = torch.cat([valid, ones], dim=1)
        keep = torch.cat([keep, ones], dim=1)
        hidden = forward_hidden(model, seqs[:, -1:], (last_pos + step)[:, None], valid, keep,
                                split, cache)
        logp = torch.log_softmax(model.lm_head(hidden[:, -1]).float(), dim=-1)
        if step == trie.depth:
            final = scores.reshape(-1) + logp[:, eos_id]
            break
        logp = logp.masked_fill(~trie.allowed(nodes, vocab, device), -math.inf)
        cand = (scores.reshape(-1, 1) + logp).reshape(batch, num_beams * vocab)
        scores, flat = cand.topk(num_beams, dim=-1)
        src = (torch.arange(batch, device=device)[:, None] * num_beams
               + flat // vocab).reshape(-1)
        token = (flat % vocab).reshape(-1, 1)
        cache.select(src)
        valid, keep, seqs = valid[src], keep[src], torch.cat([seqs[src], token], dim=1)
        nodes = [trie.child(nodes[s], t) if v > -math.inf else -1
                 for s, t, v in zip(src.tolist(), token[:, 0].tolist(), scores.reshape(-1).tolist())]
    final = final.reshape(batch, num_beams).tolist()
    seqs = seqs.reshape(batch, num_beams, -1).tolist()
    results = []
    for row in range(batch):
        ranked = sorted(((tuple(seqs[row][b]), final[row][b]) for b in range(num_beams)
                         if final[row][b] > -math.inf), key=lambda x: -x[1])
        results.append(ranked)
    return results


def evaluate(model, tokenizer, index, samples, num_beams, ks, earn=None, batch_size=16,
             bos_id=1, eos_id=2, pad_id=0, trie=None, prompt_fn=None):
    """Mean Recall@k / NDCG@k over (user, history keys, target keys) samples.

    Top lists come from beam search with num_beams beams (the papers: num_beams == k).
    prompt_fn(index, history keys) -> prompt text; default the LC-Rec prompt
    (beauty_data.build_prompt); a checkpoint's own is beauty_data.prompt_builder(its
    recommendation.json).
    """
    import beauty_data
    from earn_model import wrap_prompt

    prompt_fn = prompt_fn or beauty_data.build_prompt
    trie = trie or ItemTrie(index, tokenizer.token_to_id)
    sums = {}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        texts = [prompt_fn(index, h) for _, h, _ in chunk]
        prompts = [e.ids for e in tokenizer.encode_batch(texts)]
        if earn is not None:
            prompts = [wrap_prompt(p, earn, bos_id) for p in prompts]
        results = beam_search(model, prompts, trie, num_beams, eos_id, pad_id, earn)
        for (_, _, target_keys), ranked in zip(chunk, results):
            targets = [tuple(tokenizer.token_to_id(c) for c in index[k]) for k in target_keys]
            for name, value in rank_metrics([r[0] for r in ranked], targets, ks).items():
                sums[name] = sums.get(name, 0.0) + value
    return {name: value / max(1, len(samples)) for name, value in sums.items()}
