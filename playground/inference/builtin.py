"""The built-in backend: transformers + PEFT in this process, CPU or GPU.

- A base model is loaded once. Its LoRA snapshots are named adapters on it,
  and all the snapshots of one request that share a base (the base itself
  included) are decoded in ONE batch, one adapter per row: one forward pass
  per token for all of them, not one generation after another. Plain LoRA
  adapters are concatenated layer by layer (multi_lora.py), so a batch of
  several costs about what one does; other kinds go through PEFT's own
  mixed-adapter inference (`generate(..., adapter_names=[...])`).
- A full-weight checkpoint is its own model; at most `max_full_models` of
  them stay loaded (least recently used is dropped first).
- All loaded models together (bases with their adapters, full-weight
  snapshots) stay within `max_loaded_mb` of weights: past it, the least
  recently used are unloaded, base models included. A model bigger than
  the whole budget still loads, alone.
- A prompt longer than `max_prompt_tokens` (the rendered chat) is refused,
  naming `messages`.
- A request for one LoRA snapshot alone makes it the active adapter
  (PEFT's plain path, faster than the mixed-batch one).
- Loading runs in worker threads, decoding in ONE decoding thread; the event
  loop only relays text. One decoder at a time means a seed gives the same
  sample every time (torch's RNG is global) and two requests do not fight
  over the same cores. One thread also means one OpenMP thread team: every
  thread that runs torch operations gets its own team, and an idle team
  spins on the cores for a while after each operation. Decoding from several
  threads in turn measured two to three times slower on 2 cores.

Not supported: tool calls, `n` > 1, logprobs, stop strings.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from playground.inference.base import InferenceError, StreamEvent, Timer, local_device, validate_messages
from playground.inference.multi_lora import BASE_ADAPTER, Stack, mixable
from playground.snapshots import BASE, FULL, LORA

log = logging.getLogger(__name__)

# from_pretrained builds models under process-wide init contexts (meta device): two threads loading at
# once corrupt each other's weights, so loads take turns.
_LOAD_LOCK = threading.Lock()

# Text reaches the page in bursts at most this often (a row's first text and its end go at once).
STREAM_INTERVAL_S = 1 / 30


class _Loaded:
    """One model in memory with its tokenizer and the adapters put on it."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.adapters = OrderedDict()  # snapshot key -> adapter name
        self.load_lock = threading.Lock()
        self.stacks = OrderedDict()  # sorted adapter names -> Stack (or None: PEFT's mixed batch)
        self._footprint = None  # (the adapter names it was measured with, megabytes)

    def footprint_mb(self):
        """Megabytes of weights and buffers, adapters included; measured again only when they change."""
        names = tuple(self.adapters.values())
        if self._footprint is None or self._footprint[0] != names:
            self._footprint = (names, _footprint_mb(self.model))
        return self._footprint[1]

    def stack(self, names):
        """The concatenated adapters `names` (built once; the last few sets are kept)."""
        key = tuple(sorted(set(names) - {BASE_ADAPTER}))
        if key not in self.stacks:
            self.stacks[key] = Stack.build(self.model, key)
            while len(self.stacks) > 4:
                self.stacks.popitem(last=False)
        self.stacks.move_to_end(key)
        return self.stacks[key]


def _footprint_mb(model):
    """Megabytes of weights and buffers a model holds (its adapters included)."""
    import itertools

    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def _load_model(path, trust_remote_code=False):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = local_device()
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    with _LOAD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
        model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _Loaded(model, tokenizer)


