"""The built-in backend behind vLLM's OpenAI-compatible routes (`manage.py serve_inference`).

One server, one base model, LoRA adapters loaded at run time, as vLLM
with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`:

    GET  /v1/models                 the base (with `max_lora_rank`, `max_model_len`) and the loaded adapters
    POST /v1/chat/completions       plain, or `stream: true` as server-sent events
    POST /v1/load_lora_adapter      {"lora_name", "lora_path"}
    POST /v1/unload_lora_adapter    {"lora_name"}

Adapter folders must lie under `lora_root` (ATTUNE_HOME by default). The API
key is compared in constant time; a body over `max_body_bytes` is refused with
413, by its Content-Length before any of it is read, or once the bytes read
pass the limit.
Errors use the OpenAI shape: {"error": {"message", "type", "param", "code"}}.
"""

import hmac
import json
import time
import uuid
from pathlib import Path

from config.body_limit import header as _header
from playground.inference.base import InferenceError, SamplingParams
from playground.snapshots import Snapshot, adapter_rank


class _HTTPError(Exception):
    def __init__(self, status, message, param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class InferenceServer:
    def __init__(self, backend, base, max_lora_rank=16, lora_root=None, api_key="", max_model_len=None,
                 list_max_lora_rank=True, max_body_bytes=DEFAULT_MAX_BODY_BYTES):
        self.backend = backend
        self.base = base                      # the base model's Snapshot
        self.max_lora_rank = max_lora_rank
        self.lora_root = Path(lora_root).resolve() if lora_root else None
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.max_model_len = max_model_len
        self.list_max_lora_rank = list_max_lora_rank  # vLLM's own listing does not show it
        self.adapters = {}                    # name -> Snapshot
        self.created = int(time.time())

    # ASGI -----------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            if (scope["method"], scope["path"].rstrip("/")) == ("GET", "/health"):
                return await _json(send, 200, {"status": "ok"})  # as vLLM: the health check needs no key
            if self.api_key and not hmac.compare_digest(
                    (_header(scope, b"authorization") or "").encode("latin-1"), f"Bearer {self.api_key}".encode()):
                raise _HTTPError(401, "Missing or wrong API key.", code="invalid_api_key")
            route = (scope["method"], scope["path"].rstrip("/"))
            if route == ("GET", "/v1/models"):
                return await _json(send, 200, self.models())
            if scope["method"] != "POST" or route[1] not in (
                    "/v1/chat/completions", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
                raise _HTTPError(404, f"No route {scope['method']} {scope['path']}.", code="not_found")
            body = await _read_json(scope, receive, self.max_body_bytes)
            if route[1] == "/v1/load_lora_adapter":
                return await _text(send, 200, self.load_adapter(body))
            if route[1] == "/v1/unload_lora_adapter":
                return await _text(send, 200, self.unload_adapter(body))
            return await self.chat(body, send)
        except _HTTPError as exc:
            await _json(send, exc.status, {"error": {"message": exc.message, "type": "invalid_request_error",
                                                     "param": exc.param, "code": exc.code}})

    # Routes ---------------------------------------------------------------

    def models(self):
        data = [{"id": self.base.name, "object": "model", "created": self.created, "owned_by": "attune",
                 "root": self.base.base_path, "parent": None, "max_model_len": self.max_model_len,
                 **({"max_lora_rank": self.max_lora_rank} if self.list_max_lora_rank else {})}]
        data += [{"id": name, "object": "model", "created": self.created, "owned_by": "attune",
                  "root": s.weights_path, "parent": self.base.name} for name, s in self.adapters.items()]
        return {"object": "list", "data": data}

    def load_adapter(self, body):
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not name:
            raise _HTTPError(400, "lora_name is required.", param="lora_name")
        if not isinstance(path, str) or not path:
            raise _HTTPError(400, "lora_path is required.", param="lora_path")
        if name in self.adapters or name == self.base.name:
            raise _HTTPError(400, f"The lora adapter '{name}' has already been loaded.", param="lora_name")
        folder = Path(path).resolve()
        if self.lora_root and not folder.is_relative_to(self.lora_root):
            raise _HTTPError(400, f"lora_path must lie under {self.lora_root}.", param="lora_path")
        if not (folder / "adapter_config.json").is_file():
            raise _HTTPError(404, f"No adapter_config.json in {folder}.", param="lora_path")
        rank = adapter_rank(folder)
        if rank and rank > self.max_lora_rank:
            raise _HTTPError(400, f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.",
                             param="lora_path", code="lora_rank_too_large")
        self.adapters[name] = Snapshot.from_paths(name, self.base.base_path, folder, base_model=self.base.name)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload_adapter(self, body):
        name = body.get("lora_name")
        if name not in self.adapters:
            raise _HTTPError(404, f"The lora adapter '{name}' cannot be found.", param="lora_name")
        del self.adapters[name]
        return f"Success: LoRA adapter '{name}' removed successfully."

    def _snapshot(self, model):
        if model == self.base.name:
            return self.base
        if model in self.adapters:
            return self.adapters[model]
        raise _HTTPError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")

    async def chat(self, body, send):
        snapshot = self._snapshot(body.get("model"))
        if body.get("n", 1) != 1:
            raise _HTTPError(400, "Only n=1 is supported.", param="n")
        try:
            params = SamplingParams.from_dict({
                "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p"), "seed": body.get("seed"),
                "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
            })
            from playground.inference.base import validate_messages

            messages = validate_messages(body.get("messages"))
        except InferenceError as exc:
            raise _HTTPError(400, exc.message, param=exc.param, code=exc.code) from None
        if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
            raise _HTTPError(400, "stream_options must be an object.", param="stream_options")
        completion_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        model = body["model"]
        stream = self.backend.generate([snapshot], messages, params)
        if not body.get("stream"):
            final = None
            async for event in stream:
                if event.final:
                    final = event
            if final.type == "error":
                raise _HTTPError(400, final.error)
            return await _json(send, 200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": final.text},
                             "finish_reason": _openai_reason(final.finish_reason), "logprobs": None}],
                "usage": _usage(final)})

        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})

        async def chunk(delta, reason=None, usage=None):
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": reason,
                                                  "logprobs": None}]}
            if usage:
                data["usage"] = usage
            await send({"type": "http.response.body", "body": f"data: {json.dumps(data)}\n\n".encode(),
                        "more_body": True})

        await chunk({"role": "assistant", "content": ""})
        async for event in stream:
            if event.type == "delta":
                await chunk({"content": event.text})
            elif event.type == "done":
                await chunk({}, _openai_reason(event.finish_reason))
                if (body.get("stream_options") or {}).get("include_usage"):
                    await chunk(None, usage=_usage(event))
            elif event.type == "error":
                error = {"error": {"message": event.error, "type": "server_error", "param": None, "code": None}}
                await send({"type": "http.response.body", "body": f"data: {json.dumps(error)}\n\n".encode(),
                            "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _openai_reason(reason):
    return "length" if reason == "length" else "stop"


def _usage(event):
    return {"prompt_tokens": event.n_prompt_tokens, "completion_tokens": event.n_tokens,
            "total_tokens": event.n_prompt_tokens + event.n_tokens}


async def _read_json(scope, receive, limit):
    too_large = _HTTPError(413, f"The body is larger than the limit of {limit:,} bytes.", code="body_too_large")
    length = _header(scope, b"content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise _HTTPError(400, f"Content-Length {length!r} is not a number.")
        if int(length) > limit:
            raise too_large
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _HTTPError(400, "The client went away before the body ended.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except (ValueError, RecursionError) as exc:
        raise _HTTPError(400, f"The body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise _HTTPError(400, "The body must be a JSON object.")
    return body


async def _json(send, status, data):
    await _respond(send, status, json.dumps(data).encode(), b"application/json")


async def _text(send, status, text):
    await _respond(send, status, text.encode(), b"text/plain; charset=utf-8")


async def _respond(send, status, body, content_type):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
