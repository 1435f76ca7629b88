"""Attention over packed rows without a quadratic mask: each example attends only to itself.

Packed, padding-free training (TRL's `bfd` packing) flattens a batch into one row of many examples and marks
where each starts (`position_ids`, `cu_seq_lens_q`). With flash-attention's varlen kernel that row costs what
its examples cost. Without it (on a CPU, or where flash-attn is not installed) transformers falls back to SDPA
with a block-diagonal mask of the whole row: for a batch of 8 rows of 1,024 tokens that is one 8,192 × 8,192
mask per step, and attention then costs more than padding would have.

`varlen_sdpa` does what the varlen kernel does with plain SDPA: the linear layers still see the one flat row
(every token real, none padded), while attention gathers the examples into (examples, heads, longest, dim)
batches of similar length and runs causal SDPA on each. Right-padding inside such a batch is harmless under
a causal mask: a real query never looks past itself. Anything that is not such a packed row (evaluation's padded batches,
generation) goes to transformers' own SDPA unchanged.
"""

NAME = "attune_varlen"

# Examples whose lengths differ by more than this factor go to separate SDPA calls, so a short example is not
# padded to a long one's length (attention is quadratic in it).
BUCKET_RATIO = 2


class _Layout:
    """Where each packed example sits, grouped into buckets of similar length; built once per forward."""

    def __init__(self, starts, tokens, device):
        import torch

        starts = starts.tolist()
        lengths = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        self.buckets = []  # (index (examples, longest), real (examples, longest))
        positions = []  # the row position of every real token, in bucket order
        group = []
        for number, example in enumerate(order):
            group.append(example)
            last = number == len(order) - 1
            if last or lengths[order[number + 1]] > BUCKET_RATIO * lengths[group[0]]:
                longest = lengths[group[-1]]
                offsets = torch.arange(longest)
                first = torch.tensor([starts[e] for e in group])
                size = torch.tensor([lengths[e] for e in group])
                real = offsets[None, :] < size[:, None]
                index = (first[:, None] + offsets[None, :]).clamp(max=tokens - 1)
                positions.append(index[real])
                self.buckets.append((index.to(device), real.to(device)))
                group = []
        # Bucket order back to row order.
        self.inverse = torch.cat(positions).argsort().to(device)


_layout = {"starts": None, "layout": None}


def _layout_for(starts, tokens, device):
    # The same cu_seq_lens tensor object reaches every layer of one forward; holding it keeps its identity
    # from being reused by the next batch's tensor.
    if _layout["starts"] is not starts:
        _layout["starts"], _layout["layout"] = starts, _Layout(starts, tokens, device)
    return _layout["layout"]


def varlen_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """An attention function with the signature transformers' `AttentionInterface` expects.

    query: (1, heads, tokens, dim); key/value: (1, kv_heads, tokens, dim). Returns (1, tokens, heads, dim).
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    starts = kwargs.get("cu_seq_lens_q")
    if (starts is None or attention_mask is not None or query.shape[0] != 1
            or query.shape[2] != key.shape[2] or kwargs.get("cu_seq_lens_k") is None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    layout = _layout_for(starts, query.shape[2], query.device)
    outputs = []
    for index, real in layout.buckets:
        # (1, heads, tokens, dim) -> (examples, heads, longest, dim)
        q, k, v = (states[0][:, index].transpose(0, 1) for states in (query, key, value))
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scaling,
            dropout_p=dropout if module.training else 0.0, enable_gqa=key.shape[1] != query.shape[1])
        outputs.append(out.transpose(1, 2)[real])  # the real tokens: (n, heads, dim)
    return torch.cat(outputs)[layout.inverse].unsqueeze(0), None


def varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask for a padding-free row (the attention finds the examples itself); SDPA's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def use_varlen(model):
    """Switch a model whose attention is plain SDPA to `varlen_sdpa`. Returns whether it did.

    Flash-attention implementations keep their own varlen kernel; eager attention (chosen for soft-capping)
    and sliding-window layers need masks this function does not build, so those models keep theirs."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None) or []
    sliding = (any(kind != "full_attention" for kind in layer_types)
               or (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)))
    if model.config._attn_implementation != "sdpa" or sliding:
        return False
    AttentionInterface.register(NAME, varlen_sdpa)
    AttentionMaskInterface.register(NAME, varlen_mask)
    model.set_attn_implementation(NAME)  # models that cannot take it keep theirs, with a logged warning
    return model.config._attn_implementation == NAME
