"""Sweeps: several jobs from one spec, some of its numbers swept, ranked by one metric.

A sweep's definition is {mode, fields, n, seed}:

- `grid`: `fields` maps each swept field to its list of values; the jobs are every combination
  (the product of the lists), in the order the lists give.
- `random`: `fields` maps each swept field to {min, max}; `n` jobs draw a value of each field in its range,
  learning_rate_multiplier log-uniformly (its good values span orders of magnitude), the others uniformly,
  integers as integers, other numbers to 4 significant digits. The draws come from `seed` (drawn when
  none is given, and stored), so a sweep is reproducible.

Rules (each refusal is a `JobError` whose param names the place, as the API's `param`; nothing is created):

- At most `MAX_FIELDS` fields, each one of `SWEEPABLE` (derived from JobSpec: its numeric hyperparameters and
  advanced numbers, less the settings of how a job runs and reports, `RUN_SETTINGS`) that applies to the job's
  method: `sweep.fields.<name>`.
- A grid list is not empty, holds no value twice, and every value is one the spec takes for that field:
  `sweep.fields.<name>[<index>]`. A random range has numbers the spec takes at both ends (integers for an
  integer field), min ≤ max: `sweep.fields.<name>.min` / `.max`.
- At most `settings.ATTUNE_SWEEP_MAX_JOBS` jobs: a list longer than that, a grid whose lists multiply past it or
  `n` above it is refused before anything is expanded, so a request never makes more than that in memory.
- Every combination must make a valid spec: one that breaks a rule between fields (batch_size divisible by
  num_generations…) is refused naming the swept field and the combination.
- The jobs are made by `training.jobs.create_job`, all in one transaction: if it refuses one, no job and no
  sweep is stored. Each job's metadata names its sweep (`attune_sweep`) and its swept values
  (`attune_sweep_values`), so a request's metadata may hold at most 14 pairs of its own.
- A request that names no seed gets one, the same for every job (the jobs differ only in the swept values,
  unless `seed` itself is swept).

The metric that ranks the jobs is the one that marks each job's best checkpoint (`best_metric_of`: an eval's
score when the jobs run an eval, else full_valid_loss, or a reinforcement job's mean reward); `ranking` reads
each job's best checkpoint by it (lowest loss, highest score or reward). Cancelling a sweep is
`Sweep.cancel()`.

Not supported: sweeping a choice (adapter, lr_scheduler) or a nested field; Bayesian or successive-halving
searches.
"""

import itertools
import math
import random
import secrets
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from training.engine.spec import JobSpec, SpecValues, applies_to, form_fields, spec_errors
from training.jobs import MAX_METADATA_PAIRS, check_metadata, check_spec, create_job
from training.models import FineTuningJob, JobError, Sweep, best_metric_of, is_higher_better

MODES = ("grid", "random")
DEFINITION_KEYS = ("mode", "fields", "n", "seed")
MAX_FIELDS = 3
MAX_SEED = 2**31 - 1
# How a job runs and reports, not what it learns: never swept.
RUN_SETTINGS = ("gradient_accumulation_steps", "n_gpus", "n_nodes", "distributed", "logging_steps", "keep_last_n",
                "eval_interval", "eval_samples")
# Drawn log-uniformly in a random sweep.
LOG_UNIFORM = ("learning_rate_multiplier",)
SWEEP_KEY = "attune_sweep"
VALUES_KEY = "attune_sweep_values"


def _sweepable():
    """{name: "int" | "float"} of the JobSpec numbers a sweep may vary, in JobSpec's order."""
    return {meta["name"]: meta["type"] for meta in form_fields()
            if meta["type"] in ("int", "float") and meta["name"] not in RUN_SETTINGS
            and (meta["group"] in ("hyperparameters", "advanced") or meta["name"] == "seed")}


SWEEPABLE = _sweepable()


