"""Serve the built-in inference backend on vLLM's OpenAI-compatible routes.

    manage.py serve_inference --port 8100 --model attune-tiny --max-lora-rank 16

`--model` is a base model registered in the studio (its name) or a model
folder. Adapters are loaded at run time with POST /v1/load_lora_adapter,
from folders under ATTUNE_HOME (or --lora-root). This is what the vllm
backend's tests talk to, and a CPU stand-in for a vLLM server: it takes
vLLM's flags for the same things (`--enable-lora`, `--max-loras`, `--dtype`,
…), so VLLM_COMMAND can name it in place of vLLM.
"""

import argparse
import dataclasses
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from playground.inference.builtin import BuiltinBackend
from playground.inference.server import InferenceServer
from playground.snapshots import Snapshot, UnknownModel, resolve_snapshot


class Command(BaseCommand):
    help = "Serve the built-in backend on /v1/models, /v1/chat/completions and /v1/(un)load_lora_adapter."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument("--model", default="attune-tiny",
                            help="A base model's name in this studio, or a model folder.")
        parser.add_argument("--served-model-name", default="", help="The id /v1/models lists (default: --model).")
        parser.add_argument("--max-lora-rank", type=int, default=16)
        parser.add_argument("--list-max-lora-rank", action=argparse.BooleanOptionalAction, default=True,
                            help="Show max_lora_rank in /v1/models (vLLM does not: --no-list-max-lora-rank).")
        parser.add_argument("--lora-root", default="", help="Adapter folders must lie here (default: ATTUNE_HOME).")
        parser.add_argument("--api-key", default="", help="Require this bearer token.")
        parser.add_argument("--max-body-mb", type=int, default=16,
                            help="Refuse request bodies larger than this with 413 (default 16).")
        # vLLM's flags, taken as vLLM takes them where this server can honour them.
        parser.add_argument("--enable-lora", action="store_true", help="Accepted: adapters are always enabled.")
        parser.add_argument("--max-loras", type=int, default=0, help="Accepted: every adapter of a request "
                            "shares one batch.")
        parser.add_argument("--max-cpu-loras", type=int, default=0, help="Accepted: adapters stay loaded.")
        parser.add_argument("--max-model-len", type=int, default=0, help="Listed in /v1/models (default: the "
                            "model's max_position_embeddings).")
        parser.add_argument("--dtype", default="auto", choices=["auto", "float32"],
                            help="The built-in backend decodes in float32.")

    def handle(self, host, port, model, served_model_name, max_lora_rank, lora_root, api_key, list_max_lora_rank,
               max_body_mb, max_model_len, **options):
        base = self._base(model, served_model_name)
        max_model_len = max_model_len or None
        config = Path(base.base_path) / "config.json"
        if config.is_file() and not max_model_len:
            import json

            max_model_len = json.loads(config.read_text()).get("max_position_embeddings")
        app = InferenceServer(BuiltinBackend(), base, max_lora_rank=max_lora_rank,
                              lora_root=lora_root or settings.ATTUNE_HOME, api_key=api_key,
                              max_model_len=max_model_len, list_max_lora_rank=list_max_lora_rank,
                              max_body_bytes=max_body_mb * 1024 * 1024)
        self.stdout.write(f"Serving {base.name} ({base.base_path}) on http://{host}:{port}/v1 "
                          f"(max_lora_rank {max_lora_rank})")
        self.stdout.flush()
        import uvicorn

        # uvicorn hands the app each request as soon as its headers are in, so an oversized body is
        # refused before it is read; daphne receives the whole body before the app sees the request.
        uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on", ws="none",
                    proxy_headers=False, server_header=False)

    def _base(self, model, served_name):
        folder = Path(model).resolve()
        if (folder / "config.json").is_file():
            return Snapshot.from_paths(served_name or folder.name, folder)
        if folder.is_dir():
            raise CommandError(f"--model {model!r} is a folder but not a model folder (no config.json there).")
        try:
            snapshot = resolve_snapshot(model)
        except UnknownModel:
            raise CommandError(f"--model {model!r} is neither a base model of this studio nor a model folder "
                               "(no config.json there).") from None
        if snapshot.kind != "base":
            raise CommandError(f"--model {model!r} is a fine-tuned snapshot; serve its base and load the adapter.")
        if served_name:
            return dataclasses.replace(snapshot, name=served_name)
        return snapshot
