"""Reinforcement fine-tuning: TRL's GRPOTrainer with the job's grader as the reward.

- `rft_rows(raw, what)`: lines whose `messages` end in a user turn become TRL's conversational `prompt`
  rows; every other key of the line is the grader's `item` (kept as JSON, so lines with different
  fields fit one table). `developer` turns are given to the chat template as system turns.
- `Grading`: the grader, its judge (`StudioJudge`: the studio's /v1/chat/completions, the inference
  backend that serves every snapshot) and the python sandbox's limits. `grade(texts, items)` grades a
  batch through `graders.grade_items`, the code evals run, after the job's response_format (an answer
  that is not JSON matching the schema scores 0, a parse error). `figures(results)` sums a batch up:
  the mean reward, each grader's mean score, the parse and grader error rates, each error flag's share.
  A failure it cannot score (a python grader that raised, a judge that was deleted mid-run) is counted,
  said once in a warning, and scored 0: it never stops the job.
- `GraderReward`: the reward function TRL calls once per generation batch; it logs the figures of the
  batch through TRL's `log_metric`, so they are averaged over a logging step like TRL's own.
- `validation_figures(job, rows)`: greedy answers (one per prompt) to validation rows, graded.
- `grpo_arguments(job, common)`: GRPOConfig's settings from the spec. On a GPU with vLLM importable,
  generation runs in vLLM colocated with training; elsewhere (a CPU) in the training process.

Not supported: tools in reinforcement lines, reasoning-token figures, several processes' figures
(each process sums up its own shard; rank 0 reports).
"""

import json
import os

from .report import EngineError

# The error flags that mean the answer was not what the grader reads (not JSON, no such field); every other
# flag set is the grader's own failure (a python grader that raised, a judge that failed).
PARSE_FLAGS = ("sample_parse_error", "invalid_variable_error")
WARN_EVERY = 20  # the same grader failure is said again after this many steps
PREFIX = "attune/"  # the metric names GraderReward logs through TRL


def rft_rows(rows, what):
    """Reinforcement lines as TRL conversational prompt rows, each with its item as JSON."""
    from .data import TEMPLATE_KEYS

    out = []
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict) \
                or messages[-1].get("role") != "user":
            raise EngineError("invalid_file", f"{what} line {number} is not a reinforcement prompt: its "
                                              "'messages' must end with a user message, which the model answers.")
        prompt = []
        for message in messages:
            turn = {k: message[k] for k in TEMPLATE_KEYS if k in message}
            if turn.get("role") == "developer":
                turn["role"] = "system"
            prompt.append(turn)
        item = {k: v for k, v in row.items() if k != "messages"}
        out.append({"prompt": prompt, "item": json.dumps(item)})
    return out