def sweepable_for(method):
    """The fields a sweep of a `method` job may vary."""
    return [name for name in SWEEPABLE if applies_to(name, method)]


def _methods_text(name):
    methods = JobSpec.model_fields[name].json_schema_extra["methods"]
    return " and ".join("DPO" if m == "dpo" else m for m in methods)


@dataclass
class Plan:
    """A checked definition (`definition`, as stored) and the swept values of each job (`combinations`)."""

    definition: dict
    combinations: list


def plan(spec, definition):
    """Check `definition` against the job spec `spec` and expand it; JobError names what is wrong (see the
    module docstring). Nothing is stored."""
    max_jobs = settings.ATTUNE_SWEEP_MAX_JOBS
    if not isinstance(definition, dict):
        raise JobError("sweep", "sweep must be an object: {mode, fields, n, seed}.", "invalid_value")
    unknown = sorted(set(definition) - set(DEFINITION_KEYS))
    if unknown:
        raise JobError(f"sweep.{unknown[0]}", f"Unrecognized sweep argument: sweep.{unknown[0]} (a sweep takes "
                                              f"{', '.join(DEFINITION_KEYS)}).", "unknown_parameter")
    mode = definition.get("mode", "grid")
    if mode not in MODES:
        raise JobError("sweep.mode", f"sweep.mode must be grid or random, not {mode!r}.", "invalid_value")
    method = spec.get("method", "supervised") if isinstance(spec, dict) else "supervised"
    fields = _check_field_names(definition.get("fields"), method)
    if mode == "grid":
        for key in ("n", "seed"):
            if definition.get(key) is not None:
                raise JobError(f"sweep.{key}", f"sweep.{key} applies to random sweeps only: a grid makes every "
                                               "combination of its lists.", "invalid_value")
        lists = {name: _check_list(spec, name, values, max_jobs) for name, values in fields.items()}
        count = math.prod(len(values) for values in lists.values())
        if count > max_jobs:
            sizes = " × ".join(str(len(values)) for values in lists.values())
            raise JobError("sweep.fields", f"This grid makes {sizes} = {count} jobs; a sweep may create at most "
                                           f"{max_jobs} (ATTUNE_SWEEP_MAX_JOBS).", "too_many_jobs")
        stored = {"mode": "grid", "fields": lists, "n": count, "seed": None}
        combinations = grid_combinations(lists)
    else:
        ranges = {name: _check_range(spec, name, bounds) for name, bounds in fields.items()}
        n = _check_count(definition.get("n"), max_jobs)
        seed = _check_seed(definition.get("seed"))
        stored = {"mode": "random", "fields": ranges, "n": n, "seed": seed}
        combinations = random_combinations(ranges, n, seed)
    for values in combinations:
        _check_combination(spec, values)
    return Plan(stored, combinations)


def _check_field_names(fields, method):
    if not isinstance(fields, dict) or not fields:
        raise JobError("sweep.fields", "sweep.fields must name at least one field to sweep: "
                                       "{name: [values]} for a grid, {name: {min, max}} for a random sweep.",
                       "invalid_value")
    if len(fields) > MAX_FIELDS:
        raise JobError("sweep.fields", f"A sweep varies at most {MAX_FIELDS} fields; this one names {len(fields)} "
                                       f"({', '.join(map(str, fields))}).", "invalid_value")
    for name in fields:
        param = f"sweep.fields.{name}"
        if name not in JobSpec.model_fields:
            raise JobError(param, f"{param}: unknown field '{name}'. Sweepable: {', '.join(sweepable_for(method))}.",
                           "unknown_parameter")
        if name not in SWEEPABLE:
            raise JobError(param, f"{param}: {name} cannot be swept. Sweepable: "
                                  f"{', '.join(sweepable_for(method))}.", "invalid_value")
        if not applies_to(name, method):
            raise JobError(param, f"{param}: {name} applies to {_methods_text(name)} jobs only, and this is a "
                                  f"{method} job.", "invalid_value")
    return fields


