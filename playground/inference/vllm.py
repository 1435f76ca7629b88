"""A client for vLLM OpenAI-compatible servers, one server per base model.

The servers are either run elsewhere (VLLM_URL: one server, one base model)
or started and supervised by Attune itself (playground/inference/vllm_servers.py).

- A server is started with `--enable-lora` and
  `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`. A LoRA snapshot is loaded with
  `POST /v1/load_lora_adapter` the first time it is asked for, under a name
  used once only (`<checkpoint id>-<random>`): vLLM may serve stale cached
  blocks for a name that is reused (vllm-project/vllm#42125). A checkpoint
  folder whose adapter file changed since it was loaded (a resumed job wrote
  it again) is loaded again under a new name.
- Before loading, the adapter's rank is checked against the server's
  `max_lora_rank`: the server's `/v1/models` entry when it gives one
  (`manage.py serve_inference` does), else the one Attune started it with,
  else VLLM_MAX_LORA_RANK. vLLM itself does not list it; with none of these,
  the server's own refusal ("LoRA rank … is greater than max_lora_rank …")
  is passed on as the same clear error.
- Loads of different adapters go out together; two requests for the same
  new adapter load it once.
- An error the server sends inside a stream (`data: {"error": …}`) ends
  that output as an error; so does a server that goes away mid-answer.
- The outputs of one request go out as concurrent streaming requests;
  vLLM batches them on its side.
- The adapter folder's path is sent as it is on this host: the vLLM host
  must see the same path (a shared filesystem).

With VLLM_URL, full-weight checkpoints and other base models are refused
(each needs its own server); Attune's own servers serve them.
"""

import asyncio
import contextlib
import json
import os
import re
import uuid
import weakref
from pathlib import Path

import httpx

from playground.inference.base import AdapterRankError, InferenceError, StreamEvent, Timer, validate_messages
from playground.snapshots import FULL, LORA


