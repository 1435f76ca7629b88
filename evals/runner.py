"""Running evals: the queue, generation in shared batches, grading, the results.

`EvalWorker` (a thread of `manage.py serve`, or `manage.py evalworker`) claims queued runs with
`EvalRun.claim_next`: the oldest run and the runs that share its data source and base model, up to
EVAL_BATCH_SNAPSHOTS. Their snapshots are generated together: one backend request of N snapshots
per prompt, which the built-in backend decodes as one batch of LoRA adapters and vLLM as concurrent
requests. EVAL_WORKER_SLOTS runs (groups) at a time, the way the training worker has slots, so evals
queue behind each other; the engine of a job runs in its own process and never waits for an eval.
Where the engine and the inference backend would share CPU cores (no GPU, a job running in this
process's worker), eval generation waits for the job: measured on 2 cores, generating beside it made
its steps 10× slower (9 against 100 tokens/s). EVAL_WHILE_TRAINING: auto | wait | run.

Items are generated and graded in chunks of EVAL_CHUNK_ITEMS. Each chunk's output items are stored
as it ends, with the run's progress and heartbeat, and the run's status is read again, so a cancel
stops a run within one chunk. A run whose worker died (heartbeat older than EVAL_STALE_SECONDS) is
queued again, and resumes after its stored items.
"""

import asyncio
import logging
import os
import socket
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from evals.models import EvalRun, OutputItem
from evals.requests import EvalError, input_messages, load_rows

log = logging.getLogger(__name__)


def worker_name():
    return f"{socket.gethostname()}:{os.getpid()}:evals"


