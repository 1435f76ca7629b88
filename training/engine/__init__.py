"""Attune's training engine: `python -m training.engine SPEC.json [--resume]`.

Knows nothing of Django. The worker starts it as a child process (under
`torchrun --nproc_per_node N` when the spec asks for N > 1 GPUs, one torchrun
per node at a c10d rendezvous when it asks for n_nodes > 1), reads its
stdout, and stores each line. Importing this package imports nothing heavy:
the Django side imports `training.engine.spec` for the form and the API.

Features
- Supervised fine-tuning on OpenAI's chat JSONL with the loss on
  assistant tokens only; `"weight": 0` assistant messages stay in context
  but are not trained on (data.py). Examples longer than `max_seq_length`
  are truncated from the end, with a `message` line (level warn) saying how
  many; a `max_seq_length` beyond the model's context is an error.
- Packing (`packing: true`): TRL best-fit-decreasing packing, padding-free,
  with per-example position_ids so examples never attend to each other.
- DPO on OpenAI's preference JSONL (`*_output` or `*_completion` names), TRL's
  DPOTrainer; with LoRA the reference is the base model (adapter disabled).
- Reinforcement fine-tuning (rft.py): TRL's GRPOTrainer on lines whose
  `messages` end in a user turn, with the spec's `grader` (the `graders`
  package, the code evals use) as the reward function. Python graders run in
  their sandbox with `python_grader_limits`; score_model / label_model
  judges are asked through the studio's /v1/chat/completions at `judge_url`
  with the token in ATTUNE_JUDGE_TOKEN. A sample the grader cannot score
  (an error flag) gets reward 0 and is counted in the error rates, never
  fails the job. Validation answers are greedy, one per prompt.
- LoRA (PEFT) or full fine-tuning; transformers Trainer / TRL trainers
  throughout, no hand-written loop. fp32 and no gradient checkpointing on
  CPU; bf16 on a GPU that supports it.
- A checkpoint at every epoch end (layout in checkpoints.py), resumable;
  SIGUSR1 pauses, SIGTERM cancels (below).
- W&B, MLflow and TensorBoard fed with the same metric names (integrations.py).
- Several processes, on one node or several (n_gpus × n_nodes): batch_size is
  the global batch, split evenly across them; global rank 0 alone prints and
  writes checkpoints. `distributed: fsdp` shards the model with Trainer's
  FSDP2 settings and saves one full state dict, so a checkpoint is the same
  folder as under DDP.

Not supported: images/audio, tools in reinforcement lines, DeepSpeed, FSDP on
a host without a GPU (refused: accelerate would run it as plain DDP), early
stopping, resuming with a different n_gpus or n_nodes exactly (it resumes,
but the data order differs).

Protocol: stdout holds exactly one JSON object per line and nothing else
(libraries' output goes to stderr). Every line has "type" and "ts" (unix
seconds, float). Under several processes only rank 0 prints. Lines are keyed
for idempotent storage: metrics by step, eval by (scope, step), checkpoint
by epoch; a resumed run that re-emits a step emits the same key.

    {"type": "started", "total_steps", "n_epochs", "steps_per_epoch",
     "resolved": {"n_epochs", "batch_size", "learning_rate_multiplier", "learning_rate", ["beta"]},
     "trainable_params", "total_params", "n_train_examples", "device": "cpu"|"cuda",
     "world_size", "resumed_from": path|null}
    {"type": "metrics", "step", "total_steps", "epoch" (float), "train_loss", "train_mean_token_accuracy",
     "learning_rate", "tokens_per_second", ["train_reward_margin", "train_reward_accuracy" (DPO)]}
    {"type": "eval", "scope": "sampled", "step", "epoch" (float), "valid_loss", "valid_mean_token_accuracy",
     ["valid_reward_margin", "valid_reward_accuracy" (DPO)]}
    {"type": "eval", "scope": "full", "step", "epoch" (int), "full_valid_loss", "full_valid_mean_token_accuracy",
     ["full_valid_reward_margin", "full_valid_reward_accuracy" (DPO)]}
    {"type": "checkpoint", "epoch" (int), "step", "path", "bytes",
     "metrics": {"step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
                 "full_valid_loss", "full_valid_mean_token_accuracy"}}
    Reinforcement jobs report rewards in place of token accuracy (train_loss stays: GRPO's loss):
    {"type": "metrics", "step", "total_steps", "epoch", "train_loss", "learning_rate", "tokens_per_second",
     "train_mean_reward", "train_reward_std", "frac_reward_zero_std", "completion_tokens_mean",
     "completion_clipped_ratio", "train_parse_error_rate", "train_grader_error_rate", ["train_kl" (beta > 0)],
     "train_grader_scores": {name: mean}, "train_errors": {error flag: share of samples}}
    {"type": "eval", "scope": "sampled", "step", "epoch", "valid_reward_mean", "valid_grader_scores",
     "valid_parse_error_rate", "valid_grader_error_rate", "valid_completion_tokens_mean"}
    {"type": "eval", "scope": "full", "step", "epoch", "full_valid_mean_reward", "full_valid_grader_scores",
     "full_valid_mean_parse_error", "full_valid_grader_error_rate", "full_valid_completion_tokens_mean"}
    {"type": "checkpoint", …, "metrics": {"step", "train_loss", "train_mean_reward", "valid_reward_mean",
     "full_valid_mean_reward", "full_valid_mean_parse_error", "frac_reward_zero_std", "completion_tokens_mean",
     "full_valid_grader_scores"}}
    `*_grader_scores` are the mean score of each grader by name: a multi's sub-graders by their keys, and
    the multi itself under its name; a single grader under its name. Rates are shares of the samples
    (0–1): parse errors are answers that are not the JSON the grader or response_format needs
    (sample_parse_error, invalid_variable_error); grader errors every other flag (a python grader that
    raised, a judge that failed). `frac_reward_zero_std` is the share of prompts whose completions all
    got the same reward (they teach nothing).
    {"type": "message", "level": "info"|"warn"|"error", "text"}
    {"type": "paused", "step"}
    {"type": "done", "trained_tokens", "final_checkpoint": path}
    {"type": "error", "code", "message"}

A value that cannot be computed (no validation file, a diverged loss) is
null. `train_*` figures are Trainer's averages since the previous logging
step; `tokens_per_second` counts the tokens of those steps (padding excluded)
over the time spent in them. `valid_*` come from a fixed sample of
`eval_samples` validation examples every `eval_interval` steps; `full_valid_*`
from the whole validation file at every epoch end, token-weighted over the
trained (assistant) tokens. For DPO, the valid losses are the DPO loss.

Signals and exit status
- SIGUSR1: pause. At the end of the current step the state is saved to
  `<output_dir>/pause-state/`, `paused` is printed, exit 0. `--resume`
  continues from it (or from the latest epoch checkpoint if that is newer).
- SIGTERM: cancel. Stops at once (no state saved), prints a `message`, exit
  143. The worker kills the process group after its grace period.
- An `error` line, exit 1. Codes a person can act on: invalid_spec,
  file_not_found, invalid_file, model_not_found, no_chat_template,
  sequence_too_long, out_of_memory, disk_full; anything else is
  internal_error (with the traceback on stderr).
"""
