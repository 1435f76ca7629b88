"""Registering a base model: a Hugging Face model id, a folder or a GGUF file under ATTUNE_HOME/models.

A local folder is inspected before it is registered: it must lie inside the
models folder (no path from a user leaves the data folder), hold a
`config.json`, weights as safetensors (pickled `.bin` weights are refused) and
a tokenizer; whether its tokenizer has a chat template and its longest
sequence are read from its files. A hub id is registered as it is: nothing is
downloaded here, and a job or the playground reports a clear error if the
weights cannot be had on the host that needs them.

A `.gguf` file under the models folder is checked (magic, a complete file, an
architecture transformers' GGUF loader reads), then converted in a process of
its own into the folder `models/<name>` (plain safetensors, its tokenizer and
chat template), which is then inspected and registered like any folder. A
file that fails a check registers nothing and leaves no folder behind.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from training import gguf
from training.models import BaseModel

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class BaseModelError(ValueError):
    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message


def _inside_models_dir(source):
    root = settings.MODELS_DIR.resolve()
    candidate = Path(source)
    folder = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if folder != root and root not in folder.parents:
        raise BaseModelError("source", f"A local model must be a folder inside {root}; {source!r} is not.")
    return folder


def inspect_folder(folder: Path):
    """(has_chat_template, max_length, architecture) of a model folder, or a BaseModelError."""
    if not folder.is_dir():
        raise BaseModelError("source", f"There is no model folder at {folder}.")
    config_path = folder / "config.json"
    if not config_path.exists():
        raise BaseModelError("source", f"{folder} has no config.json: it is not a transformers model folder.")
    if not any(folder.glob("*.safetensors")):
        pickled = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
        raise BaseModelError("source", f"{folder} has no .safetensors weights"
                             + (" (only pickled .bin/.pt files, which Attune does not load)" if pickled else "") + ".")
    if not ((folder / "tokenizer.json").exists() or (folder / "tokenizer_config.json").exists()):
        raise BaseModelError("source", f"{folder} has no tokenizer files.")
    config = json.loads(config_path.read_text())
    tokenizer_config = {}
    if (folder / "tokenizer_config.json").exists():
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    has_template = bool(tokenizer_config.get("chat_template")) or (folder / "chat_template.jinja").exists()
    max_length = config.get("max_position_embeddings") or tokenizer_config.get("model_max_length") or 2048
    architecture = (config.get("architectures") or [""])[0]
    return has_template, int(min(max_length, 10**7)), architecture


GGUF_CONVERSION_SECONDS = 3600
ROOT = Path(__file__).resolve().parent.parent


def _check_name(name):
    if not NAME_RE.match(name):
        raise BaseModelError("name", "Use letters, digits, '.', '_' or '-' (up to 100 characters).")
    if BaseModel.objects.filter(name=name).exists():
        raise BaseModelError("name", f"A base model named {name!r} already exists.")


def gguf_to_convert(name, source) -> Path | None:
    """The GGUF file that registering `source` must convert first, once every check that needs no
    conversion has passed; None when `source` is not a GGUF file."""
    name, source = (name or "").strip(), (source or "").strip()
    if not source.lower().endswith(".gguf"):
        return None
    _check_name(name)
    path = _inside_models_dir(source)
    if (settings.MODELS_DIR.resolve() / name).exists():  # before reading a file that may be gigabytes
        raise BaseModelError("name", f"The folder models/{name} already exists; pick another name or remove it.")
    try:
        gguf.check(path)
    except gguf.GGUFError as exc:
        raise BaseModelError("source", str(exc)) from None
    return path


def convert_gguf(name, gguf_path: Path) -> Path:
    """Convert a checked GGUF file into the folder models/<name>. Touches no database."""
    target = settings.MODELS_DIR.resolve() / name
    # In a process of its own: the dequantized weights never sit in the web process's memory.
    try:
        done = subprocess.run([sys.executable, "-m", "training.gguf", str(gguf_path), str(target)], cwd=ROOT,
                              capture_output=True, text=True, timeout=GGUF_CONVERSION_SECONDS)
    except subprocess.TimeoutExpired:
        done = None
    if done is None or done.returncode != 0 or not target.is_dir():
        why = "it ran past an hour" if done is None else \
            ((done.stderr or "").strip().splitlines() or ["no output"])[-1][:500]
        shutil.rmtree(target.with_name(name + ".building"), ignore_errors=True)
        raise BaseModelError("source", f"Converting {gguf_path.name} failed: {why}")
    return target


def register_base_model(name, source, trust_remote_code=False):
    name, source = (name or "").strip(), (source or "").strip()
    gguf_file = gguf_to_convert(name, source)
    if gguf_file is not None:
        source = convert_gguf(name, gguf_file).name
    _check_name(name)
    if not source:
        raise BaseModelError("source", "Give a Hugging Face model id (org/name) or a folder under the models folder.")
    looks_local = source.startswith(("/", ".", "~")) or not HUB_ID_RE.match(source) or \
        (settings.MODELS_DIR / source).exists()
    if looks_local:
        folder = _inside_models_dir(source)
        has_template, max_length, architecture = inspect_folder(folder)
        stored_source = str(folder.relative_to(settings.MODELS_DIR.resolve()))
    else:
        has_template, max_length, architecture, stored_source = False, 2048, "", source
    return BaseModel.objects.create(name=name, source=stored_source, has_chat_template=has_template,
                                    max_length=max_length, architecture=architecture,
                                    trust_remote_code=bool(trust_remote_code))
