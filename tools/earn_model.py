"""EARN (arXiv 2507.00715) in PyTorch, as attention masks on the full model.

Every token is computed in every layer; layers from `split_layer` up are masked so that each
token attends only to register tokens and generated tokens (the tokens after the last suffix
register). This is the reference ("oracle") for earnserve's skip-based compute, which computes
and caches nothing for prompt tokens in those layers, and the model the training recipe trains.

The prompt layout is the engine's: [BOS] [prefix registers] prompt [suffix registers], then the
generated tokens. config.json carries
  "earn": {"split_layer": k, "prefix_register_ids": [...], "suffix_register_ids": [...]}.
"""
import torch
from transformers import LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast


def wrap_prompt(ids, earn, bos_token_id):
    """The token list the engine builds from a prompt (which may start with BOS)."""
    ids = list(ids)
    head = []
    if ids and ids[0] == bos_token_id:
        head, ids = [ids[0]], ids[1:]
    return head + list(earn["prefix_register_ids"]) + ids + list(earn["suffix_register_ids"])


def kept_mask(input_ids, earn):
    """[B, T] bool: register tokens and every token after the last suffix register."""
    registers = set(earn["prefix_register_ids"]) | set(earn["suffix_register_ids"])
    is_reg = torch.zeros_like(input_ids, dtype=torch.bool)
    for r in registers:
        is_reg |= input_ids == r
    suffix = torch.zeros_like(input_ids, dtype=torch.bool)
    for r in earn["suffix_register_ids"]:
        suffix |= input_ids == r
    t = torch.arange(input_ids.shape[1], device=input_ids.device)
    # Index of the last suffix register per row (-1 when none yet).
    last = torch.where(suffix, t, torch.full_like(t, -1)).max(dim=1).values
    generated = t[None, :] > last[:, None]
    return is_reg | (generated & (last[:, None] >= 0))


class EarnLlamaForCausalLM(LlamaForCausalLM):
    """A Llama whose layers >= split_layer see only register and generated tokens.

    No KV cache: each call recomputes the whole sequence (the masks differ per layer), which is
    what makes it a plain, obviously-correct reference. generate() works with use_cache=False.
    """

    def earn(self):
        return self.config.earn

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, labels=None,
                past_key_values=None, use_cache=None, logits_to_keep=0, **kwargs):
        earn = self.earn()
        b, t = input_ids.shape
        device = input_ids.device
        if position_ids is None:
            position_ids = torch.arange(t, device=device)[None, :].expand(b, t)
        hidden = self.model.embed_tokens(input_ids)
        position_embeddings = self.model.rotary_emb(hidden, position_ids=position_ids)
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
        valid = causal[None]
        if attention_mask is not None:
            valid = valid & attention_mask[:, None, :].bool()
        keep = kept_mask(input_ids, earn)
        upper = valid & keep[:, None, :]
        # A row with no visible key (a prompt token in the upper layers) sees itself; its output
        # is never read by a kept token, so this only avoids NaNs.
        eye = torch.eye(t, dtype=torch.bool, device=device)[None]
        upper = upper | eye
        valid = valid | eye
        neg = torch.finfo(hidden.dtype).min
        lower_mask = torch.where(valid, 0.0, neg)[:, None].to(hidden.dtype)
        upper_mask = torch.where(upper, 0.0, neg)[:, None].to(hidden.dtype)
        for i, layer in enumerate(self.model.layers):
            mask = lower_mask if i < earn["split_layer"] else upper_mask
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings)
        hidden = self.model.norm(hidden)
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1),
                ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        return {"input_ids": input_ids, "attention_mask": attention_mask}