def _value_problem(spec, name, value):
    """What the spec says of `value` in field `name` (the rest of `spec` as it is), or None if it takes it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return "give a number"
    trial = {**spec, name: value} if isinstance(spec, dict) else {name: value}
    messages = [message for field, message in spec_errors(trial) if field == name]
    return "; ".join(messages) or None


def _check_list(spec, name, values, max_jobs):
    param = f"sweep.fields.{name}"
    if not isinstance(values, list):
        raise JobError(param, f"{param}: a grid sweep takes a list of values, e.g. [0.5, 1, 2].", "invalid_value")
    if not values:
        raise JobError(param, f"{param}: the list of values is empty; give at least one.", "invalid_value")
    if len(values) > max_jobs:
        raise JobError(param, f"{param}: {len(values)} values make more than the {max_jobs} jobs a sweep may create "
                              "(ATTUNE_SWEEP_MAX_JOBS).", "too_many_jobs")
    for index, value in enumerate(values):
        where = f"{param}[{index}]"
        problem = _value_problem(spec, name, value)
        if problem:
            raise JobError(where, f"{where}: {value!r} is refused for {name}: {problem}.", "invalid_value")
        if value in values[:index]:
            raise JobError(where, f"{where}: {value!r} is in the list twice.", "invalid_value")
    return list(values)


def _check_range(spec, name, bounds):
    param = f"sweep.fields.{name}"
    if not isinstance(bounds, dict) or set(bounds) != {"min", "max"}:
        raise JobError(param, f"{param}: a random sweep takes a range, {{\"min\": …, \"max\": …}}.", "invalid_value")
    for end in ("min", "max"):
        value, where = bounds[end], f"{param}.{end}"
        if SWEEPABLE[name] == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise JobError(where, f"{where}: {value!r} is refused for {name}: give an integer.", "invalid_value")
        if isinstance(value, str):
            raise JobError(where, f"{where}: {value!r} is refused for {name}: give a number.", "invalid_value")
        problem = _value_problem(spec, name, value)
        if problem:
            raise JobError(where, f"{where}: {value!r} is refused for {name}: {problem}.", "invalid_value")
    if bounds["min"] > bounds["max"]:
        raise JobError(param, f"{param}: min ({bounds['min']!r}) is above max ({bounds['max']!r}).", "invalid_value")
    return {"min": bounds["min"], "max": bounds["max"]}


def _check_count(n, max_jobs):
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_jobs:
        raise JobError("sweep.n", f"sweep.n, the number of random draws, must be an integer from 1 to {max_jobs} "
                                  f"(ATTUNE_SWEEP_MAX_JOBS); got {n!r}.", "invalid_value")
    return n


def _check_seed(seed):
    if seed is None:
        return secrets.randbelow(MAX_SEED + 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise JobError("sweep.seed", f"sweep.seed must be an integer from 0 to {MAX_SEED}; got {seed!r}.",
                       "invalid_value")
    return seed


def grid_combinations(lists):
    """Every combination of the lists, {field: value} each, the last field varying fastest."""
    names = list(lists)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*(lists[name] for name in names))]


def random_combinations(ranges, n, seed):
    """`n` draws of {field: value} within `ranges` from `seed`: the same arguments give the same draws."""
    rng = random.Random(seed)
    return [{name: _draw(rng, name, bounds["min"], bounds["max"]) for name, bounds in ranges.items()}
            for _ in range(n)]


def _draw(rng, name, low, high):
    if SWEEPABLE[name] == "int":
        return rng.randint(low, high)
    if name in LOG_UNIFORM:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    # Four significant digits read well on the page; rounding must not leave the range.
    return min(high, max(low, float(f"{value:.4g}")))


def _check_combination(spec, values):
    """The spec of one job of the sweep passes `check_spec`; a rule between fields that the swept values break
    names the swept field and the combination."""
    try:
        check_spec({**spec, **values} if isinstance(spec, dict) else spec)
    except JobError as exc:
        if exc.param in values:
            param = f"sweep.fields.{exc.param}"
            raise JobError(param, f"{param}: the combination {values_text(values)} is refused: {exc.message}",
                           exc.code) from None
        raise


def values_text(values):
    """`learning_rate_multiplier=0.5, n_epochs=2`: a job's swept values, as its metadata and pages show them."""
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in values.items())


