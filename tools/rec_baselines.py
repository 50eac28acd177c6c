#!/usr/bin/env python3
"""Non-model baselines on the sequential protocol: most popular and item co-occurrence.

The same samples and metric definitions as tools/eval_rec.py and `earnserve eval`
(../shared/datasets/README.md): test history = train + valid items (last 20), targets = all test
items; Recall@K = hits in the top K / number of targets, NDCG@K with all targets as the ideal,
averaged over the users with targets; hits compare item code sequences (items sharing one count
as the same answer).

  popular      items ranked by how often they occur in the fitting sequences
  cooccurrence score(b) = sum over the last --window history items a of the number of times a
               and b are neighbours (consecutive, either order; --directed: a then b only;
               --gap G: up to G apart) in the fitting sequences; the rest of the list filled by
               popularity

Fitting sequences: for --split test, every user's train + valid sequence (everything before the
test period); for --split valid, the train sequences only. History items are excluded from both
lists unless --keep-history.

  python3 tools/rec_baselines.py [--data DIR] [--split test|valid] [--json]
"""
import argparse
import collections
import json
import time

import beauty_data
from beauty_data import rank_metrics


def fitting_sequences(data_dir, split):
    train, valid, _ = beauty_data.load_sequences(data_dir)
    users = set(train) | (set(valid) if split == "test" else set())
    seqs = []
    for user in sorted(users):
        seq = train.get(user, []) + (valid.get(user, []) if split == "test" else [])
        seqs.append([beauty_data.item_key(i) for i in seq])
    return seqs


def fit(seqs, directed=False, gap=1):
    popularity = collections.Counter()
    transitions = collections.defaultdict(collections.Counter)
    for seq in seqs:
        popularity.update(seq)
        for g in range(1, gap + 1):
            for a, b in zip(seq, seq[g:]):
                transitions[a][b] += 1
                if not directed:
                    transitions[b][a] += 1
    # Ties broken by key so that runs are reproducible.
    by_popularity = [k for k, _ in sorted(popularity.items(), key=lambda kv: (-kv[1], int(kv[0])))]
    return by_popularity, transitions


def top_list(scores, by_popularity, excluded, k):
    ranked = [b for b, _ in sorted(scores.items(), key=lambda kv: (-kv[1], int(kv[0])))
              if b not in excluded][:k]
    if len(ranked) < k:
        chosen = set(ranked)
        for b in by_popularity:
            if len(ranked) == k:
                break
            if b not in excluded and b not in chosen:
                ranked.append(b)
                chosen.add(b)
    return ranked


def dedupe(ident_list):
    seen, out = set(), []
    for x in ident_list:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def evaluate(samples, index, by_popularity, transitions, window, keep_history, ks):
    ident = {k: tuple(v) for k, v in index.items()}
    kmax = max(ks)
    sums = {"popular": collections.Counter(), "cooccurrence": collections.Counter()}
    for _, history, targets in samples:
        excluded = set() if keep_history else set(history)
        scores = collections.Counter()
        for a in history[-window:]:
            scores.update(transitions.get(a, {}))
        # A few extra candidates so that items sharing a code sequence do not shorten the list.
        lists = {"popular": top_list({}, by_popularity, excluded, kmax + 8),
                 "cooccurrence": top_list(scores, by_popularity, excluded, kmax + 8)}
        target_ids = [ident[t] for t in targets]
        for name, ranked in lists.items():
            ranked = dedupe(ident[b] for b in ranked)[:kmax]
            sums[name].update(rank_metrics(ranked, target_ids, ks))
    return {name: {m: v / len(samples) for m, v in s.items()} for name, s in sums.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=beauty_data.DEFAULT_DATA_DIR)
    ap.add_argument("--split", choices=("test", "valid"), default="test")
    ap.add_argument("--window", type=int, default=beauty_data.HISTORY_LIMIT,
                    help="history items that vote for co-occurrence candidates")
    ap.add_argument("--directed", action="store_true", help="count a -> b only, not b -> a")
    ap.add_argument("--gap", type=int, default=1, help="pairs up to this many items apart")
    ap.add_argument("--keep-history", action="store_true", help="allow history items in the lists")
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    t0 = time.time()
    index = beauty_data.load_index(args.data)
    by_popularity, transitions = fit(fitting_sequences(args.data, args.split), args.directed, args.gap)
    samples = (beauty_data.test_samples(args.data) if args.split == "test"
               else beauty_data.valid_samples(args.data))
    result = evaluate(samples, index, by_popularity, transitions, args.window, args.keep_history, ks)
    if args.json:
        for name, metrics in result.items():
            print(json.dumps({"baseline": name, "split": args.split, "users": len(samples),
                              "exclude_history": not args.keep_history, "directed": args.directed,
                              "gap": args.gap, "window": args.window, **metrics}))
        return
    print(f"{args.split}: {len(samples)} users, history {'kept' if args.keep_history else 'excluded'}, "
          f"{time.time() - t0:.1f} s")
    for name, metrics in result.items():
        cells = "  ".join(f"R@{k} {metrics[f'recall@{k}']:.4f} N@{k} {metrics[f'ndcg@{k}']:.4f}" for k in ks)
        print(f"{name:<13} {cells}")


if __name__ == "__main__":
    main()
