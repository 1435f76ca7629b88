"""Build the demo base model `attune-tiny` and upload the demo intent data.

Idempotent and deterministic: a second run changes nothing, and two fresh
runs write byte-identical model files and data. Nothing is downloaded.
"""

import hashlib
import json
import shutil
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from training.demo_data import corpus_texts, make_demo_data, to_jsonl
from training.models import BaseModel, DataFile

DEMO_MODEL = "attune-tiny"
DEMO_FILES = {"train": "demo-intents-train.jsonl", "valid": "demo-intents-valid.jsonl"}
HELDOUT_FILE = "demo-intents-heldout.jsonl"


STAMP = "attune-build.json"


def build_id() -> str:
    """Digest of the code that builds the demo model and data: a change rebuilds the model."""
    from training import demo_data, demo_model

    digest = hashlib.sha256()
    for module in (demo_model, demo_data):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def is_current(model_dir: Path) -> bool:
    stamp = model_dir / STAMP
    return (model_dir / "model.safetensors").exists() and stamp.exists() and \
        json.loads(stamp.read_text()).get("build_id") == build_id()


def build_demo_model(model_dir: Path):
    """Build into a scratch folder and rename it into place: a build cut short leaves nothing half-made."""
    from training.demo_model import build_tiny_model

    scratch = model_dir.with_name(model_dir.name + ".building")
    shutil.rmtree(scratch, ignore_errors=True)
    build_tiny_model(scratch, corpus_texts())
    (scratch / STAMP).write_text(json.dumps({"build_id": build_id()}) + "\n")
    shutil.rmtree(model_dir, ignore_errors=True)
    scratch.rename(model_dir)


def demo_dir() -> Path:
    return settings.ATTUNE_HOME / "demo"


def heldout_path() -> Path:
    return demo_dir() / HELDOUT_FILE


class Command(BaseCommand):
    help = "Build attune-tiny and the demo data set when they are missing."

    def handle(self, **options):
        model_dir = settings.MODELS_DIR / DEMO_MODEL
        if not is_current(model_dir):
            self.stdout.write(f"Building the demo base model {DEMO_MODEL} in {model_dir} …")
            self.stdout.flush()
            build_demo_model(model_dir)
        base, created = BaseModel.objects.get_or_create(name=DEMO_MODEL, defaults={"source": DEMO_MODEL})
        config = json.loads((model_dir / "config.json").read_text())
        tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
        has_template = bool(tokenizer_config.get("chat_template")) or (model_dir / "chat_template.jinja").exists()
        base.has_chat_template = has_template
        base.max_length = config.get("max_position_embeddings", base.max_length)
        base.architecture = (config.get("architectures") or [""])[0]
        base.save()
        if created:
            self.stdout.write(f"Registered base model {DEMO_MODEL}.")

        train, valid, heldout = make_demo_data()
        demo_dir().mkdir(parents=True, exist_ok=True)
        contents = {"train": to_jsonl(train), "valid": to_jsonl(valid)}
        for key, filename in DEMO_FILES.items():
            path = demo_dir() / filename
            path.write_text(contents[key], encoding="utf-8")
            if not DataFile.objects.filter(filename=filename, purpose="fine-tune").exists():
                from training.datasets import store_upload

                with open(path, "rb") as fh:
                    data_file, report = store_upload(iter(lambda: fh.read(1 << 20), b""), filename,
                                                     base_model=base)
                self.stdout.write(f"Uploaded {filename} as {data_file.public_id}: "
                                  f"{report.n_examples} examples, {report.n_errors} errors.")
        heldout_path().write_text(to_jsonl(heldout), encoding="utf-8")
        self.stdout.write("Demo ready.")