def _job_metadata(metadata):
    metadata = check_metadata(metadata) or {}
    for key in (SWEEP_KEY, VALUES_KEY):
        if key in metadata:
            raise JobError(f"metadata.{key}", f"metadata.{key} is set by Attune on each job of a sweep; leave it out.",
                           "invalid_value")
    room = MAX_METADATA_PAIRS - 2
    if len(metadata) > room:
        raise JobError("metadata", f"metadata holds {len(metadata)} pairs; a sweep adds {SWEEP_KEY} and {VALUES_KEY} "
                                   f"to each job's, so give at most {room}.", "invalid_value")
    return metadata


def create_sweep(spec, definition, user, metadata=None):
    """Check the definition, then make the sweep and all its jobs in one transaction (see the module
    docstring); JobError, and nothing stored, when anything is refused."""
    if not isinstance(spec, dict):
        raise JobError(None, "The job spec must be a JSON object.", "invalid_spec")
    spec = dict(spec)
    if spec.get("seed") is None:
        spec["seed"] = secrets.randbelow(MAX_SEED + 1)
    planned = plan(spec, definition)
    metadata = _job_metadata(metadata)
    metric, _higher = best_metric_of(SpecValues(spec))
    with transaction.atomic():
        sweep = Sweep.objects.create(created_by=user if getattr(user, "is_authenticated", False) else None,
                                     spec=spec, definition=planned.definition, metric=metric)
        for values in planned.combinations:
            job = create_job({**spec, **values}, user, metadata={
                **metadata, SWEEP_KEY: sweep.public_id, VALUES_KEY: values_text(values)})
            FineTuningJob.objects.filter(pk=job.pk).update(sweep=sweep)
    return sweep


# --- reading a sweep ---------------------------------------------------------------------------------------

@dataclass
class RankedJob:
    job: FineTuningJob
    values: dict          # the swept fields' values, as the job's spec holds them
    value: float | None   # the metric at the job's best checkpoint by it; None while none has it
    checkpoint: object    # that checkpoint, or None


def swept_values(job, fields):
    return {name: (job.spec or {}).get(name) for name in fields}


def ranking(sweep, metric=None):
    """The sweep's jobs, best first by `metric` (default: the sweep's), each at its best checkpoint by that
    metric (lowest for the loss, highest for scores and rewards); jobs without a value follow in the order they
    were made."""
    metric = metric or sweep.metric
    higher = is_higher_better(metric)
    jobs = list(sweep.jobs.select_related("base_model").prefetch_related("checkpoints").order_by("created_at", "id"))
    rows = []
    for job in jobs:
        best = job.best_checkpoint(list(job.checkpoints.all()), metric=metric)
        rows.append(RankedJob(job, swept_values(job, sweep.fields), best.metric_value(metric) if best else None,
                              best))
    scored = sorted((row for row in rows if row.value is not None), key=lambda row: -row.value if higher else row.value)
    return scored + [row for row in rows if row.value is None]


def best_finished(ranked):
    """The best job that succeeded and has a value, from `ranking`'s rows; None if there is none yet."""
    return next((row for row in ranked if row.value is not None and row.job.status == FineTuningJob.SUCCEEDED),
                None)


def status_summary(jobs):
    """("active" while a job has not ended, else "ended"; {status: number of jobs})."""
    counts = Counter(job.status for job in jobs)
    active = any(status in FineTuningJob.ACTIVE for status in counts)
    return ("active" if active else "ended"), dict(counts)
