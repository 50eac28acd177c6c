#!/usr/bin/env python3
"""Checks tools/rec_model.py against the references it replaces, on tiny random models.

- forward_hidden (no cache, left padding) equals transformers' LlamaForCausalLM logits (plain)
  and tools/earn_model.EarnLlamaForCausalLM logits (EARN);
- the shared-prefix path used in training (prefix once, broadcast as past keys) equals it too,
  and so do its gradients;
- beam_search equals transformers' generate with num_beams and prefix_allowed_tokens_fn over the
  Beauty trie (sequences and, up to the length normalisation, scores);
- train_rec.py's packed teacher-forcing windows: the tokens of every target's history are what
  the tokenizer makes of the prompt recommendation.json renders (so training sees the engine's
  prompts), and the logits of every target's codes and </s> equal a forward of that prompt
  followed by the item (plain; EARN with its registers, branch per target).
Exits non-zero on a mismatch. Run: .venv/bin/python tools/check_rec_model.py
"""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import beauty_data
import rec_model
import rec_tokenizer
import train_rec
from earn_model import EarnLlamaForCausalLM, wrap_prompt

FAILURES = []


def expect_close(name, a, b, tol=2e-4):
    err = (a - b).abs().max().item()
    print(f"{name}: max abs diff {err:.2e}")
    if not err <= tol:
        FAILURES.append(name)


def make(cls, vocab, earn):
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, rms_norm_eps=1e-6, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0, initializer_range=0.2,
                         tie_word_embeddings=False)
    if earn is not None:
        config.earn = earn
    torch.manual_seed(0)
    return cls(config).float().eval()


def left_pad(prompts):
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        valid[r, width - len(p):] = True
    return ids, valid, (valid.long().cumsum(1) - 1).clamp(min=0)


def main():
    index = beauty_data.load_index()
    tok, prefix, suffix = rec_tokenizer.build_tokenizer(index, [], 400, num_registers=2)
    trie = rec_model.ItemTrie(index, tok.token_to_id)
    samples = beauty_data.test_samples()[:3]
    texts = [beauty_data.build_prompt(index, h[-n:]) for (_, h, _), n in zip(samples, (1, 3, 2))]
    plain_prompts = [e.ids for e in tok.encode_batch(texts)]
    for variant in ("full", "earn"):
        earn = None
        prompts = plain_prompts
        if variant == "earn":
            earn = {"split_layer": 1, "prefix_register_ids": prefix, "suffix_register_ids": suffix}
            prompts = [wrap_prompt(p, earn, 1) for p in plain_prompts]
        ref = make(EarnLlamaForCausalLM if earn else LlamaForCausalLM, tok.get_vocab_size(), earn)
        ids, valid, pos = left_pad(prompts)
        with torch.no_grad():
            want = ref(ids, attention_mask=valid.long(), position_ids=pos).logits
            keep = rec_model.keep_mask(ids, earn) & valid
            split = earn["split_layer"] if earn else None
            got = ref.lm_head(rec_model.forward_hidden(ref, ids, pos, valid, keep, split))
        expect_close(f"{variant}: forward vs reference logits", got[valid], want[valid])

        # Training layout: right padding, shared head computed once.
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, :len(p)] = torch.tensor(p)
        head = 0
        while all(p[head] == prompts[0][head] for p in prompts):
            head += 1
        full_valid = ids != 0
        keep = rec_model.keep_mask(ids, earn)
        pos = torch.arange(width)[None].expand(len(prompts), width)
        ref.zero_grad()
        base = rec_model.forward_hidden(ref, ids, pos, full_valid, keep, split)[:, head:]
        base[full_valid[:, head:]].square().sum().backward()
        g_base = ref.model.layers[0].self_attn.q_proj.weight.grad.clone()
        ref.zero_grad()
        cache = rec_model.KVCache(len(ref.model.layers))
        rec_model.forward_hidden(ref, ids[:1, :head], pos[:1, :head], full_valid[:1, :head],
                                 keep[:1, :head], split, cache)
        cache.expand(len(prompts))
        shared = rec_model.forward_hidden(ref, ids[:, head:], pos[:, head:], full_valid, keep,
                                          split, cache)
        shared[full_valid[:, head:]].square().sum().backward()
        g_shared = ref.model.layers[0].self_attn.q_proj.weight.grad.clone()
        expect_close(f"{variant}: shared-prefix forward", shared.detach()[full_valid[:, head:]],
                     base.detach()[full_valid[:, head:]])
        expect_close(f"{variant}: shared-prefix gradient", g_shared, g_base, tol=1e-3)

        for beams in (3, 6):
            got = rec_model.beam_search(ref, prompts, trie, beams, eos_id=2, pad_id=0, earn=earn)
            ids, valid, _ = left_pad(prompts)

            def allowed(batch_id, seq, n=ids.shape[1]):
                return sorted(trie.children[_walk(trie, seq[n:].tolist())]) or [2]

            out = ref.generate(ids, attention_mask=valid.long(), num_beams=beams,
                               num_return_sequences=beams, do_sample=False, max_new_tokens=5,
                               prefix_allowed_tokens_fn=allowed, eos_token_id=2, pad_token_id=0,
                               output_scores=True, return_dict_in_generate=True,
                               early_stopping=False, length_penalty=1.0,
                               use_cache=earn is None)
            for r in range(len(prompts)):
                seqs = out.sequences[r * beams:(r + 1) * beams, ids.shape[1]:].tolist()
                hf = [tuple(s[:trie.depth]) for s in seqs]
                hf_scores = torch.tensor(out.sequences_scores[r * beams:(r + 1) * beams].tolist())
                mine = [g[0] for g in got[r]]
                mine_scores = torch.tensor([g[1] for g in got[r]]) / (trie.depth + 1)
                ok = hf == mine
                print(f"{variant}: beam {beams} prompt {r}: sequences {'equal' if ok else 'DIFFER'}")
                if not ok:
                    FAILURES.append(f"{variant} beam {beams} prompt {r}")
                expect_close(f"{variant}: beam {beams} prompt {r} scores", mine_scores, hf_scores)
    check_packing(index, tok, prefix, suffix)
    if FAILURES:
        print("FAILED:", ", ".join(FAILURES))
        sys.exit(1)
    print("all checks passed")


