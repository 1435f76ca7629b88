"""A client for a vLLM OpenAI-compatible server (one server per base model).

- The server is started with `--enable-lora` and
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. A LoRA snapshot is loaded with
  `POST /v1/load_lora_adapter` the first time it is asked for, under a name
  used once only (`<checkpoint id>-<random>`): vLLM may serve stale cached
  blocks for a name that is reused (vllm-project/vllm#42125).
- Before loading, the adapter's rank is checked against the server's
  `max_lora_rank`: read from the server's `/v1/models` entry when it gives
  one (`manage.py serve_inference` does), else from VLLM_MAX_LORA_RANK.
  vLLM itself does not list it; with neither, the server's own refusal
  ("LoRA rank … is greater than max_lora_rank …") is passed on as the same
  clear error.
- Loads of different adapters go out together; two requests for the same
  new adapter load it once.
- An error the server sends inside a stream (`data: {"error": …}`) ends
  that output as an error.
- The outputs of one request go out as concurrent streaming requests;
  vLLM batches them on its side.
- The adapter folder's path is sent as it is on this host: the vLLM host
  must see the same path (a shared filesystem).

Not supported here: full-weight checkpoints (each needs its own vLLM
server) and base models other than the one the server serves.
"""

import asyncio
import json
import os
import re
import uuid
import weakref

import httpx

from playground.inference.base import AdapterRankError, InferenceError, StreamEvent, Timer, validate_messages
from playground.snapshots import BASE, FULL


