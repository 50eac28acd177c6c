"""The tokenizer of a recommendation checkpoint trained by tools/train_rec.py.

A small byte-level BPE (Hugging Face `tokenizers`) learned from the LC-Rec prompt text (the
instruction template around the history and the item separator) and, to give the merges
something beyond one sentence, the catalogue's item titles. On top of it:
  - <pad> (0), <s> (1, BOS), </s> (2, EOS): special tokens;
  - the item code tokens <a_*>..<d_*>: added, non-special, so that they decode to their text;
  - for EARN, register tokens <|reg_p*|> / <|reg_s*|>: added, special.
A TemplateProcessing post-processor puts BOS in front of every encoding. The pre-tokenizer and
decoder are ByteLevel, which the C++ engine's tokenizer supports.
"""
import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import beauty_data

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
# How often the template text is repeated in the BPE corpus: enough that its words become
# single tokens whatever the titles contribute.
TEMPLATE_WEIGHT = 2000


def register_names(num_registers):
    """(prefix register names, suffix register names)."""
    return ([f"<|reg_p{i}|>" for i in range(num_registers)],
            [f"<|reg_s{i}|>" for i in range(num_registers)])


def _corpus(template, separator, titles):
    # The prompt with the code tokens taken out: what the BPE part actually sees at run time,
    # since added tokens are split off before pre-tokenization.
    for n in range(1, beauty_data.HISTORY_LIMIT + 1):
        text = template.format(history=separator.join([""] * n))
        for _ in range(TEMPLATE_WEIGHT // beauty_data.HISTORY_LIMIT):
            yield text
    yield from titles


def build_tokenizer(index, titles, bpe_vocab_size=1024, num_registers=0):
    """Returns (Tokenizer, prefix register ids, suffix register ids).

    index: item key -> list of code tokens; titles: iterable of title strings.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(
        _corpus(beauty_data.PROMPT_TEMPLATE, beauty_data.ITEM_SEPARATOR, titles), trainer=trainer)
    assert [tok.token_to_id(t) for t in (PAD, BOS, EOS)] == [0, 1, 2]
    tok.add_tokens([AddedToken(c, special=False, normalized=False)
                    for c in beauty_data.code_tokens(index)])
    prefix, suffix = register_names(num_registers)
    if num_registers:
        tok.add_special_tokens([AddedToken(n, special=True, normalized=False)
                                for n in prefix + suffix])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)])
    return tok, [tok.token_to_id(n) for n in prefix], [tok.token_to_id(n) for n in suffix]


def save_tokenizer(tok, out_dir):
    """Writes tokenizer.json and tokenizer_config.json (bos/eos/pad names) into out_dir."""
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": None,
        "add_bos_token": True, "add_eos_token": False,
        "clean_up_tokenization_spaces": False, "model_max_length": 1024,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