class _Target:
    """One server as the client knows it: its base, its limit, the adapters it was given."""

    def __init__(self, url, api_key="", max_lora_rank=None, managed=None):
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.configured_max_rank = max_lora_rank
        self.managed = managed      # the ManagedServer, when Attune runs it
        self.info = None
        self.served = {}            # (snapshot key, adapter file's stamp) -> the name it was loaded under
        self.load_locks = weakref.WeakKeyDictionary()  # event loop -> {snapshot key: asyncio lock}

    async def get(self, client, path):
        return await client.get(self.url + path, headers=self.headers)

    async def server_info(self, client, refresh=False):
        """{"base": id, "root": path, "max_lora_rank": n, "adapters": {name: path}} from /v1/models."""
        if self.info is not None and not refresh:
            return self.info
        try:
            resp = await self.get(client, "/v1/models")
        except httpx.HTTPError as exc:
            raise InferenceError(f"The vLLM server at {self.url} does not answer: {exc}.") from None
        if resp.status_code != 200:
            raise InferenceError(f"The vLLM server at {self.url} answered {resp.status_code} to /v1/models.")
        models = resp.json().get("data", [])
        bases = [m for m in models if not m.get("parent")]
        if not bases:
            raise InferenceError(f"The vLLM server at {self.url} lists no base model.")
        base = bases[0]
        self.info = {
            "base": base["id"], "root": base.get("root") or base["id"],
            "max_lora_rank": base.get("max_lora_rank") or self.configured_max_rank,
            "adapters": {m["id"]: m.get("root") for m in models if m.get("parent")},
        }
        return self.info

    def check_base(self, info, snapshot):
        if self.managed is not None:
            return
        if snapshot.kind == FULL:
            raise InferenceError(f"'{snapshot.name}' holds full weights; vLLM serves one base model per server, "
                                 "so it needs its own vLLM server: leave VLLM_URL unset to have Attune start one, "
                                 "or use INFERENCE_BACKEND=builtin.", param="model")
        if info["base"] not in (snapshot.base_model, snapshot.base_path) and info["root"] not in (
                snapshot.base_model, snapshot.base_path):
            raise InferenceError(f"The vLLM server at {self.url} serves '{info['base']}', but '{snapshot.name}' "
                                 f"is built on '{snapshot.base_model}'.", param="model")

    async def model_for(self, client, snapshot):
        """The name to put in `model` for this snapshot, loading its adapter on first use."""
        info = await self.server_info(client)
        self.check_base(info, snapshot)
        if snapshot.kind != LORA:
            return info["base"]
        loop = asyncio.get_running_loop()
        lock = self.load_locks.setdefault(loop, {}).setdefault(snapshot.key, asyncio.Lock())
        async with lock:
            key = (snapshot.key, _stamp(snapshot.weights_path))
            served = self.served.get(key)
            if served:
                return served
            if snapshot.lora_rank and info["max_lora_rank"] and snapshot.lora_rank > info["max_lora_rank"]:
                raise AdapterRankError(snapshot.name, snapshot.lora_rank, info["max_lora_rank"])
            name = f"{snapshot.key}-{uuid.uuid4().hex[:8]}"
            resp = await client.post(self.url + "/v1/load_lora_adapter", headers=self.headers,
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
            self.forget(snapshot)  # the folder's earlier weights, if it was written again
            self.served[key] = name
            return name

    def forget(self, snapshot):
        for old in [k for k in self.served if k[0] == snapshot.key]:
            del self.served[old]


def _stamp(folder):
    """What changes when an adapter folder is written again: its weights file's size and time."""
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        try:
            st = (Path(folder) / name).stat()
            return (st.st_size, st.st_mtime_ns)
        except OSError:
            continue
    return None


class VLLMBackend:
    name = "vllm"

    def __init__(self, url="", api_key=None, max_lora_rank=None, timeout=600.0, pool=None):
        """`url`: a server run elsewhere. `pool`: a VLLMServerPool that starts servers on this host."""
        if not url and pool is None:
            raise InferenceError("The vllm backend needs VLLM_URL or a pool of servers it runs itself.")
        self.pool = pool
        self.timeout = timeout
        self.configured_max_rank = max_lora_rank or int(os.environ.get("VLLM_MAX_LORA_RANK") or 0) or None
        self.url = ""
        self._remote = None
        if url:
            self.url = url.rstrip("/")
            if self.url.endswith("/v1"):
                self.url = self.url[:-3]
            key = api_key if api_key is not None else os.environ.get("VLLM_API_KEY", "")
            self._remote = _Target(self.url, key, self.configured_max_rank)
        self._targets = {}          # (server key, generation) -> _Target, for the servers of the pool

    async def target_for(self, snapshot):
        """The server that serves this snapshot, started first when Attune runs it and it is not running."""
        if self._remote is not None:
            return self._remote
        server = await asyncio.to_thread(self.pool.ensure, snapshot)
        key = (server.key, server.generation)
        target = self._targets.get(key)
        if target is None:
            for old in [k for k in self._targets if k[0] == server.key]:
                del self._targets[old]
            target = self._targets[key] = _Target(server.url, server.api_key, self.pool.settings.max_lora_rank,
                                                  managed=server)
        return target

    async def _stream_one(self, client, index, snapshot, messages, params, emit, timer):
        target = None
        try:
            for attempt in (1, 2):
                target = await self.target_for(snapshot)
                in_use = self.pool.in_use(target.managed) if target.managed else contextlib.nullcontext()
                with in_use:
                    if await self._stream_from(target, client, index, snapshot, messages, params, emit, timer,
                                               retry=attempt == 1):
                        return
        except InferenceError as exc:
            emit(StreamEvent(index=index, type="error", error=exc.message, param=exc.param,
                             elapsed_s=timer.elapsed()))
        except (httpx.HTTPError, ValueError) as exc:
            where = f"The vLLM server at {target.url}" if target else "The vLLM server"
            if isinstance(exc, httpx.TransportError):
                message = (f"{where} went away during this answer ({type(exc).__name__}: {exc or 'no reply'}). "
                           + ("Attune starts it again; ask again in a moment." if target and target.managed
                              else "Check that it is running, then ask again."))
                if target and target.managed:
                    self.pool.went_away(target.managed)
            else:
                message = f"{where} failed: {exc}"
            emit(StreamEvent(index=index, type="error", error=message, elapsed_s=timer.elapsed()))

    async def _stream_from(self, target, client, index, snapshot, messages, params, emit, timer, retry):
        """Stream one answer; False when the server forgot the adapter and it should be asked again."""
        model = await target.model_for(client, snapshot)
        body = {"model": model, "messages": messages, "temperature": params.temperature,
                "top_p": params.top_p, "max_tokens": params.max_tokens, "stream": True,
                "stream_options": {"include_usage": True}}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.choices:
            body["structured_outputs"] = {"choice": list(params.choices)}  # vLLM's guided choice
        parts, n_tokens, n_prompt, reason = [], 0, 0, ""
        async with client.stream("POST", target.url + "/v1/chat/completions", json=body,
                                 headers=target.headers) as resp:
            if resp.status_code == 404 and retry and snapshot.kind == LORA:
                # The server restarted and forgot the adapter: load it again, under a new name.
                target.forget(snapshot)
                await target.server_info(client, refresh=True)
                return False
            if resp.status_code != 200:
                await resp.aread()
                detail = _error_text(resp)
                raise InferenceError(f"The vLLM server answered {resp.status_code}: {detail}",
                                     param=_error_param(resp, detail))
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
                    n_prompt = chunk["usage"].get("prompt_tokens") or n_prompt
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        timer.mark(index)
                        parts.append(text)
                        emit(StreamEvent(index=index, type="delta", text=text))
                    reason = choice.get("finish_reason") or reason
        emit(StreamEvent(index=index, type="done", text="".join(parts), finish_reason=reason or "stop",
                         n_tokens=n_tokens or len(parts), n_prompt_tokens=n_prompt, ttft_s=timer.ttft(index),
                         elapsed_s=timer.elapsed()))
        return True

    async def generate(self, snapshots, messages, params):
        messages = validate_messages(messages)
        queue = asyncio.Queue()
        timer = Timer()
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=10.0)) as client:
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

    def status(self):
        """The servers Attune runs, for the Base models page ([] with VLLM_URL)."""
        return self.pool.status() if self.pool is not None else []

    def close(self):
        if self.pool is not None:
            self.pool.stop_all()


def _error_param(resp, detail):
    """The request field an error answer blames, in the names Attune's requests use."""
    try:
        error = resp.json().get("error") or {}
        param = error.get("param") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        param = None
    if not param:
        found = re.search(r"\(parameter=(\w+)", detail)
        param = found.group(1) if found else None
    return "messages" if param in ("input_text", "prompt", "messages") else param


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