class VLLMBackend:
    name = "vllm"

    def __init__(self, url, api_key=None, max_lora_rank=None, timeout=600.0):
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.api_key = api_key if api_key is not None else os.environ.get("VLLM_API_KEY", "")
        self.configured_max_rank = max_lora_rank or int(os.environ.get("VLLM_MAX_LORA_RANK") or 0) or None
        self.timeout = timeout
        self._served = {}          # snapshot key -> the adapter name it was loaded under
        self._load_locks = weakref.WeakKeyDictionary()  # event loop -> {snapshot key: asyncio lock}
        self._server = None

    def _client(self):
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers,
                                 timeout=httpx.Timeout(self.timeout, connect=10.0))

    async def server_info(self, client, refresh=False):
        """{"base": id, "root": path, "max_lora_rank": n, "adapters": {name: path}} from /v1/models."""
        if self._server is not None and not refresh:
            return self._server
        try:
            resp = await client.get("/v1/models")
        except httpx.HTTPError as exc:
            raise InferenceError(f"The vLLM server at {self.url} does not answer: {exc}.") from None
        if resp.status_code != 200:
            raise InferenceError(f"The vLLM server at {self.url} answered {resp.status_code} to /v1/models.")
        models = resp.json().get("data", [])
        bases = [m for m in models if not m.get("parent")]
        if not bases:
            raise InferenceError(f"The vLLM server at {self.url} lists no base model.")
        base = bases[0]
        self._server = {
            "base": base["id"], "root": base.get("root") or base["id"],
            "max_lora_rank": base.get("max_lora_rank") or self.configured_max_rank,
            "adapters": {m["id"]: m.get("root") for m in models if m.get("parent")},
        }
        return self._server

    def _check_base(self, server, snapshot):
        if snapshot.kind == FULL:
            raise InferenceError(f"'{snapshot.name}' holds full weights; vLLM serves one base model per server, "
                                 "so it needs its own vLLM server (or INFERENCE_BACKEND=builtin).", param="model")
        if server["base"] not in (snapshot.base_model, snapshot.base_path) and server["root"] not in (
                snapshot.base_model, snapshot.base_path):
            raise InferenceError(f"The vLLM server at {self.url} serves '{server['base']}', but '{snapshot.name}' "
                                 f"is built on '{snapshot.base_model}'.", param="model")

    async def model_for(self, client, snapshot):
        """The name to put in `model` for this snapshot, loading its adapter on first use."""
        server = await self.server_info(client)
        self._check_base(server, snapshot)
        if snapshot.kind == BASE:
            return server["base"]
        loop = asyncio.get_running_loop()
        lock = self._load_locks.setdefault(loop, {}).setdefault(snapshot.key, asyncio.Lock())
        async with lock:
            served = self._served.get(snapshot.key)
            if served:
                return served
            if snapshot.lora_rank and server["max_lora_rank"] and snapshot.lora_rank > server["max_lora_rank"]:
                raise AdapterRankError(snapshot.name, snapshot.lora_rank, server["max_lora_rank"])
            name = f"{snapshot.key}-{uuid.uuid4().hex[:8]}"
            resp = await client.post("/v1/load_lora_adapter",
                                     json={"lora_name": name, "lora_path": snapshot.weights_path})
            if resp.status_code != 200:
                detail = _error_text(resp)
                if "max_lora_rank" in detail:
                    limit = re.search(r"max_lora_rank\D{0,5}(\d+)", detail)
                    if snapshot.lora_rank and limit:
                        raise AdapterRankError(snapshot.name, snapshot.lora_rank, int(limit.group(1)))
                    raise InferenceError(f"The vLLM server refused the adapter of '{snapshot.name}': {detail}",
                                         param="model", code="lora_rank_too_large")
                raise InferenceError(f"The vLLM server could not load the adapter of '{snapshot.name}' "
                                     f"({resp.status_code}): {detail}", param="model")
            self._served[snapshot.key] = name
            return name

    async def _stream_one(self, client, index, snapshot, messages, params, emit, timer):
        for attempt in (1, 2):
            try:
                model = await self.model_for(client, snapshot)
                body = {"model": model, "messages": messages, "temperature": params.temperature,
                        "top_p": params.top_p, "max_tokens": params.max_tokens, "stream": True,
                        "stream_options": {"include_usage": True}}
                if params.seed is not None:
                    body["seed"] = params.seed
                parts, n_tokens, reason = [], 0, ""
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    if resp.status_code == 404 and attempt == 1 and snapshot.kind != BASE:
                        # The server restarted and forgot the adapter: load it again, under a new name.
                        self._served.pop(snapshot.key, None)
                        await self.server_info(client, refresh=True)
                        continue
                    if resp.status_code != 200:
                        await resp.aread()
                        raise InferenceError(f"The vLLM server answered {resp.status_code}: {_error_text(resp)}")
                    async for line in resp.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        chunk = json.loads(data)
                        if chunk.get("error"):
                            raise InferenceError(f"The vLLM server stopped this output: {_error_text(chunk)}")
                        if chunk.get("usage"):
                            n_tokens = chunk["usage"].get("completion_tokens") or n_tokens
                        for choice in chunk.get("choices") or []:
                            text = (choice.get("delta") or {}).get("content") or ""
                            if text:
                                timer.mark(index)
                                parts.append(text)
                                emit(StreamEvent(index=index, type="delta", text=text))
                            reason = choice.get("finish_reason") or reason
                emit(StreamEvent(index=index, type="done", text="".join(parts), finish_reason=reason or "stop",
                                 n_tokens=n_tokens or len(parts), ttft_s=timer.ttft(index),
                                 elapsed_s=timer.elapsed()))
                return
            except InferenceError as exc:
                emit(StreamEvent(index=index, type="error", error=exc.message, param=exc.param,
                                 elapsed_s=timer.elapsed()))
                return
            except (httpx.HTTPError, ValueError) as exc:
                emit(StreamEvent(index=index, type="error", error=f"The vLLM server at {self.url} failed: {exc}",
                                 elapsed_s=timer.elapsed()))
                return

    async def generate(self, snapshots, messages, params):
        messages = validate_messages(messages)
        queue = asyncio.Queue()
        timer = Timer()
        async with self._client() as client:
            tasks = [asyncio.create_task(self._stream_one(client, i, s, messages, params, queue.put_nowait, timer))
                     for i, s in enumerate(snapshots)]
            remaining = set(range(len(snapshots)))
            try:
                while remaining:
                    event = await queue.get()
                    if event.final:
                        remaining.discard(event.index)
                    yield event
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


def _error_text(resp):
    """The message of an error answer (a response, or a chunk already parsed)."""
    if isinstance(resp, dict):
        data = resp
    else:
        try:
            data = resp.json()
        except ValueError:
            return resp.text.strip()[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    return str(data)
