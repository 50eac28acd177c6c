"""Writes the model card (README.md) of a recommender trained by tools/train_rec.py.

Reads DIR/config.json, DIR/train_log.json with the earlier stages' DIR/train_log_stage<N>.json
(each stage the --init of the next; a train_log.json written by tools/average_checkpoints.py
brings its members' logs), the JSON lines of `earnserve eval --json` run with
beam widths 5, 10 and 20 (Recall@K and NDCG@K are taken from the run with K beams, the papers'
protocol) and optionally those of tools/rec_baselines.py --json (listed beside the model), and
writes DIR/README.md with the data, protocol, sizes, training and metrics.

  .venv/bin/python tools/write_model_card.py --model models/beauty-earn --eval eval.jsonl \
      --baselines baselines.jsonl --command "tools/train_rec.py ..." --compare models/beauty-full
"""
import argparse
import json
import os


def load_eval(path, model_dir):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    rows = [r for r in rows if os.path.normpath(r["model"]) == os.path.normpath(model_dir)]
    out = {}
    for k in (5, 10, 20):
        match = [r for r in rows if r["beam_width"] == k]
        if not match:
            raise SystemExit(f"write_model_card: no eval with beam width {k} for {model_dir} in {path}")
        r = match[-1]
        out[k] = {"recall": r[f"recall@{k}"], "ndcg": r[f"ndcg@{k}"], "users": r["users"],
                  "invalid": r["invalid_items"], "users_per_second": r["users_per_second"]}
    return out


def load_baselines(path):
    rows = []
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("split", "test") == "test":
                rows.append((f"{r['baseline']} (no model)",
                             {k: {"recall": r[f"recall@{k}"], "ndcg": r[f"ndcg@{k}"]} for k in (5, 10, 20)}))
    return rows


def training_chain(model_dir, log):
    """(file name, log) of every stage: train_log_stage<N>.json in order, then train_log.json."""
    chain = []
    n = 1
    while os.path.exists(os.path.join(model_dir, f"train_log_stage{n}.json")):
        name = f"train_log_stage{n}.json"
        chain.append((name, json.load(open(os.path.join(model_dir, name)))))
        n += 1
    chain.append(("train_log.json", log))
    return chain


def run_summary(l):
    a = l["args"]
    steps = l["epochs"][-1]["steps"]
    windows = l["num_train_windows"]
    what = (f"loss on each user's last {a['last_items']} item(s), " if a.get("last_items") else "")
    return (f"{l['variant']}, {what}{steps:,} steps of {a['batch_size']} windows (about "
            f"{steps * a['batch_size'] / windows:.1f} passes) at lr {a['lr']} with {a['warmup_steps']} "
            f"warmup steps, seed {a['seed']}, {l['total_seconds'] / 60:.1f} minutes")


def stage_line(n, name, l):
    if "averaged_from" in l:
        parts = []
        names = {os.path.normpath(p): os.path.basename(os.path.normpath(p)) for p in l["input_logs"]}
        for path, member in l["input_logs"].items():
            init = os.path.normpath(member["args"].get("init") or "")
            parent = names.get(init, f"stage {n - 1}")
            parts.append(f"{names[os.path.normpath(path)]} (from {parent}: {run_summary(member)})")
        return (f"Stage {n} ({name}): the mean of {len(parts)} recency fine-tunes, whose logs it keeps: "
                + "; ".join(parts) + ".")
    init = l["args"].get("init")
    return f"Stage {n} ({name}): {run_summary(l)}{', from ' + init if init else ', from scratch'}."