def render_prompt(tokenizer, messages):
    """Token ids of the chat with the assistant's turn opened."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                            return_dict=True)["input_ids"]
        return list(ids)
    # A base model without a chat template: a plain transcript it can continue.
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return tokenizer(text)["input_ids"]


def _stop_ids(loaded):
    ids = set()
    for source in (loaded.model.generation_config.eos_token_id, loaded.tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids


class _RowStreamer:
    """Turns generate()'s per-step token tensors into text deltas, one row per output.

    Implements transformers' streamer protocol (put/end). The first `put` is
    the prompt. A row stops at its first end-of-sequence token; whatever
    generate() pads it with afterwards is ignored.
    """

    def __init__(self, tokenizer, indexes, stop_ids, emit, timer, cancel, n_prompt_tokens=0,
                 interval=STREAM_INTERVAL_S):
        self.tokenizer = tokenizer
        self.interval = interval
        self.pending = []
        self.last_flush = None
        self.n_prompt_tokens = n_prompt_tokens
        self.indexes = indexes
        self.stop_ids = stop_ids
        self.emit = emit
        self.timer = timer
        self.cancel = cancel
        self.ids = [[] for _ in indexes]
        self.sent = ["" for _ in indexes]
        self.done = [False for _ in indexes]
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        events, urgent = [], False
        for row, token in enumerate(value.reshape(len(self.indexes), -1)[:, -1].tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                events += self._finish(row, "stop")
                urgent = True
                continue
            self.ids[row].append(token)
            self.timer.mark(self.indexes[row])
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            # Hold back a partial multi-byte character until its last byte arrives.
            if text.endswith("\ufffd") or not text.startswith(self.sent[row]):
                continue
            delta = text[len(self.sent[row]):]
            if delta:
                first = not self.sent[row]
                self.sent[row] = text
                events.append(StreamEvent(index=self.indexes[row], type="delta", text=delta))
                urgent = urgent or first
        self._send(events, urgent)

    def end(self):
        events = []
        for row in range(len(self.indexes)):
            if not self.done[row]:
                events += self._finish(row, "cancelled" if self.cancel.is_set() else "length")
        self._send(events, urgent=True)

    def _send(self, events, urgent):
        """Hand events over in bursts: a row's first text and its end at once, other text at most every
        `interval` seconds. Each hand-over wakes the event loop's thread, which then takes the GIL and a core
        from the decoding thread; a burst costs what one token does."""
        for event in events:
            held = next((e for e in reversed(self.pending) if e.index == event.index), None)
            if event.type == "delta" and held is not None and held.type == "delta":
                held.text += event.text  # one delta per row and burst
            else:
                self.pending.append(event)
        now = time.perf_counter()
        if self.pending and (urgent or self.last_flush is None or now - self.last_flush >= self.interval):
            self.emit(*self.pending)
            self.pending = []
            self.last_flush = now

    def _finish(self, row, reason):
        """The row's last events: what text was held back, then `done`."""
        self.done[row] = True
        index = self.indexes[row]
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
        events = []
        if text.startswith(self.sent[row]) and text != self.sent[row]:
            events.append(StreamEvent(index=index, type="delta", text=text[len(self.sent[row]):]))
        self.sent[row] = text
        events.append(StreamEvent(index=index, type="done", text=text, finish_reason=reason,
                                  n_tokens=len(self.ids[row]), n_prompt_tokens=self.n_prompt_tokens,
                                  ttft_s=self.timer.ttft(index), elapsed_s=self.timer.elapsed()))
        return events

    @property
    def all_done(self):
        return all(self.done)


@contextlib.contextmanager
def _adapter_mode(loaded, adapter_names, kwargs):
    """Pick how the adapters of one batch are applied.

    Several adapters in one batch: concatenated (multi_lora.Stack), or PEFT's
    mixed-batch inference (`adapter_names=`) for kinds that are not stacked. One
    adapter for every row: make it the active adapter, PEFT's plain path. Only
    the base: adapters disabled.
    """
    model = loaded.model
    distinct = set(adapter_names or [])
    if not adapter_names:
        yield
    elif distinct == {BASE_ADAPTER}:
        with model.disable_adapter():
            yield
    elif len(distinct) == 1:
        model.set_adapter(adapter_names[0])
        yield
    elif (stack := loaded.stack(adapter_names)) is not None:
        with stack.applied(adapter_names):
            yield
    else:
        kwargs["adapter_names"] = adapter_names
        yield


