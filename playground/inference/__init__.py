"""Inference backends behind one interface.

    backend = get_backend()
    async for event in backend.generate(snapshots, messages, params):
        ...   # StreamEvent(index, type=delta|done|error, text, ...)

`builtin` (the embedded default) decodes with transformers + PEFT in this
process; `vllm` talks to a vLLM OpenAI-compatible server at VLLM_URL or,
without one, to the vLLM servers Attune starts itself (vllm_servers.py). The
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
           "validate_messages", "backend_servers", "close_backend"]

_backend = None
_lock = threading.Lock()


def make_backend(kind, url="", max_full_models=2, max_loaded_mb=8192, max_prompt_tokens=4096, servers=None):
    """`servers`: the ServerSettings of Attune's own vLLM servers, for `vllm` with no `url`."""
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

        if url:
            return VLLMBackend(url)
        from playground.inference.vllm_servers import VLLMServerPool

        if servers is None:
            raise InferenceError("INFERENCE_BACKEND is vllm but neither VLLM_URL nor settings for its own servers "
                                 "are given.")
        for name, value, low in (("VLLM_MAX_LORAS", servers.max_loras, 1),
                                 ("VLLM_MAX_LORA_RANK", servers.max_lora_rank, 1),
                                 ("VLLM_MAX_FULL_SERVERS", servers.max_full_servers, 0),
                                 ("VLLM_START_TIMEOUT", servers.start_timeout, 1)):
            if value < low:
                raise InferenceError(f"{name} must be at least {low}; got {value}.")
        return VLLMBackend(pool=VLLMServerPool(servers), max_lora_rank=servers.max_lora_rank)
    raise InferenceError(f"Unknown INFERENCE_BACKEND {kind!r}: use builtin or vllm.")


def get_backend():
    """The process's backend, made once from settings."""
    global _backend
    with _lock:
        if _backend is None:
            from django.conf import settings

            servers = None
            if settings.INFERENCE_BACKEND == "vllm" and not settings.VLLM_URL:
                from playground.inference.vllm_servers import ServerSettings

                servers = ServerSettings.from_django()
            _backend = make_backend(settings.INFERENCE_BACKEND, settings.VLLM_URL, settings.INFERENCE_MAX_FULL_MODELS,
                                    settings.INFERENCE_MAX_LOADED_MB, settings.INFERENCE_MAX_PROMPT_TOKENS, servers)
        return _backend


def backend_servers():
    """The inference servers this process runs and their state (empty unless Attune runs vLLM itself)."""
    from django.conf import settings

    if settings.INFERENCE_BACKEND != "vllm" or settings.VLLM_URL:
        return []
    return get_backend().status()


def close_backend():
    """Stop what the backend started (Attune's own vLLM servers), at the studio's shutdown."""
    global _backend
    with _lock:
        backend, _backend = _backend, None
    if backend is not None and hasattr(backend, "close"):
        backend.close()
