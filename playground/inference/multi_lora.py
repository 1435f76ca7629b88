"""Several LoRA adapters in one batch, one adapter per row, at the cost of one.

PEFT's mixed-batch inference (`adapter_names=`) loops over the adapters in every LoRA layer: for each one
it copies out the rows that use it, runs its two small products, and writes them back. On a GPU that is
cheap next to the base model; on a CPU, where a small model's decoding step is a few milliseconds of
many small operations, four adapters cost about three times one.

Here the adapters of a batch are concatenated once per layer, so every layer does the same four
operations whatever the number of adapters:

    delta = ((x @ A_all) * row_mask) @ B_all        A_all: (in, Σr), B_all: (Σr, out), scaling folded into B

`row_mask` (rows, Σr) keeps, for each row, only its own adapter's r columns; a row of the base model keeps
none. The extra products of the other adapters' columns are r-wide, small next to the base layer's.

The base layers run with PEFT's LoRA layers switched off and a forward hook adds `delta`. Only plain LoRA on
linear layers is stacked; a batch with any other kind (DoRA and the other variants, a LoRA bias, LoRA on
embeddings or convolutions) returns None from `Stack.build` and goes through PEFT's own mixed batch.
Adapters that carry whole-module copies (`modules_to_save`, trainable tokens) are not `mixable` at all:
the copy of the active adapter would serve every row, so such snapshots are decoded one at a time.
"""

import contextlib

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch


class Unsupported(Exception):
    pass


def mixable(model, names):
    """Whether these adapters can share a batch: none carries whole-module copies."""
    for name in set(names) - {BASE_ADAPTER}:
        config = model.peft_config.get(name)
        if config is None or getattr(config, "modules_to_save", None) or \
                getattr(config, "trainable_token_indices", None):
            return False
    return True


class _Layer:
    """One LoRA linear layer's adapters, concatenated."""

    def __init__(self, module, names):
        import torch

        present = [name for name in names if name in module.lora_A]
        for name in present:
            if name in module.lora_variant or module.lora_B[name].bias is not None:
                raise Unsupported(name)
        self.module = module
        # (Σr, in) and (out, Σr), in the adapters' own dtype (PEFT keeps them in float32 on a bf16 base).
        self.a = torch.cat([module.lora_A[name].weight for name in present]).t().contiguous()
        self.b = torch.cat([module.lora_B[name].weight * module.scaling[name] for name in present],
                           dim=1).t().contiguous()
        self.columns = {}
        start = 0
        for name in present:
            rank = module.lora_A[name].weight.shape[0]
            self.columns[name] = (start, start + rank)
            start += rank

    def mask(self, rows):
        import torch

        mask = torch.zeros(len(rows), self.a.shape[1], dtype=self.a.dtype, device=self.a.device)
        for row, name in enumerate(rows):
            if name in self.columns:
                start, end = self.columns[name]
                mask[row, start:end] = 1
        return mask


class Stack:
    """The adapters `names` of one model, concatenated layer by layer; build once, apply to many batches."""

    def __init__(self, layers, switched):
        self.layers = layers
        # Every LoRA layer of the model, and every whole-module copy another loaded adapter carries (the active
        # adapter's copy would otherwise serve all rows): all are switched off while applied.
        self.switched = switched

    @classmethod
    def build(cls, model, names):
        """A Stack, or None where an adapter is of a kind this does not stack."""
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import Linear
        from peft.utils.other import AuxiliaryTrainingWrapper

        if not mixable(model, names):
            return None
        layers, switched = [], []
        try:
            for module in model.modules():
                if isinstance(module, (AuxiliaryTrainingWrapper, LoraLayer)):
                    switched.append(module)
                if isinstance(module, LoraLayer) and any(name in module.lora_A for name in names):
                    if type(module) is not Linear:
                        raise Unsupported(type(module).__name__)
                    layers.append(_Layer(module, names))
        except Unsupported:
            return None
        return cls(layers, switched)

    @contextlib.contextmanager
    def applied(self, rows):
        """Within: a forward of the model on a batch gives row i the adapter `rows[i]` (or the base).

        PEFT's own layers are switched off layer by layer (`PeftModel.disable_adapter` first inspects the
        whole model, about 6 ms on attune-tiny, paid at every request)."""
        handles = []
        switched = [module for module in self.switched if not module.disable_adapters]
        try:
            for layer in self.layers:
                mask = layer.mask(rows)  # (rows, Σr)
                handles.append(layer.module.register_forward_hook(_hook(layer, mask)))
            for module in switched:
                module.enable_adapters(False)
            yield
        finally:
            for module in switched:
                module.enable_adapters(True)
            for handle in handles:
                handle.remove()


def _hook(layer, mask):
    a, b = layer.a, layer.b
    rows, rank = mask.shape

    def add_delta(module, args, output):
        x = args[0].reshape(-1, a.shape[0])  # (rows × positions, in)
        h = (x if x.dtype == a.dtype else x.to(a.dtype)) @ a
        h.view(rows, -1, rank).mul_(mask[:, None, :])  # each row keeps its own adapter's columns
        if output.dtype == b.dtype and output.is_contiguous():
            # In place into the base layer's fresh output: no delta tensor, no sum tensor.
            output.view(-1, b.shape[1]).addmm_(h, b)
            return output
        return output + (h @ b).to(output.dtype).view(output.shape)

    return add_delta