class BuiltinBackend:
    name = "builtin"

    def __init__(self, max_full_models=2, max_adapters=64, max_loaded_mb=8192, max_prompt_tokens=4096):
        self.max_full_models = max_full_models
        self.max_adapters = max_adapters
        self.max_loaded_mb = max_loaded_mb
        self.max_prompt_tokens = max_prompt_tokens
        self._bases = {}                 # base_path -> _Loaded
        self._full = OrderedDict()       # weights_path -> _Loaded, least recently used first
        self._last_used = {}             # ("base" | "full", path) -> a count that grows with each use
        self._uses = 0
        self._registry_lock = threading.Lock()
        self._key_locks = {}
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="attune-inference")
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attune-decode")

    # Loading ----------------------------------------------------------------

    def _key_lock(self, key):
        with self._registry_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _touch(self, key):
        with self._registry_lock:
            self._uses += 1
            self._last_used[key] = self._uses

    def _fit_budget(self, keep):
        """Unload the least recently used models until the loaded ones fit in max_loaded_mb; `keep`
        (the model a request is about to use) stays. A request still decoding with an unloaded model
        finishes with it: the memory goes when it is done."""
        with self._registry_lock:
            loaded = {("base", p): m for p, m in self._bases.items()}
            loaded.update({("full", p): m for p, m in self._full.items()})
            sizes = {key: m.footprint_mb() for key, m in loaded.items()}
            total = sum(sizes.values())
            for key in sorted(loaded, key=lambda k: self._last_used.get(k, 0)):
                if total <= self.max_loaded_mb:
                    break
                if key == keep:
                    continue
                (self._bases if key[0] == "base" else self._full).pop(key[1])
                self._last_used.pop(key, None)
                total -= sizes[key]
                log.info("Unloading %s (%.0f MB): the loaded models passed INFERENCE_MAX_LOADED_MB=%d",
                         key[1], sizes[key], self.max_loaded_mb)

    def _base(self, snapshot):
        key = ("base", snapshot.base_path)
        with self._key_lock(key):
            loaded = self._bases.get(snapshot.base_path)
            self._touch(key)
            if loaded is None:
                log.info("Loading base model %s from %s", snapshot.base_model, snapshot.base_path)
                loaded = _load_model(snapshot.base_path, snapshot.trust_remote_code)
                with self._registry_lock:
                    self._bases[snapshot.base_path] = loaded
                self._fit_budget(keep=key)
            return loaded

    def _full_model(self, snapshot):
        path = snapshot.weights_path
        self._touch(("full", path))
        with self._key_lock(("full", path)):
            with self._registry_lock:
                loaded = self._full.get(path)
                if loaded is not None:
                    self._full.move_to_end(path)
                    return loaded
            log.info("Loading full-weight snapshot %s from %s", snapshot.name, path)
            loaded = _load_model(path, snapshot.trust_remote_code)
            with self._registry_lock:
                self._full[path] = loaded
                while len(self._full) > self.max_full_models:
                    dropped, _ = self._full.popitem(last=False)
                    self._last_used.pop(("full", dropped), None)
                    log.info("Unloading %s (more than %d full models loaded)", dropped, self.max_full_models)
            self._fit_budget(keep=("full", path))
            return loaded

    def _adapter_names(self, loaded, snapshots):
        """Put each LoRA snapshot on the base model once; its adapter name is its snapshot key."""
        from peft import PeftModel

        names = []
        with loaded.load_lock:
            if not isinstance(loaded.model, PeftModel) and all(s.kind == BASE for s in snapshots):
                return None  # a plain model: nothing to switch
            for snapshot in snapshots:
                if snapshot.kind == BASE:
                    names.append(BASE_ADAPTER)
                    continue
                name = loaded.adapters.get(snapshot.key)
                if name is None:
                    name = "a_" + snapshot.key.replace("-", "_").replace(".", "_")
                    with _LOAD_LOCK:  # only while reading weights: decoding does not wait on other loads
                        if isinstance(loaded.model, PeftModel):
                            loaded.model.load_adapter(snapshot.weights_path, adapter_name=name)
                        else:
                            loaded.model = PeftModel.from_pretrained(loaded.model, snapshot.weights_path,
                                                                     adapter_name=name)
                    loaded.model.eval()
                    loaded.adapters[snapshot.key] = name
                    loaded.stacks.clear()
                else:
                    loaded.adapters.move_to_end(snapshot.key)
                names.append(name)
            wanted = set(names)
            while len(loaded.adapters) > self.max_adapters:
                key, name = next((k, n) for k, n in loaded.adapters.items() if n not in wanted)
                loaded.model.delete_adapter(name)
                del loaded.adapters[key]
                loaded.stacks.clear()
        return names

    # Decoding ---------------------------------------------------------------

    def _run_group(self, group, messages, params, emit, timer, cancel):
        """Decode one batch: snapshots that share weights in memory. Runs in a worker thread."""
        indexes = [index for index, _ in group]
        snapshots = [snapshot for _, snapshot in group]
        finished = set()

        def tracked(*events):
            finished.update(event.index for event in events if event.final)
            emit(*events)

        try:
            for snapshot in snapshots:
                if snapshot.kind in (LORA, FULL) and not snapshot.weights_path:
                    raise InferenceError(f"The snapshot '{snapshot.name}' has no weights folder.")
            full = snapshots[0].kind == FULL
            loaded = self._full_model(snapshots[0]) if full else self._base(snapshots[0])

            # Putting an adapter on a model while another request decodes with it changes that
            # request's answer, so adapters change only between generations: in the decoding thread.
            def decode():
                if cancel.is_set():  # the client left while this waited its turn
                    return
                names = None if full else self._adapter_names(loaded, snapshots)
                if not full:
                    self._fit_budget(keep=("base", snapshots[0].base_path))  # its adapters weigh too
                # Adapters that cannot be stacked go through PEFT's mixed batch, which fails when any loaded
                # adapter carries whole-module copies: then one generation per snapshot.
                if names and len(set(names)) > 1 and loaded.stack(names) is None and \
                        not mixable(loaded.model, list(loaded.model.peft_config)):
                    for name, index in zip(names, indexes, strict=True):
                        self._generate(loaded, [name], [index], messages, params, tracked, timer, cancel)
                    return
                self._generate(loaded, names, indexes, messages, params, tracked, timer, cancel)

            self._decoder.submit(decode).result()
        except Exception as exc:  # each output of the group gets the reason, the others go on
            if not isinstance(exc, InferenceError):
                log.exception("Generation failed for %s", [s.name for s in snapshots])
            message = exc.message if isinstance(exc, InferenceError) else f"{type(exc).__name__}: {exc}"
            param = exc.param if isinstance(exc, InferenceError) else None
            for index in indexes:
                if index not in finished:
                    emit(StreamEvent(index=index, type="error", error=message, param=param,
                                     elapsed_s=timer.elapsed()))

    def _generate(self, loaded, adapter_names, indexes, messages, params, emit, timer, cancel):
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        prompt = render_prompt(loaded.tokenizer, messages)
        if self.max_prompt_tokens and len(prompt) > self.max_prompt_tokens:
            raise InferenceError(f"messages: the prompt is {len(prompt)} tokens, more than the "
                                 f"{self.max_prompt_tokens} this server accepts (INFERENCE_MAX_PROMPT_TOKENS). "
                                 "Shorten the conversation.", param="messages")
        if params.choices:
            self._choose(loaded, adapter_names, indexes, prompt, params.choices, emit, timer)
            return
        limit = getattr(loaded.model.config, "max_position_embeddings", None)
        if limit and len(prompt) + params.max_tokens > limit:
            raise InferenceError(f"The prompt is {len(prompt)} tokens; with max_tokens {params.max_tokens} it "
                                 f"exceeds the model's context of {limit} tokens.", param="max_tokens")
        streamer = _RowStreamer(loaded.tokenizer, indexes, _stop_ids(loaded), emit, timer, cancel, len(prompt))

        class StopWhenDone(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                stop = cancel.is_set() or streamer.all_done
                return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

        device = next(loaded.model.parameters()).device
        # Every row holds the same conversation, so the batch needs no padding.
        input_ids = torch.tensor([prompt] * len(indexes), device=device)
        kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                      max_new_tokens=params.max_tokens, streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([StopWhenDone()]),
                      pad_token_id=loaded.tokenizer.pad_token_id)
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
        with torch.inference_mode(), _adapter_mode(loaded, adapter_names, kwargs):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            loaded.model.generate(**kwargs)

    def _choose(self, loaded, adapter_names, indexes, prompt, choices, emit, timer):
        """Answer the likeliest of `choices` for each row: every choice's tokens are scored after the prompt
        in one forward pass per snapshot (the sum of their log-probabilities), so the answer is always one
        of them, as a logits constraint makes it."""
        import torch

        tokenizer = loaded.tokenizer
        encoded = [tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in choices]
        width = len(prompt) + max(len(ids) for ids in encoded)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        rows = [prompt + ids + [pad] * (width - len(prompt) - len(ids)) for ids in encoded]
        masks = [[1] * (len(prompt) + len(ids)) + [0] * (width - len(prompt) - len(ids)) for ids in encoded]
        device = next(loaded.model.parameters()).device
        input_ids = torch.tensor(rows, device=device)
        attention = torch.tensor(masks, device=device)
        names = adapter_names or [None] * len(indexes)
        for name, index in zip(names, indexes, strict=True):
            kwargs = {}
            with torch.inference_mode(), _adapter_mode(loaded, [name] if name else None, kwargs):
                logits = loaded.model(input_ids=input_ids, attention_mask=attention, **kwargs).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1)
            scores = []
            for row, ids in enumerate(encoded):
                positions = range(len(prompt) - 1, len(prompt) - 1 + len(ids))
                scores.append(sum(float(logprobs[row, p, token]) for p, token in zip(positions, ids, strict=True)))
            best = max(range(len(choices)), key=lambda n: scores[n])
            timer.mark(index)
            emit(StreamEvent(index=index, type="done", text=choices[best], finish_reason="stop",
                             n_tokens=len(encoded[best]), n_prompt_tokens=len(prompt), ttft_s=timer.ttft(index),
                             elapsed_s=timer.elapsed()))

    # The interface ----------------------------------------------------------

    @staticmethod
    def _groups(snapshots):
        groups = OrderedDict()
        for index, snapshot in enumerate(snapshots):
            key = ("full", snapshot.weights_path) if snapshot.kind == FULL else ("base", snapshot.base_path)
            groups.setdefault(key, []).append((index, snapshot))
        return list(groups.values())

    async def generate(self, snapshots, messages, params):
        messages = validate_messages(messages)
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue()
        cancel = threading.Event()
        timer = Timer()

        def put_all(events):
            for event in events:
                queue.put_nowait(event)

        def emit(*events):  # from the decoding thread: one wake-up of the loop per call
            loop.call_soon_threadsafe(put_all, events)

        futures = [loop.run_in_executor(self._executor, self._run_group, group, messages, params, emit, timer,
                                        cancel) for group in self._groups(snapshots)]
        remaining = set(range(len(snapshots)))
        try:
            while remaining:
                event = await queue.get()
                if event.final:
                    remaining.discard(event.index)
                yield event
        finally:
            # A client that went away stops the decoding at the next token.
            cancel.set()
            for future in futures:
                future.cancel()

    def loaded_summary(self):
        return {"bases": list(self._bases), "full": list(self._full),
                "adapters": {p: list(m.adapters) for p, m in self._bases.items()}}
