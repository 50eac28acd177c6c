#!/usr/bin/env python3
"""Writes random-weight recommenders with the shapes of real LLMs, full and EARN, sharing weights.

For the LLM-shape EARN benchmarks (bench/llm_earn_bench.cpp, bench/catalogue_bench.cpp): the
weights are random (normal, std 0.02, fixed seed), so the recommendations mean nothing, but every
matrix has the shape of the named model, with the vocabulary grown by 1,024 item-code tokens:

  qwen2.5-0.5b  Qwen2ForCausalLM, 24 layers, hidden 896, MLP 4864, 14 heads / 2 KV heads of 64,
                tied embeddings, q/k/v biases, vocabulary 151,936 + 1,024 = 152,960 (494M params)
  llama-3.2-1b  LlamaForCausalLM, 16 layers, hidden 2048, MLP 8192, 32 heads / 8 KV heads of 64,
                tied embeddings, vocabulary 128,256 + 1,024 = 129,280 (1.24B params)

The tokenizer, catalogue and titles are the bundled Beauty recommender's (models/beauty-earn):
its token ids are the first ids of the grown vocabulary, so the prompts are real Beauty users'
histories. Each variant directory holds symlinks to one weights file and its own config.json:

  OUT/<shape>/full-<workload>             the plain model
  OUT/<shape>/earn-k<K>-r<R>-<workload>   split layer K, R/2 prefix + R/2 suffix registers (the
                                          vocabulary's last ids)

and a recommendation.json per workload: codes-<H> ("{identifier}", the last H items) or
titles-<H> ("{identifier} {title}"). Not committed (about 2 GB per shape; write under /tmp or
build/), e.g.
  .venv/bin/python tools/make_llm_rec_models.py --out /tmp/llm-rec --shape qwen2.5-0.5b \\
      --splits 2 --registers 4 --workloads codes-20,titles-20,titles-50
"""

import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BEAUTY = os.path.join(ROOT, "models", "beauty-earn")
NUM_CODE_TOKENS = 1024

SHAPES = {
    "qwen2.5-0.5b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                         num_hidden_layers=24, hidden_size=896, intermediate_size=4864,
                         num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                         vocab_size=151936 + NUM_CODE_TOKENS, tie_word_embeddings=True,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, qkv_bias=True),
    "llama-3.2-1b": dict(architectures=["LlamaForCausalLM"], model_type="llama",
                         num_hidden_layers=16, hidden_size=2048, intermediate_size=8192,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         vocab_size=128256 + NUM_CODE_TOKENS, tie_word_embeddings=True,
                         rms_norm_eps=1e-5, rope_theta=500000.0, qkv_bias=False),
}


def write_weights(shape, path, seed):
    rng = np.random.default_rng(seed)

    def normal(*dims):
        return (rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02))

    h, inter = shape["hidden_size"], shape["intermediate_size"]
    q = shape["num_attention_heads"] * shape["head_dim"]
    kv = shape["num_key_value_heads"] * shape["head_dim"]
    t = {"model.embed_tokens.weight": normal(shape["vocab_size"], h),
         "model.norm.weight": np.ones(h, dtype=np.float32)}
    for i in range(shape["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = normal(q, h)
        t[p + "self_attn.k_proj.weight"] = normal(kv, h)
        t[p + "self_attn.v_proj.weight"] = normal(kv, h)
        t[p + "self_attn.o_proj.weight"] = normal(h, q)
        if shape["qkv_bias"]:
            t[p + "self_attn.q_proj.bias"] = normal(q)
            t[p + "self_attn.k_proj.bias"] = normal(kv)
            t[p + "self_attn.v_proj.bias"] = normal(kv)
        t[p + "mlp.gate_proj.weight"] = normal(inter, h)
        t[p + "mlp.up_proj.weight"] = normal(inter, h)
        t[p + "mlp.down_proj.weight"] = normal(h, inter)
        t[p + "input_layernorm.weight"] = np.ones(h, dtype=np.float32)
        t[p + "post_attention_layernorm.weight"] = np.ones(h, dtype=np.float32)
    save_file(t, path, metadata={"format": "pt"})
    return sum(a.size for a in t.values())


def config_json(shape, earn):
    c = {k: v for k, v in shape.items() if k != "qkv_bias"}
    c.update(dtype="float32", hidden_act="silu", max_position_embeddings=4096, bos_token_id=1,
             eos_token_id=2, attention_bias=shape["qkv_bias"], mlp_bias=False,
             rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]})
    del c["rope_theta"]
    if earn:
        c["earn"] = earn
    return c


def workload_spec(name):
    kind, _, history = name.partition("-")
    if kind not in ("codes", "titles") or not history.isdigit():
        raise SystemExit(f"bad workload {name!r}: codes-H or titles-H")
    spec = {"catalogue": "catalogue.json", "titles": "titles.tsv",
            "prompt_template": "{history}</s>", "item_separator": "</s>",
            "history_limit": int(history)}
    if kind == "titles":
        spec["item_format"] = "{identifier} {title}"
    return spec


def write_variant(dirname, weights, shape, earn, spec):
    os.makedirs(dirname, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "catalogue.json", "titles.tsv"):
        link = os.path.join(dirname, name)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(BEAUTY, name)), link)
    link = os.path.join(dirname, "model.safetensors")
    if not os.path.lexists(link):
        os.symlink(os.path.abspath(weights), link)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        json.dump(config_json(shape, earn), f, indent=2)
    with open(os.path.join(dirname, "recommendation.json"), "w") as f:
        json.dump(spec, f, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--splits", default="2", help="EARN split layers, e.g. 1,2,6 (L/4 = 6)")
    ap.add_argument("--registers", default="4", help="register counts, e.g. 4,8 (2+2, 4+4)")
    ap.add_argument("--workloads", default="codes-20,titles-20,codes-50,titles-50")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    base = os.path.join(args.out, args.shape)
    os.makedirs(base, exist_ok=True)
    weights = os.path.join(base, "model.safetensors")
    if not os.path.exists(weights):
        n = write_weights(shape, weights, args.seed)
        print(f"wrote {weights}: {n / 1e6:.0f}M parameters")
    vocab = shape["vocab_size"]
    for w in args.workloads.split(","):
        spec = workload_spec(w)
        write_variant(os.path.join(base, f"full-{w}"), weights, shape, None, spec)
        for k in (int(x) for x in args.splits.split(",")):
            for r in (int(x) for x in args.registers.split(",")):
                if r % 2 or not 0 < k < shape["num_hidden_layers"]:
                    raise SystemExit(f"bad split {k} or register count {r}")
                ids = list(range(vocab - r, vocab))
                earn = {"split_layer": k, "prefix_register_ids": ids[: r // 2],
                        "suffix_register_ids": ids[r // 2:]}
                write_variant(os.path.join(base, f"earn-k{k}-r{r}-{w}"), weights, shape, earn,
                              spec)
    print("variants:", " ".join(sorted(d for d in os.listdir(base) if d != "model.safetensors")))


if __name__ == "__main__":
    main()