def metrics_table(rows):
    lines = ["| model | Recall@5 | Recall@10 | Recall@20 | NDCG@5 | NDCG@10 | NDCG@20 |",
             "|---|---|---|---|---|---|---|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[k]['recall']:.4f}" for k in (5, 10, 20)) + " | "
                     + " | ".join(f"{m[k]['ndcg']:.4f}" for k in (5, 10, 20)) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", required=True, help="JSON lines of earnserve eval --json")
    ap.add_argument("--command", required=True, help="the training command, for the record")
    ap.add_argument("--compare", help="another bundled model to list beside this one")
    ap.add_argument("--baselines", help="JSON lines of tools/rec_baselines.py --json")
    ap.add_argument("--exclude-history", action="store_true",
                    help="the eval runs used --exclude-history (as the baselines do)")
    args = ap.parse_args()
    exclusion = ("history items excluded (`--exclude-history`, as the baselines; no test target "
                 "is in its user's history)" if args.exclude_history else
                 "no exclusion of history items (no test target is in its user's history)")
    eval_flag = " --exclude-history" if args.exclude_history else ""
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    log = json.load(open(os.path.join(args.model, "train_log.json")))
    metrics = load_eval(args.eval, args.model)
    name = os.path.basename(os.path.normpath(args.model))
    rows = [(name, metrics)]
    if args.compare:
        rows.append((os.path.basename(os.path.normpath(args.compare)), load_eval(args.eval, args.compare)))
    if args.baselines:
        rows += load_baselines(args.baselines)
    earn = cfg.get("earn")
    chain = training_chain(args.model, log)
    # The data section describes the last run over every transition (not a recency fine-tune).
    base = [l for _, l in chain if "averaged_from" not in l and not l["args"].get("last_items")][-1]
    spec = base["recommendation"]
    runs = [m for _, l in chain for m in (l["input_logs"].values() if "averaged_from" in l else [l])]
    recency = sorted({l["args"]["last_items"] for l in runs if l["args"].get("last_items")})
    stage_lines = "".join("\n  - " + stage_line(n + 1, name, l) for n, (name, l) in enumerate(chain))
    final = chain[-1][1]
    if "averaged_from" in final:
        members = [os.path.basename(os.path.normpath(m)) for m in final["averaged_from"]]
        kept = (f"The bundled weights are the element-wise mean of {len(members)} fine-tunes of one "
                f"parent ({', '.join(members)}; `tools/average_checkpoints.py`); the mean itself has "
                f"no validation run (its members' in-sample validation Recall@10: "
                + ", ".join(f"{l['best_valid_recall@10']:.4f}" for l in final["input_logs"].values())
                + ").")
    else:
        saved = [e for e in final["epochs"] if e.get("saved")]
        best = saved[-1] if saved else final["epochs"][-1]
        kept = (f"Kept checkpoint of the last stage: epoch {best['epoch']} (validation Recall@10 "
                f"{best['valid']['recall@10']:.4f}, NDCG@10 {best['valid']['ndcg@10']:.4f} on "
                f"{final['num_valid_users']} valid users"
                + (", whose valid items were in the training text: in-sample" if final["valid_in_training"] else "")
                + ").")
    recency_text = ("" if not recency else
                    f"\n- Recency fine-tunes (`--last-items N`, N = {', '.join(map(str, recency))}) train on "
                    f"one window per user (the last 21 items of train + valid) with the loss on its last N "
                    f"items only: the latest transitions (tools/TRAINING.md, stage 7).")
    if earn:
        variant = (f"EARN: {len(earn['prefix_register_ids'])} prefix and "
                   f"{len(earn['suffix_register_ids'])} suffix register tokens, split layer "
                   f"{earn['split_layer']} of {cfg['num_hidden_layers']}: layers below the split see "
                   f"every token, layers from the split up see only registers and generated tokens "
                   f"(no compute and no KV for prompt tokens there)")
    else:
        variant = "plain causal attention (the full-attention baseline of EARN)"
    card = f"""# {name}

A generative recommender for Amazon Beauty, trained from scratch by `tools/train_rec.py` (see
`tools/TRAINING.md`), served by earnserve as it is: `earnserve serve --model models/{name}`.
Variant: {variant}.

## Data and protocol
- Amazon Beauty with LC-Rec 4-token item identifiers (`../shared/datasets/beauty`, from the AtSpeed
  release): 12,035 items, 19,383 users; interactions split 8:1:1 by global time.
- Training text: each user's {'train + valid' if base['valid_in_training'] else 'train'} sequence
  ({base['num_train_sequences']:,} users with 2+ items), in windows of at most 21 items
  ({base['num_train_windows']:,} windows); every item after a window's first is predicted from the
  items before it (teacher forcing: its 4 code tokens and `</s>`, {base['num_target_tokens']:,}
  target tokens a pass).{recency_text}
- Prompt (`recommendation.json`, the engine builds it from item ids): template
  `{spec['prompt_template']}`, items written as their 4 code tokens, separated by
  `{spec['item_separator']}`, last {spec['history_limit']} items: every item ends with `</s>`, as the
  answer does; no instruction text.
- Test: history = train + valid items (last 20), targets = all test items, {metrics[10]['users']:,}
  users; Recall@K and NDCG@K with K beams constrained to the catalogue (K = 5, 10, 20),
  {exclusion}.

## Model
- Llama architecture, {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, intermediate
  {cfg['intermediate_size']}, {cfg['num_attention_heads']} heads ({cfg['num_key_value_heads']} KV heads),
  vocabulary {cfg['vocab_size']} (byte-level BPE of 1,024 tokens learned on the LC-Rec prompt text and
  item titles, unused by the compact prompt but kept so the vocabulary matches earlier checkpoints
  and drafts; the 859 code tokens; `<pad>` `<s>` `</s>`{'; the register tokens' if earn else ''}),
  {base['num_parameters'] / 1e6:.2f}M parameters, float32 safetensors.

## Training
- Command: `{args.command}`
- Stages, each the `--init` of the next (AdamW, weight decay {base['args']['weight_decay']}, dropout
  {base['args']['dropout']}, cosine schedule to {base['args']['min_lr_ratio']} of lr; minutes on one or
  two CPU threads of a 2-core machine, often shared with other jobs; `from` names the `--init`
  path on the machine that ran the stage):{stage_lines}
- {kept}

## Test metrics (through the engine: `earnserve eval`, K beams for @K)
{metrics_table(rows)}

Invalid items returned: {metrics[20]['invalid']} (the catalogue trie makes every beam a real item).
Reproduce: `for k in 5 10 20; do ./build/api/earnserve eval --model models/{name} --data
../shared/datasets/beauty --beam-width $k{eval_flag} --json; done`.

## Limits
A 2M-parameter model trained for a few CPU-hours in stages of at most 90 minutes: expect lower
accuracy than larger models trained longer (tools/TRAINING.md has the measurements and the
baselines).
"""
    with open(os.path.join(args.model, "README.md"), "w") as f:
        f.write(card)
    print("wrote", os.path.join(args.model, "README.md"))


if __name__ == "__main__":
    main()
