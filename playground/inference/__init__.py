"""Inference backends behind one interface.

    backend = get_backend()
    async for event in backend.generate(snapshots, messages, params):
        ...   # StreamEvent(index, type=delta|done|error, text, ...)

`builtin` (the embedded default) decodes with transformers + PEFT in this
process; `vllm` talks to a vLLM OpenAI-compatible server at VLLM_URL. The
choice comes from the INFERENCE_BACKEND setting.
"""

import threading

from playground.inference.base import (
    AdapterRankError,
    InferenceError,
    SamplingParams,
    StreamEvent,
    collect,
    validate_messages,
)

__all__ = ["AdapterRankError", "InferenceError", "SamplingParams", "StreamEvent", "collect", "get_backend",
           "validate_messages"]

_backend = None
_lock = threading.Lock()


def make_backend(kind, url="", max_full_models=2, max_loaded_mb=8192, max_prompt_tokens=4096):
    if kind == "builtin":
        from playground.inference.builtin import BuiltinBackend

        if max_full_models < 1:
            raise InferenceError(f"INFERENCE_MAX_FULL_MODELS must be at least 1; got {max_full_models}.")
        if max_loaded_mb < 1:
            raise InferenceError(f"INFERENCE_MAX_LOADED_MB must be at least 1; got {max_loaded_mb}.")
        if max_prompt_tokens < 1:
            raise InferenceError(f"INFERENCE_MAX_PROMPT_TOKENS must be at least 1; got {max_prompt_tokens}.")
        return BuiltinBackend(max_full_models=max_full_models, max_loaded_mb=max_loaded_mb,
                              max_prompt_tokens=max_prompt_tokens)
    if kind == "vllm":
        from playground.inference.vllm import VLLMBackend

        if not url:
            raise InferenceError("INFERENCE_BACKEND is vllm but VLLM_URL is not set.")
        return VLLMBackend(url)
    raise InferenceError(f"Unknown INFERENCE_BACKEND {kind!r}: use builtin or vllm.")


def get_backend():
    """The process's backend, made once from settings."""
    global _backend
    with _lock:
        if _backend is None:
            from django.conf import settings

            _backend = make_backend(settings.INFERENCE_BACKEND, settings.VLLM_URL, settings.INFERENCE_MAX_FULL_MODELS,
                                    settings.INFERENCE_MAX_LOADED_MB, settings.INFERENCE_MAX_PROMPT_TOKENS)
        return _backend