def requeue_stale(now=None):
    """Queue again the runs whose worker stopped beating; their stored items are kept."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.EVAL_STALE_SECONDS)
    return EvalRun.objects.filter(status=EvalRun.IN_PROGRESS, heartbeat_at__lt=stale).update(
        status=EvalRun.QUEUED, worker="")


def _snapshot(run):
    from playground.snapshots import resolve_snapshot, snapshot_for_checkpoint

    if run.checkpoint_id is not None:
        return snapshot_for_checkpoint(run.checkpoint)
    return resolve_snapshot(run.model)


def _sample_text(sample):
    """The output text of a pre-generated sample (`output_text`, or the first choice's message)."""
    if not sample:
        return ""
    if isinstance(sample.get("output_text"), str):
        return sample["output_text"]
    choices = sample.get("choices") or sample.get("output") or []
    if choices and isinstance(choices[0], dict):
        message = choices[0].get("message", choices[0])
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return message["content"]
    return ""


class _Usage:
    def __init__(self):
        self.by_model = {}

    def add(self, model, prompt_tokens, completion_tokens, invocations=1):
        row = self.by_model.setdefault(model, {"model_name": model, "invocation_count": 0, "prompt_tokens": 0,
                                               "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0})
        row["invocation_count"] += invocations
        row["prompt_tokens"] += prompt_tokens
        row["completion_tokens"] += completion_tokens
        row["total_tokens"] += prompt_tokens + completion_tokens

    def seeded(self, stored):
        """With what a run stored before (a resumed run keeps counting)."""
        for row in stored or []:
            self.add(row["model_name"], row.get("prompt_tokens", 0), row.get("completion_tokens", 0),
                     row.get("invocation_count", 0))
        return self

    def rows(self):
        return [dict(row) for row in self.by_model.values()]


_gpu = None


def training_shares_the_cores():
    """Whether eval generation should wait: EVAL_WHILE_TRAINING `wait` (while this process's worker runs a
    job), `run` (never), `auto` (wait when there is no GPU, so the engine and the inference backend would
    share the CPU cores: generating beside a job made its steps 10× slower on 2 cores)."""
    global _gpu
    mode = settings.EVAL_WHILE_TRAINING
    if mode == "run":
        return False
    if mode == "auto":
        if _gpu is None:
            from playground.inference.base import local_device

            _gpu = local_device() == "cuda"
        if _gpu:
            return False
    from training.worker import training_here

    return training_here()


def _wait_for_the_cores(runs):
    """Hold a claimed group between chunks while a job trains on the same cores (the runs stay in_progress,
    their heartbeat goes on)."""
    waited = False
    while training_shares_the_cores() and _still_running(runs):
        if not waited:
            log.info("Eval runs %s wait for the training job on this host", [r.public_id for r in runs])
            waited = True
        time.sleep(2.0)


def python_limits():
    """The python graders' sandbox limits, from settings."""
    from graders import SandboxLimits

    return SandboxLimits(cpu_seconds=settings.PYTHON_GRADER_CPU_SECONDS,
                         memory_mb=settings.PYTHON_GRADER_MEMORY_MB,
                         wall_seconds=settings.PYTHON_GRADER_WALL_SECONDS)


def execute(runs, chunk_items=None):
    """Generate and grade a group of claimed runs (one eval, one data source) to their end."""
    from evals.judges import StudioJudge
    from graders import grade_items

    chunk_items = chunk_items or settings.EVAL_CHUNK_ITEMS
    eval_obj = runs[0].eval
    data_source = runs[0].data_source
    try:
        rows = load_rows(data_source)
        completions = data_source["type"] == "completions"
        snapshots = [_snapshot(run) for run in runs] if completions else [None] * len(runs)
        params = None
        if completions:
            from playground.inference import SamplingParams

            sampling = data_source["sampling_params"]
            params = SamplingParams.from_dict({"max_tokens": sampling["max_completion_tokens"],
                                               "temperature": sampling["temperature"], "top_p": sampling["top_p"],
                                               "seed": sampling["seed"]})
    except Exception as exc:  # noqa: BLE001 - the run says why it could not start
        message = exc.message if isinstance(exc, EvalError) else f"{type(exc).__name__}: {exc}"
        for run in runs:
            run.fail(message)
        finish_hooks(runs)
        return
    EvalRun.objects.filter(pk__in=[r.pk for r in runs]).update(n_items=len(rows))
    done = {run.pk: set(run.items.values_list("index", flat=True)) for run in runs}
    usage = {run.pk: _Usage().seeded(run.per_model_usage) for run in runs}
    judge = StudioJudge()
    criteria = eval_obj.testing_criteria
    live = list(runs)
    for start in range(0, len(rows), chunk_items):
        _wait_for_the_cores(live)
        live = _still_running(live)
        if not live:
            break
        indexes = range(start, min(start + chunk_items, len(rows)))
        pending = [(run, i) for run in live for i in indexes if i not in done[run.pk]]
        if not pending:
            continue
        samples = _generate(live, snapshots, runs, rows, indexes, data_source, params, done, usage)
        pairs = [(samples[(run.pk, i)]["output_text"], rows[i][0]) for run, i in pending]
        graded = {}
        for criterion in criteria:
            try:
                results = grade_items(criterion, pairs, judge=judge, limits=python_limits())
            except Exception as exc:  # noqa: BLE001 - a grader that breaks errors its items, the run goes on
                log.exception("Grader %s failed on run %s", criterion.get("name"), live[0].public_id)
                results = [exc] * len(pairs)
            graded[criterion["name"]] = results
        items = []
        for n, (run, i) in enumerate(pending):
            sample = samples[(run.pk, i)]
            results, status = [], OutputItem.PASS
            for criterion in criteria:
                result = graded[criterion["name"]][n]
                entry = _result_entry(criterion, result)
                if not isinstance(result, Exception):
                    for model, tokens in (result.token_usage_per_model or {}).items():
                        usage[run.pk].add(model, tokens.get("prompt_tokens", 0), tokens.get("completion_tokens", 0))
                results.append(entry)
                if entry.get("error"):
                    status = OutputItem.ERROR
                elif not entry["passed"] and status == OutputItem.PASS:
                    status = OutputItem.FAIL
            if sample.get("error"):
                status = OutputItem.ERROR
            item, _sample = rows[i]
            items.append(OutputItem(run=run, index=i, datasource_item=item, status=status, results=results,
                                    sample=sample))
        with transaction.atomic():
            OutputItem.objects.bulk_create(items, ignore_conflicts=True)
            now = timezone.now()
            for run in live:
                EvalRun.objects.filter(pk=run.pk).update(n_done=run.items.count(), heartbeat_at=now,
                                                         per_model_usage=usage[run.pk].rows())
        for run, i in pending:
            done[run.pk].add(i)
    for run in runs:
        _store_results(run, usage[run.pk])
    finish_hooks(runs)


def _still_running(runs):
    statuses = dict(EvalRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", "status"))
    return [run for run in runs if statuses.get(run.pk) == EvalRun.IN_PROGRESS]


def _generate(live, snapshots, runs, rows, indexes, data_source, params, done, usage):
    """{(run pk, index): sample} for the chunk: one backend request of all live snapshots per prompt."""
    samples = {}
    if data_source["type"] == "jsonl":
        for run in live:
            for i in indexes:
                sample = rows[i][1] or {}
                samples[(run.pk, i)] = {**sample, "output_text": _sample_text(sample), "model": run.model,
                                        "input": [], "output": [{"role": "assistant",
                                                                 "content": _sample_text(sample)}],
                                        "error": None, "usage": {}}
        return samples
    from playground.inference import get_backend

    backend = get_backend()
    position = {run.pk: runs.index(run) for run in live}
    sampling = data_source["sampling_params"]
    requests = []
    for i in indexes:
        wanted = [run for run in live if i not in done[run.pk]]
        if not wanted:
            continue
        try:
            messages = input_messages(data_source, rows[i][0])
        except EvalError as exc:
            for run in wanted:
                samples[(run.pk, i)] = _sample(run, [], None, sampling, error=exc.message)
            continue
        # The backends read developer turns as system ones (validate_messages).
        requests.append((i, wanted, messages, [snapshots[position[run.pk]] for run in wanted]))
    answered = asyncio.run(_ask_all(backend, requests, params))
    for (i, wanted, messages, _targets), (finals, error) in zip(requests, answered, strict=True):
        for run, final in zip(wanted, finals, strict=True):
            samples[(run.pk, i)] = _sample(run, messages, final, sampling, error=error)
            if final is not None and final.type == "done":
                usage[run.pk].add(run.model, final.n_prompt_tokens, final.n_tokens)
    return samples


async def _ask_all(backend, requests, params):
    """[(finals, error)] per request: one backend request per prompt (all its snapshots), up to
    EVAL_CONCURRENT_PROMPTS at once (vLLM batches concurrent requests; the built-in backend takes them in
    turn, each prompt's snapshots in one batch)."""
    from playground.inference import collect

    limit = asyncio.Semaphore(max(1, settings.EVAL_CONCURRENT_PROMPTS))

    async def ask(chat, targets):
        async with limit:
            try:
                return await collect(backend.generate(targets, chat, params), len(targets)), None
            except Exception as exc:  # noqa: BLE001 - the items error, the run goes on
                return [None] * len(targets), getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"

    return await asyncio.gather(*(ask(messages, targets) for _i, _wanted, messages, targets in requests))


def _sample(run, messages, final, sampling, error=None):
    ok = final is not None and final.type == "done"
    text = final.text if ok else ""
    if final is not None and final.type == "error":
        error = final.error
    return {
        "input": messages, "output": [{"role": "assistant", "content": text}], "output_text": text,
        "model": run.model, "finish_reason": ("length" if final.finish_reason == "length" else "stop") if ok else "",
        "usage": {"prompt_tokens": final.n_prompt_tokens if ok else 0, "completion_tokens": final.n_tokens if ok else 0,
                  "total_tokens": (final.n_prompt_tokens + final.n_tokens) if ok else 0, "cached_tokens": 0},
        "error": None if ok else {"code": "generation_failed", "message": error or "no output"},
        "temperature": sampling["temperature"], "top_p": sampling["top_p"], "seed": sampling["seed"],
        "max_completion_tokens": sampling["max_completion_tokens"],
    }


def _result_entry(criterion, result):
    from graders import grader_passed

    name, kind = criterion["name"], criterion["type"]
    if isinstance(result, Exception):
        return {"name": name, "type": kind, "score": 0.0, "passed": False, "sample": None,
                "error": f"{type(result).__name__}: {result}"}
    errors = {k: v for k, v in (result.metadata.get("errors") or {}).items() if v}
    entry = {"name": name, "type": kind, "score": float(result.reward),
             "passed": bool(grader_passed(criterion, result.reward)) and not errors,
             "sample": None, "sub_rewards": result.sub_rewards}
    if errors:
        entry["error"] = ", ".join(sorted(k for k, v in errors.items() if v is True)) or "grader_error"
        entry["error_details"] = {k: v for k, v in errors.items() if v is not True}
    return entry


def _store_results(run, usage):
    """result_counts, per-criterion counts and usage of a run from its stored items; completed unless it
    was canceled meanwhile."""
    counts = {"total": 0, "passed": 0, "failed": 0, "errored": 0}
    per = {name: {"testing_criteria": name, "passed": 0, "failed": 0} for name in run.eval.criteria_names}
    for item in run.items.all():
        counts["total"] += 1
        counts[{"pass": "passed", "fail": "failed"}.get(item.status, "errored")] += 1
        for result in item.results:
            row = per.get(result.get("name"))
            if row is not None:
                row["passed" if result.get("passed") else "failed"] += 1
    summary = {row["name"]: row for row in run.summary()}
    for name, row in per.items():
        stats = summary.get(name) or {}
        row.update({"mean_score": stats.get("mean"), "mean_score_ci95": [stats.get("mean_low"), stats.get("mean_high")],
                    "pass_rate": stats.get("pass_rate"), "pass_rate_ci95": [stats.get("pass_low"),
                                                                            stats.get("pass_high")]})
    EvalRun.objects.filter(pk=run.pk).update(
        result_counts=counts, per_testing_criteria_results=list(per.values()), per_model_usage=usage.rows(),
        n_done=counts["total"])
    EvalRun.objects.filter(pk=run.pk, status=EvalRun.IN_PROGRESS).update(status=EvalRun.COMPLETED,
                                                                         finished_at=timezone.now())


def finish_hooks(runs):
    """What follows a run's end: a job's epoch run writes its scores into the checkpoint."""
    from evals.epochs import on_run_ended

    for run in runs:
        run.refresh_from_db()
        if run.checkpoint_id is not None:
            try:
                on_run_ended(run)
            except Exception:  # noqa: BLE001 - the run's own results are stored
                log.exception("Storing the scores of run %s on its checkpoint failed", run.public_id)


class EvalWorker:
    """Claims and runs eval runs until stopped: `slots` groups at a time, each in its own thread."""

    def __init__(self, slots=1, poll_seconds=1.0, name=None):
        self.slots = slots
        self.poll_seconds = poll_seconds
        self.name = name or worker_name()
        self.stopping = threading.Event()
        self.threads = []

    def poll_once(self):
        """Claim and run one group; True if there was one."""
        requeue_stale()
        if training_shares_the_cores():
            return False  # the queued runs wait for the cores; see EVAL_WHILE_TRAINING
        runs = EvalRun.claim_next(self.name, max_runs=settings.EVAL_BATCH_SNAPSHOTS)
        if not runs:
            return False
        ended = threading.Event()
        beat = threading.Thread(target=self._beat, args=([r.pk for r in runs], ended), daemon=True)
        beat.start()
        try:
            execute(runs)
        except Exception as exc:  # noqa: BLE001 - the run says what went wrong
            log.exception("Eval runs %s failed", [r.public_id for r in runs])
            for run in runs:
                run.fail(f"{type(exc).__name__}: {exc}", code="server_error")
            finish_hooks(runs)
        finally:
            ended.set()
            beat.join()
        return True

    def _beat(self, pks, ended):
        # A long generation (a slow first model load) must not read as a dead worker.
        beat = False
        while not ended.wait(min(10.0, settings.EVAL_STALE_SECONDS / 3)):
            try:
                EvalRun.objects.filter(pk__in=pks, status=EvalRun.IN_PROGRESS).update(heartbeat_at=timezone.now())
            except DatabaseError:  # a busy database: the next beat comes well before the run looks stale
                log.warning("An eval heartbeat could not be stored", exc_info=True)
            beat = True
        if beat:
            close_old_connections()

    def _loop(self):
        while not self.stopping.is_set():
            try:
                busy = self.poll_once()
            except Exception:  # noqa: BLE001 - keep serving the queue
                log.exception("The eval worker's poll failed")
                busy = False
            finally:
                close_old_connections()
            if not busy:
                self.stopping.wait(self.poll_seconds)

    def start(self):
        for n in range(self.slots):
            thread = threading.Thread(target=self._loop, name=f"eval-worker-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self, timeout=30.0):
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


_inprocess = None


def start_inprocess_eval_worker(slots=None):
    global _inprocess
    if _inprocess is None:
        _inprocess = EvalWorker(slots=slots or settings.EVAL_WORKER_SLOTS).start()
    return _inprocess


def stop_inprocess_eval_worker():
    global _inprocess
    worker, _inprocess = _inprocess, None
    if worker is not None:
        worker.stop()
