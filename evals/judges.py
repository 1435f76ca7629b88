"""The judges of model graders (score_model, label_model): any snapshot Attune serves, through the
inference backend, or an external OpenAI-compatible endpoint (`<endpoint name>/<model id>`, a
`JudgeEndpoint` with its URL and secret key).

`StudioJudge()(model, messages, params, choices)` answers one grading prompt. With `choices` (a
label_model's labels) the answer is one of them (`SamplingParams.choices`): the built-in backend scores
each label's tokens after the prompt and takes the likeliest (a constraint on the logits, not a retry),
vLLM decodes under a guided choice; an external endpoint is asked plainly and its answer matched.
"""

import asyncio
import threading

from graders import JudgeAnswer, JudgeError


def endpoint_for(model):
    """The JudgeEndpoint a `<name>/<model>` judge names, or None."""
    from evals.models import JudgeEndpoint

    if not isinstance(model, str) or "/" not in model:
        return None
    name = model.split("/", 1)[0]
    return JudgeEndpoint.objects.filter(name=name).first()


class StudioJudge:
    """A judge for one run (or one graders/run request); it resolves each model once."""

    def __init__(self, timeout=120.0):
        self.timeout = timeout
        self._snapshots = {}
        self._lock = threading.Lock()

    def __call__(self, model, messages, params, choices=None):
        endpoint = endpoint_for(model)
        if endpoint is not None:
            return self._external(endpoint, model.split("/", 1)[1], messages, params, choices)
        return self._snapshot(model, messages, params, choices)

    def _snapshot(self, model, messages, params, choices):
        from playground.inference import (
            InferenceError,
            SamplingParams,
            collect,
            get_backend,
            validate_messages,
        )
        from playground.snapshots import UnknownModel, resolve_snapshot

        try:
            with self._lock:
                if model not in self._snapshots:
                    self._snapshots[model] = resolve_snapshot(model)
            snapshot = self._snapshots[model]
            chat = validate_messages(_as_chat(messages))
            sampling = SamplingParams.from_dict({
                "temperature": params.get("temperature", 0.0), "top_p": params.get("top_p"),
                "seed": params.get("seed"), "max_tokens": params.get("max_completions_tokens")
                or params.get("max_completion_tokens") or 64})
        except (UnknownModel, InferenceError) as exc:
            raise JudgeError(str(exc)) from None
        if choices:
            sampling.choices = tuple(str(choice) for choice in choices)
        try:
            (final,) = asyncio.run(collect(get_backend().generate([snapshot], chat, sampling), 1))
        except InferenceError as exc:
            raise JudgeError(exc.message) from None
        if final is None or final.type == "error":
            raise JudgeError(final.error if final is not None else "the judge gave no answer")
        return JudgeAnswer(text=final.text, prompt_tokens=final.n_prompt_tokens, completion_tokens=final.n_tokens)

    def _external(self, endpoint, model, messages, params, choices):
        import httpx

        body = {"model": model, "messages": _as_chat(messages),
                "temperature": params.get("temperature", 0.0),
                "max_tokens": params.get("max_completions_tokens") or params.get("max_completion_tokens") or 64}
        for name in ("top_p", "seed"):
            if params.get(name) is not None:
                body[name] = params[name]
        if choices:
            body["messages"] = body["messages"] + [{"role": "system", "content": "Answer with exactly one of: "
                                                    + ", ".join(choices)}]
        key = endpoint.key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = httpx.post(endpoint.base_url.rstrip("/") + "/chat/completions", json=body, headers=headers,
                                  timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise JudgeError(f"{endpoint.name}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise JudgeError(f"{endpoint.name} answered {response.status_code}: {response.text[:300]}")
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
            usage = data.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"{endpoint.name} sent an answer that is not a chat completion.") from None
        return JudgeAnswer(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           completion_tokens=int(usage.get("completion_tokens") or 0))


def _as_chat(messages):
    """Graders' messages (developer turns, content as text) as the backends' chat."""
    return [{"role": "system" if m.get("role") == "developer" else m.get("role"), "content": str(m.get("content"))}
            for m in messages]
