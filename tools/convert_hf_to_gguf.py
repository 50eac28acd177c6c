#!/usr/bin/env python3
"""Converts a Hugging Face LlamaForCausalLM checkpoint (safetensors) to a GGUF file for llama.cpp.

Written for the benchmarks (tools/bench_baselines.py), so that llama.cpp runs the same weights as
earnserve and transformers. What it writes:
  - "llama" architecture metadata (sizes, heads, RoPE base, RMSNorm epsilon) under llama.cpp's keys;
  - every tensor under llama.cpp's names (token_embd, blk.N.attn_q, ..., output): F32, or with
    --outtype bf16 / q8_0 the 2-D matrices in BF16 or Q8_0 (blocks of 32 int8 values with one
    f16 scale, gguf's own quantiser) and the norm vectors in F32, as llama.cpp's converter does; with the
    Q and K projection rows reordered per head from Hugging Face's rotate-half RoPE layout (pairs
    (i, i + d/2)) to the interleaved layout llama.cpp's "llama" architecture uses (pairs
    (2i, 2i + 1));
  - a SentencePiece-style ("llama") vocabulary: from tokenizer.json when there is one (a BPE
    model: scores from the merge ranks, token types, bos/eos/unk), otherwise a placeholder
    vocabulary of the right size (<unk>, <s>, </s>, the 256 byte tokens, then filler pieces): the
    benchmarks feed token ids, so only its size matters.
--verify loads the result with llama-cpp-python and checks it against transformers on the same
checkpoint: tokenisation of a text, logits of every prompt position, and a greedy continuation.

  .venv/bin/python tools/convert_hf_to_gguf.py MODEL_DIR OUT.gguf [--outtype f32|bf16|q8_0] [--verify]

--verify needs F32 (the other types change the logits by design).
"""

import argparse
import json
import os
import re
import sys

import numpy as np

# gguf token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 1, 2, 3, 6
BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class ConversionError(Exception):
  """A one-line, user-facing reason why a checkpoint cannot be converted."""


def read_json(path):
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except OSError as e:
    raise ConversionError(f"{path}: cannot read: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path}: invalid JSON: {e}") from e


def load_tensors(model_dir):
  """All tensors of the checkpoint (one file or shards) as float32 numpy arrays, by HF name."""
  from safetensors import safe_open
  index = os.path.join(model_dir, "model.safetensors.index.json")
  if os.path.exists(index):
    files = sorted(set(read_json(index)["weight_map"].values()))
  else:
    files = ["model.safetensors"]
  tensors = {}
  for name in files:
    path = os.path.join(model_dir, name)
    if not os.path.exists(path):
      raise ConversionError(f"{path}: no such file")
    try:
      with safe_open(path, framework="pt") as f:
        for key in f.keys():
          tensors[key] = f.get_tensor(key).float().numpy()
    except Exception as e:  # safetensors raises its own error types for bad headers
      raise ConversionError(f"{path}: cannot read safetensors: {e}") from e
  return tensors