def check_packing(index, tok, prefix, suffix):
    spec = {"prompt_template": train_rec.PROMPT_TEMPLATE, "item_separator": train_rec.ITEM_SEPARATOR,
            "history_limit": beauty_data.HISTORY_LIMIT}
    prompt_fn = beauty_data.prompt_builder(spec)
    code_ids = {k: [tok.token_to_id(c) for c in codes] for k, codes in index.items()}
    samples = beauty_data.test_samples()
    windows = [(h + t)[-n:] for (_, h, t), n in zip(samples[:2], (7, 4))]
    for variant in ("full", "earn"):
        earn = None
        if variant == "earn":
            earn = {"split_layer": 1, "prefix_register_ids": prefix, "suffix_register_ids": suffix}
        ref = make(LlamaForCausalLM, tok.get_vocab_size(), None)
        packer = train_rec.Packer(code_ids, earn)
        packed = [packer.full(w, 1) if earn is None else packer.earn_window(w, 1) for w in windows]
        batch = train_rec.make_batch(packed, [0, 1], earn, "cpu")
        with torch.no_grad():
            hidden, labels = train_rec.batch_hidden(ref, batch, earn and earn["split_layer"])
        sel = labels[:, 1:] != -100
        got = ref.lm_head(hidden[:, :-1][sel])
        want, tokens_ok = [], True
        for row, items in enumerate(windows):
            ids = batch[0][row].tolist()
            for t in range(1, len(items)):
                prompt = tok.encode(prompt_fn(index, items[:t])).ids
                if earn is None:
                    # The engine's prompt is the start of the window, the item follows it.
                    tokens_ok &= ids[:len(prompt) + 5] == prompt + code_ids[items[t]] + [2]
                else:
                    # The engine's prompt minus its suffix registers is the window's main stream.
                    tokens_ok &= ids[:len(prompt) + len(prefix)] == wrap_prompt(prompt, earn, 1)[:-len(suffix)]
                    prompt = wrap_prompt(prompt, earn, 1)
                seq = torch.tensor([prompt + code_ids[items[t]] + [2]])
                valid = torch.ones_like(seq, dtype=torch.bool)
                with torch.no_grad():
                    h = rec_model.forward_hidden(ref, seq, torch.arange(seq.shape[1])[None], valid,
                                                 rec_model.keep_mask(seq, earn),
                                                 earn and earn["split_layer"])
                want.append(ref.lm_head(h)[0, -6:-1])
            tokens_ok &= labels[row][labels[row] != -100].tolist() == sum(
                (code_ids[k] + [2] for k in items[1:]), [])
        print(f"{variant}: packed window tokens {'equal' if tokens_ok else 'DIFFER'} to the "
              f"engine's prompts and items")
        if not tokens_ok:
            FAILURES.append(f"{variant} packed tokens")
        expect_close(f"{variant}: packed window logits vs per-target forwards", got, torch.cat(want))


def _walk(trie, seq):
    node = 0
    for t in seq:
        node = trie.children[node][t]
    return node


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