class StudioJudge:
    """score_model and label_model graders' judge: the studio's /v1/chat/completions, which answers with
    any snapshot (base models, fine-tuned models, checkpoints) through the inference backend."""

    def __init__(self, url, token, timeout=120.0):
        self.url = url.rstrip("/") + "/chat/completions"
        self.token = token
        self.timeout = timeout

    def __call__(self, model, messages, params, choices=None):
        import httpx

        from graders import JudgeAnswer, JudgeError

        body = {"model": model, "messages": messages, "temperature": params.get("temperature", 0.0),
                "max_completion_tokens": params.get("max_completion_tokens") or 64}
        for name in ("seed", "top_p"):
            if params.get(name) is not None:
                body[name] = params[name]
        try:
            response = httpx.post(self.url, json=body, timeout=self.timeout,
                                  headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise JudgeError(f"the studio at {self.url} could not be reached ({exc.__class__.__name__})") from None
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise JudgeError(f"judge {model}: HTTP {response.status_code}: {message}")
        answer = response.json()
        choice = answer["choices"][0]["message"]
        usage = answer.get("usage") or {}
        return JudgeAnswer(text=choice.get("content") or "", refusal=choice.get("refusal"),
                           prompt_tokens=usage.get("prompt_tokens", 0),
                           completion_tokens=usage.get("completion_tokens", 0))


def grader_names(grader):
    """The names a job's figures give each grader's score: a multi's keys and its own name, or the one name."""
    name = grader.get("name") or grader["type"]
    if grader["type"] == "multi":
        return [*grader["graders"], name]
    return [name]


class Grading:
    def __init__(self, spec, reporter, judge=None):
        from graders import GraderError, SandboxLimits, validate_grader

        try:
            self.grader = validate_grader(spec.grader, context="rft")
        except GraderError as exc:
            raise EngineError("invalid_grader", f"The grader is not valid: {exc} (param {exc.param}).") from None
        self.name = self.grader.get("name") or self.grader["type"]
        self.names = grader_names(self.grader)
        self.limits = SandboxLimits(**spec.python_grader_limits) if spec.python_grader_limits else None
        token = os.environ.get("ATTUNE_JUDGE_TOKEN", "")
        self.judge = judge or (StudioJudge(spec.judge_url, token) if spec.judge_url else None)
        self.schema = (spec.response_format or {}).get("json_schema", {}).get("schema")
        self.reporter = reporter
        self.warned = {}  # message → the step it was last said at
        self.step = 0

    def grade(self, texts, items):
        """[GradeResult] for each answer text with its item (a dict)."""
        from graders import grade_items

        results = [None] * len(texts)
        graded = []
        for index, text in enumerate(texts):
            problem = self._format_problem(text)
            if problem:
                results[index] = _parse_failure(problem)
            else:
                graded.append(index)
        if graded:
            pairs = [(texts[i], items[i]) for i in graded]
            for index, result in zip(graded, grade_items(self.grader, pairs, judge=self.judge, limits=self.limits),
                                     strict=True):
                results[index] = result
        self._warn_failures(results)
        return results

    def _format_problem(self, text):
        if self.schema is None:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return "the answer is not JSON, which the job's response_format asks for"
        import jsonschema

        try:
            jsonschema.validate(value, self.schema)
        except jsonschema.ValidationError as exc:
            return f"the answer does not match the response_format schema: {exc.message}"
        except jsonschema.SchemaError as exc:
            raise EngineError("invalid_spec", f"response_format's schema is not a valid JSON Schema: "
                                              f"{exc.message}.") from None
        return None

    def _warn_failures(self, results):
        failures = {}
        for result in results:
            flag = result.error
            if flag and flag not in PARSE_FLAGS:
                failures.setdefault(flag, [0, result.messages[0] if result.messages else flag])[0] += 1
        for flag, (count, message) in failures.items():
            key = (flag, message[:200])
            last = self.warned.get(key)
            if last is not None and self.step - last < WARN_EVERY:
                continue
            self.warned[key] = self.step
            self.reporter.message(
                f"Grader '{self.name}' could not score {count} of {len(results)} answers at step {self.step} "
                f"({flag}): {message[:300]}. They get reward 0 and count in the grader error rate.", level="warn")

    def figures(self, results):
        """{"reward", "grader_scores", "parse_error_rate", "grader_error_rate", "errors"} of a batch."""
        from graders import ERROR_FLAGS

        n = len(results)
        if not n:
            return {"reward": None, "grader_scores": {}, "parse_error_rate": None, "grader_error_rate": None,
                    "errors": {}}
        scores = {name: 0.0 for name in self.names}
        for result in results:
            if self.grader["type"] == "multi":
                for key in self.grader["graders"]:
                    scores[key] += result.sub_rewards.get(key, 0.0)
            scores[self.name] += result.reward
        errors = {flag: sum(bool(r.errors.get(flag)) for r in results) / n for flag in ERROR_FLAGS}
        parse = sum(any(r.errors.get(flag) for flag in PARSE_FLAGS) for r in results) / n
        failed = sum(bool(r.error) and not any(r.errors.get(flag) for flag in PARSE_FLAGS) for r in results) / n
        return {"reward": scores[self.name] / n, "grader_scores": {k: v / n for k, v in scores.items()},
                "parse_error_rate": parse, "grader_error_rate": failed,
                "errors": {flag: share for flag, share in errors.items() if share}}


def _parse_failure(message):
    from graders import GradeResult
    from graders.run import no_errors

    errors = no_errors()
    errors["sample_parse_error"] = True
    return GradeResult(reward=0.0, sub_rewards={}, passed=None,
                       metadata={"name": "", "type": "", "errors": errors, "execution_time": 0.0, "scores": {},
                                 "token_usage": None, "sampled_model_name": None},
                       token_usage_per_model={}, messages=[message])


def completion_text(completion):
    """The text of one TRL completion (a list of messages for conversational prompts, or a string)."""
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


class GraderReward:
    """The reward function TRL calls: the grader's reward for each completion, its figures logged."""

    def __init__(self, grading):
        self.grading = grading
        self.__name__ = grading.name

    def __call__(self, prompts, completions, completion_ids=None, item=None, log_metric=None, trainer_state=None,
                 **_):
        if trainer_state is not None:
            self.grading.step = trainer_state.global_step + 1
        texts = [completion_text(c) for c in completions]
        items = [json.loads(text) for text in item]
        results = self.grading.grade(texts, items)
        if log_metric is not None:
            from graders import ERROR_FLAGS

            figures = self.grading.figures(results)
            for name, value in figures["grader_scores"].items():
                log_metric(f"{PREFIX}grader/{name}", value)
            log_metric(f"{PREFIX}parse_error_rate", figures["parse_error_rate"])
            log_metric(f"{PREFIX}grader_error_rate", figures["grader_error_rate"])
            for flag in ERROR_FLAGS:
                log_metric(f"{PREFIX}error/{flag}", figures["errors"].get(flag, 0.0))
        return [result.reward for result in results]


def train_figures(logs):
    """The metrics line's reinforcement figures from TRL's logs of one logging step."""
    grader_scores = {key[len(PREFIX) + 7:]: value for key, value in logs.items()
                     if key.startswith(PREFIX + "grader/") and value is not None}
    errors = {key[len(PREFIX) + 6:]: value for key, value in logs.items()
              if key.startswith(PREFIX + "error/") and value}
    line = {
        "train_mean_reward": logs.get("reward"),
        "train_reward_std": logs.get("reward_std"),
        "frac_reward_zero_std": logs.get("frac_reward_zero_std"),
        "completion_tokens_mean": logs.get("completions/mean_length"),
        "completion_clipped_ratio": logs.get("completions/clipped_ratio"),
        "train_parse_error_rate": logs.get(PREFIX + "parse_error_rate"),
        "train_grader_error_rate": logs.get(PREFIX + "grader_error_rate"),
        "train_grader_scores": grader_scores,
        "train_errors": errors,
    }
    if logs.get("kl") is not None:
        line["train_kl"] = logs["kl"]
    return line


def validation_figures(job, rows, scope):
    """A validation scope's line figures: greedy answers to `rows`, graded."""
    import torch

    model, tokenizer = job.trainer.model, job.tokenizer
    was_training = model.training
    model.eval()
    texts, lengths = [], []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        with torch.no_grad():
            for begin in range(0, len(rows), job.generation_batch):
                batch = rows[begin : begin + job.generation_batch]
                prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True,
                                                         **job.chat_template_kwargs) for r in batch]
                encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
                encoded = encoded.to(job.torch_device)
                output = model.generate(**encoded, max_new_tokens=job.spec.max_completion_length, do_sample=False,
                                        use_cache=True, pad_token_id=tokenizer.pad_token_id,
                                        eos_token_id=tokenizer.eos_token_id)
                for ids in output[:, encoded["input_ids"].shape[1]:]:
                    ids = ids.tolist()
                    ended = [i for i, token in enumerate(ids) if token in (tokenizer.eos_token_id,
                                                                          tokenizer.pad_token_id)]
                    length = ended[0] + 1 if ended else len(ids)
                    lengths.append(length)
                    texts.append(tokenizer.decode(ids[:length], skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    results = job.grading.grade(texts, [json.loads(r["item"]) for r in rows])
    figures = job.grading.figures(results)
    prefix = "valid" if scope == "sampled" else "full_valid"
    mean_length = sum(lengths) / len(lengths) if lengths else None
    reward_name = "valid_reward_mean" if scope == "sampled" else "full_valid_mean_reward"
    parse_name = "valid_parse_error_rate" if scope == "sampled" else "full_valid_mean_parse_error"
    return {reward_name: figures["reward"], f"{prefix}_grader_scores": figures["grader_scores"],
            parse_name: figures["parse_error_rate"], f"{prefix}_grader_error_rate": figures["grader_error_rate"],
            f"{prefix}_completion_tokens_mean": mean_length}


def uses_vllm(device):
    """Generation in vLLM, colocated with training, where TRL supports it: a GPU with vLLM installed."""
    if device != "cuda":
        return False
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def grpo_arguments(job, common):
    """GRPOConfig keyword arguments from the spec, on top of the Trainer arguments all methods share."""
    spec = job.spec
    arguments = dict(common)
    arguments.pop("max_length", None)
    arguments.update(
        num_generations=spec.num_generations,
        max_completion_length=spec.max_completion_length,
        temperature=spec.temperature,
        loss_type=spec.loss_type,
        beta=spec.beta,
        chat_template_kwargs=job.chat_template_kwargs or None,
        log_completions=False,
        # The batch holds batch_size completions: num_generations per prompt.
        per_device_eval_batch_size=arguments["per_device_train_batch_size"],
    )
    if uses_vllm(job.device):
        arguments.update(use_vllm=True, vllm_mode="colocate")
    return arguments


def reasoning_effort_kwargs(tokenizer, effort):
    """(chat template kwargs, a sentence for the job's events or None) for the spec's reasoning_effort."""
    template = tokenizer.chat_template or ""
    if effort in (None, "default"):
        return {}, None
    if "reasoning_effort" in template:
        return {"reasoning_effort": effort}, f"reasoning_effort {effort!r} is passed to the chat template."
    return {}, (f"reasoning_effort {effort!r} means nothing for this model: its chat template has no reasoning "
                "setting, so the answers are sampled as with the default.")
