"""The Amazon Beauty data set with LC-Rec item codes, and the papers' evaluation protocol.

Reads ../shared/datasets/beauty (or any copy given as `data_dir`): the item index, the train /
valid / test sequences, and builds the LC-Rec prompt for a user's history exactly as
../shared/datasets/README.md specifies.
"""
import json
import math
import os

DEFAULT_DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "beauty")

PROMPT_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nThe user has interacted with items {history} "
    "in chronological order. Can you predict the next possible item that the user may expect?"
    "\n\n### Response:"
)
ITEM_SEPARATOR = ", "
HISTORY_LIMIT = 20


def load_index(data_dir=DEFAULT_DATA_DIR):
    """Item key (str, from 0) -> list of 4 code tokens."""
    with open(os.path.join(data_dir, "beauty.LCRec-1e-3lr.json")) as f:
        return json.load(f)


def code_tokens(index):
    """Every distinct code token, sorted by level then number."""
    tokens = {t for codes in index.values() for t in codes}
    return sorted(tokens, key=lambda t: (t[1], int(t[3:-1])))


def _read_sequences(path):
    users = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                users[int(parts[0])] = [int(x) for x in parts[1:]]
    return users


def load_sequences(data_dir=DEFAULT_DATA_DIR):
    return tuple(_read_sequences(os.path.join(data_dir, f"sequential_{s}.txt"))
                 for s in ("train", "valid", "test"))


def item_key(txt_item):
    """Items in the .txt files count from 1; the index's keys from 0."""
    return str(txt_item - 1)


def test_samples(data_dir=DEFAULT_DATA_DIR):
    """(user, history keys (last 20 of train + valid), target keys) for users with test items."""
    train, valid, test = load_sequences(data_dir)
    samples = []
    for user in sorted(test):
        targets = test[user]
        if not targets:
            continue
        history = train.get(user, []) + valid.get(user, [])
        history = history[-HISTORY_LIMIT:]
        samples.append((user, [item_key(i) for i in history], [item_key(i) for i in targets]))
    return samples


def valid_samples(data_dir=DEFAULT_DATA_DIR):
    train, valid, _ = load_sequences(data_dir)
    samples = []
    for user in sorted(valid):
        if not valid[user]:
            continue
        history = train.get(user, [])[-HISTORY_LIMIT:]
        samples.append((user, [item_key(i) for i in history], [item_key(i) for i in valid[user]]))
    return samples


def train_samples(data_dir=DEFAULT_DATA_DIR):
    """(history keys, next key) for every prefix of every train sequence."""
    train, _, _ = load_sequences(data_dir)
    samples = []
    for user in sorted(train):
        seq = [item_key(i) for i in train[user]]
        for t in range(1, len(seq)):
            samples.append((seq[max(0, t - HISTORY_LIMIT):t], seq[t]))
    return samples


def item_text(index, key):
    return "".join(index[key])


def build_prompt(index, history_keys, template=PROMPT_TEMPLATE, separator=ITEM_SEPARATOR,
                 history_limit=HISTORY_LIMIT):
    """The prompt text for a history, as the engine builds it from recommendation.json:
    the last history_limit items' identifiers joined by separator, put in the template's
    {history} slot (a plain replacement, like scheduler/recommendation.cpp)."""
    if history_limit > 0:
        history_keys = history_keys[-history_limit:]
    history = separator.join(item_text(index, k) for k in history_keys)
    return template.replace("{history}", history, 1)


def prompt_builder(spec):
    """build_prompt for a recommendation.json object (prompt_template, item_separator,
    history_limit; the engine's defaults when absent)."""
    template = spec["prompt_template"]
    separator = spec.get("item_separator", ", ")
    limit = int(spec.get("history_limit", 20))
    return lambda index, keys: build_prompt(index, keys, template, separator, limit)


def rank_metrics(ranked, targets, ks):
    """Recall@k and NDCG@k of one user, as `earnserve eval` counts them.

    ranked: recommended identifiers (code tuples), best first; targets: the target items'
    identifiers, one per target (duplicates count in the denominator, as in the protocol).
    """
    target_set = set(targets)
    out = {}
    for k in ks:
        hits = dcg = 0.0
        for i, ident in enumerate(ranked[:k]):
            if ident in target_set:
                hits += 1
                dcg += 1.0 / math.log2(i + 2)
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(targets))))
        out[f"recall@{k}"] = hits / len(targets)
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
    return out