def rotate_half_to_interleaved(weight, num_heads):
  """[num_heads * d, in] rows per head from (i, i + d/2) pairs to (2i, 2i + 1) pairs."""
  rows, cols = weight.shape
  d = rows // num_heads
  return np.ascontiguousarray(
      weight.reshape(num_heads, 2, d // 2, cols).swapaxes(1, 2).reshape(rows, cols))


class Hparams:
  """The config.json fields the conversion needs, checked."""

  def __init__(self, config, source):
    arch = (config.get("architectures") or [None])[0]
    if arch != "LlamaForCausalLM":
      raise ConversionError(f"{source}: architecture {arch!r} is not LlamaForCausalLM")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size"):
      if not isinstance(config.get(key), int) or config[key] <= 0:
        raise ConversionError(f"{source}: field '{key}' must be a positive integer")
    if config.get("attention_bias") or config.get("mlp_bias"):
      raise ConversionError(f"{source}: attention_bias / mlp_bias are not supported")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", None):
      raise ConversionError(f"{source}: rope type {rope_type!r} is not supported (only default)")
    self.hidden = config["hidden_size"]
    self.intermediate = config["intermediate_size"]
    self.layers = config["num_hidden_layers"]
    self.heads = config["num_attention_heads"]
    self.kv_heads = config.get("num_key_value_heads") or self.heads
    self.head_dim = config.get("head_dim") or self.hidden // self.heads
    self.vocab = config["vocab_size"]
    self.context = config.get("max_position_embeddings") or 2048
    self.eps = float(config.get("rms_norm_eps", 1e-6))
    self.rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    self.tied = bool(config.get("tie_word_embeddings", False))
    self.bos = config.get("bos_token_id")
    self.eos = config.get("eos_token_id")
    if isinstance(self.eos, list):
      self.eos = self.eos[0] if self.eos else None


def vocab_from_tokenizer_json(path, hp):
  """(tokens, scores, types, special ids) of a BPE tokenizer.json as a SentencePiece vocabulary."""
  doc = read_json(path)
  model = doc.get("model") or {}
  if model.get("type") != "BPE":
    raise ConversionError(f"{path}: tokenizer model {model.get('type')!r} is not BPE")
  vocab = model["vocab"]
  for added in doc.get("added_tokens", []):
    vocab.setdefault(added["content"], added["id"])
  if len(vocab) > hp.vocab or max(vocab.values()) >= hp.vocab:
    raise ConversionError(f"{path}: {len(vocab)} tokens do not fit vocab_size {hp.vocab}")
  tokens = [f"<unused_{i}>" for i in range(hp.vocab)]
  types = [TOKEN_CONTROL] * hp.vocab  # ids the tokenizer lacks are never produced by text
  scores = [0.0] * hp.vocab
  for piece, i in vocab.items():
    tokens[i] = piece
    types[i] = TOKEN_BYTE if BYTE_TOKEN.match(piece) else TOKEN_NORMAL
  # SentencePiece merges the adjacent pair whose joined piece scores highest; a BPE merge's
  # priority is its rank, so the piece made by merge r scores -r.
  for rank, merge in enumerate(model.get("merges", [])):
    left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
    i = vocab.get(left + right)
    if i is not None and scores[i] == 0.0:
      scores[i] = -float(rank + 1)
  special = {}
  for added in doc.get("added_tokens", []):
    if added.get("special"):
      types[added["id"]] = TOKEN_CONTROL
  unk = model.get("unk_token")
  if unk is not None and unk in vocab:
    types[vocab[unk]] = TOKEN_UNKNOWN
    special["unk"] = vocab[unk]
  config_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
  tok_config = read_json(config_path) if os.path.exists(config_path) else {}
  for key in ("bos", "eos", "pad"):
    name = tok_config.get(f"{key}_token")
    if isinstance(name, dict):
      name = name.get("content")
    if name in vocab:
      special[key] = vocab[name]
  special.setdefault("bos", hp.bos)
  special.setdefault("eos", hp.eos)
  special["add_bos"] = bool(tok_config.get("add_bos_token", True))
  return tokens, scores, types, special


def placeholder_vocab(hp):
  """A Llama-like vocabulary of vocab_size pieces for a checkpoint without a tokenizer."""
  tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
  types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL] + [TOKEN_BYTE] * 256
  if hp.vocab < len(tokens):
    raise ConversionError(f"vocab_size {hp.vocab} is too small for a placeholder vocabulary")
  for i in range(len(tokens), hp.vocab):
    tokens.append(f"\u2581p{i}")
    types.append(TOKEN_NORMAL)
  scores = [0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(hp.vocab - 259)]
  return tokens, scores, types, {"unk": 0, "bos": 1, "eos": 2, "add_bos": False}


def gguf_tensors(tensors, hp, source):
  """(llama.cpp name, float32 array) pairs in file order."""

  def take(name, shape):
    if name not in tensors:
      raise ConversionError(f"{source}: checkpoint has no tensor '{name}'")
    t = tensors[name]
    if tuple(t.shape) != tuple(shape):
      raise ConversionError(f"{source}: tensor '{name}' has shape {list(t.shape)}, "
                            f"expected {list(shape)}")
    return np.ascontiguousarray(t, dtype=np.float32)

  h, q_dim, kv_dim = hp.hidden, hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim
  embed_name = "model.embed_tokens.weight"
  if embed_name not in tensors and hp.tied:
    embed_name = "lm_head.weight"
  embed = take(embed_name, (hp.vocab, h))
  out = [("token_embd.weight", embed)]
  for l in range(hp.layers):
    p = f"model.layers.{l}."
    b = f"blk.{l}."
    out += [
        (b + "attn_norm.weight", take(p + "input_layernorm.weight", (h,))),
        (b + "attn_q.weight",
         rotate_half_to_interleaved(take(p + "self_attn.q_proj.weight", (q_dim, h)), hp.heads)),
        (b + "attn_k.weight",
         rotate_half_to_interleaved(take(p + "self_attn.k_proj.weight", (kv_dim, h)),
                                    hp.kv_heads)),
        (b + "attn_v.weight", take(p + "self_attn.v_proj.weight", (kv_dim, h))),
        (b + "attn_output.weight", take(p + "self_attn.o_proj.weight", (h, q_dim))),
        (b + "ffn_norm.weight", take(p + "post_attention_layernorm.weight", (h,))),
        (b + "ffn_gate.weight", take(p + "mlp.gate_proj.weight", (hp.intermediate, h))),
        (b + "ffn_up.weight", take(p + "mlp.up_proj.weight", (hp.intermediate, h))),
        (b + "ffn_down.weight", take(p + "mlp.down_proj.weight", (h, hp.intermediate))),
    ]
  out.append(("output_norm.weight", take("model.norm.weight", (h,))))
  # Written out even when tied, so llama.cpp needs no fallback.
  lm_head = embed if hp.tied and "lm_head.weight" not in tensors else take("lm_head.weight",
                                                                           (hp.vocab, h))
  out.append(("output.weight", lm_head))
  return out


# --outtype -> (gguf tensor type of the matrices, file type); None: F32.
OUT_TYPES = ("f32", "bf16", "q8_0")


def convert(model_dir, out_path, outtype="f32"):
  import gguf
  qtype, file_type = {
      "f32": (None, gguf.LlamaFileType.ALL_F32),
      "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
      "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
  }[outtype]
  config_path = os.path.join(model_dir, "config.json")
  hp = Hparams(read_json(config_path), config_path)
  tokenizer_path = os.path.join(model_dir, "tokenizer.json")
  if os.path.exists(tokenizer_path):
    tokens, scores, types, special = vocab_from_tokenizer_json(tokenizer_path, hp)
  else:
    tokens, scores, types, special = placeholder_vocab(hp)
  tensors = gguf_tensors(load_tensors(model_dir), hp, model_dir)

  writer = gguf.GGUFWriter(out_path, "llama")
  writer.add_name(os.path.basename(os.path.normpath(model_dir)))
  writer.add_file_type(file_type)
  writer.add_context_length(hp.context)
  writer.add_embedding_length(hp.hidden)
  writer.add_feed_forward_length(hp.intermediate)
  writer.add_block_count(hp.layers)
  writer.add_head_count(hp.heads)
  writer.add_head_count_kv(hp.kv_heads)
  writer.add_key_length(hp.head_dim)
  writer.add_value_length(hp.head_dim)
  writer.add_rope_dimension_count(hp.head_dim)
  writer.add_rope_freq_base(hp.rope_theta)
  writer.add_layer_norm_rms_eps(hp.eps)
  writer.add_vocab_size(hp.vocab)
  writer.add_tokenizer_model("llama")
  writer.add_token_list(tokens)
  writer.add_token_scores(scores)
  writer.add_token_types(types)
  for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                   ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
    if special.get(key) is not None:
      add(int(special[key]))
  writer.add_add_bos_token(special["add_bos"])
  writer.add_add_eos_token(False)
  writer.add_add_space_prefix(True)
  for name, array in tensors:
    if qtype is not None and array.ndim == 2:
      writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    else:
      writer.add_tensor(name, array)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return hp


def verify(model_dir, gguf_path, hp, greedy_tokens=32):
  """Checks llama.cpp on the GGUF against transformers on the checkpoint; raises on mismatch."""
  import llama_cpp
  import torch
  from transformers import AutoModelForCausalLM

  tokenizer_path = os.path.join(model_dir, "tokenizer.json")
  if os.path.exists(tokenizer_path):
    from tokenizers import Tokenizer
    text = "Once upon a time, there was a little dog named Max. He liked to"
    ids = Tokenizer.from_file(tokenizer_path).encode(text).ids
  else:
    text, ids = None, [1] + [(7 * i + 3) % hp.vocab for i in range(1, 24)]

  # F32 KV cache (llama.cpp defaults to F16) so that only summation order differs.
  llm = llama_cpp.Llama(model_path=gguf_path, n_ctx=len(ids) + greedy_tokens + 8,
                        n_batch=len(ids), logits_all=True, n_threads=2,
                        type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32,
                        verbose=False)
  if text is not None:
    ours = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if list(ours) != list(ids):
      raise ConversionError(f"{gguf_path}: llama.cpp tokenises the check text as {ours}, "
                            f"transformers as {ids}")
  llm.reset()
  llm.eval(ids)
  cpp_logits = np.array(llm.scores[:len(ids)], dtype=np.float32)

  model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
  with torch.inference_mode():
    hf_logits = model(torch.tensor([ids])).logits[0].float().numpy()
  diff = float(np.abs(cpp_logits - hf_logits).max())
  scale = float(np.abs(hf_logits).max())
  if not diff <= 1e-4 * max(1.0, scale):
    raise ConversionError(f"{gguf_path}: llama.cpp logits differ from transformers by {diff:.3g} "
                          f"(logit scale {scale:.3g})")

  cpp_greedy = []
  token = int(np.argmax(cpp_logits[-1]))
  for _ in range(greedy_tokens):
    cpp_greedy.append(token)
    llm.eval([token])
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
  with torch.inference_mode():
    out = model.generate(torch.tensor([ids]), max_new_tokens=greedy_tokens, do_sample=False,
                         min_new_tokens=greedy_tokens, eos_token_id=None, pad_token_id=0)
  hf_greedy = out[0, len(ids):].tolist()
  if cpp_greedy != hf_greedy:
    raise ConversionError(f"{gguf_path}: greedy continuation differs: llama.cpp {cpp_greedy}, "
                          f"transformers {hf_greedy}")
  print(f"verified {gguf_path}: {len(ids)} prompt positions, logits max |diff| {diff:.2e} "
        f"(scale {scale:.2f}), {greedy_tokens} greedy tokens equal")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("model_dir", help="Hugging Face checkpoint directory")
  parser.add_argument("out", help="output .gguf path")
  parser.add_argument("--outtype", choices=OUT_TYPES, default="f32",
                      help="type of the 2-D weight matrices (norms stay F32)")
  parser.add_argument("--verify", action="store_true",
                      help="check llama.cpp on the result against transformers (F32 only)")
  args = parser.parse_args()
  if args.verify and args.outtype != "f32":
    parser.error("--verify compares logits with transformers' f32 and needs --outtype f32")
  try:
    hp = convert(args.model_dir, args.out, args.outtype)
    print(f"wrote {args.out}: {hp.layers} layers, hidden {hp.hidden}, vocab {hp.vocab}, "
          f"{args.outtype.upper()}")
    if args.verify:
      verify(args.model_dir, args.out, hp)
  except ConversionError as e:
    print(f"convert_hf_to_gguf: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
