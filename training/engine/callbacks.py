"""The Trainer callback that turns training events into protocol lines.

- on_train_begin: the `started` line.
- on_log: a `metrics` line per logging step (loss, token accuracy, learning
  rate, tokens/s measured over the step time only, so evaluation and
  checkpoint writing do not count against throughput).
- on_step_end: honours a pause request (SIGUSR1) at the step boundary, and
  runs the sampled evaluation every `eval_interval` steps.
- on_epoch_end: at a real epoch end (not a stop mid-epoch), the full
  evaluation, then asks Trainer to save.
- on_save: finishes Trainer's folder into an epoch checkpoint or the pause
  state, writes the `checkpoint` / `paused` line, prunes old resume state.

Under several processes every rank runs the callback (evaluation and saving
are collective); only rank 0 prints and touches the folders.
"""

import time

import torch
from transformers import TrainerCallback

from . import checkpoints

CHECKPOINT_METRICS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss",
                      "valid_mean_token_accuracy", "full_valid_loss", "full_valid_mean_token_accuracy")
# A DPO checkpoint also carries the implicit rewards' margin and how often the preferred answer wins.
DPO_CHECKPOINT_METRICS = tuple(f"{prefix}_reward_{figure}" for prefix in ("train", "valid", "full_valid")
                               for figure in ("margin", "accuracy"))
# A reinforcement checkpoint carries the grader's rewards in place of token accuracy.
RFT_CHECKPOINT_METRICS = ("step", "train_loss", "train_mean_reward", "valid_reward_mean", "full_valid_mean_reward",
                          "full_valid_mean_parse_error", "frac_reward_zero_std", "completion_tokens_mean",
                          "full_valid_grader_scores")


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


class ProgressCallback(TrainerCallback):
    def __init__(self, job):
        self.job = job
        self.pause_requested = False  # set by the SIGUSR1 handler
        self.pausing = False
        self.last = {}
        self.epoch_to_save = None
        self.tokens_at_last_log = 0
        self.step_seconds = 0.0
        self.step_started = None
        self.steps_per_epoch = None

    # --- lifecycle ---------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        job = self.job
        self.steps_per_epoch = max(1, state.max_steps // job.spec.n_epochs)
        job.reporter.emit(
            "started", total_steps=state.max_steps, n_epochs=job.spec.n_epochs,
            steps_per_epoch=self.steps_per_epoch, resolved=job.resolved, trainable_params=job.trainable_params,
            total_params=job.total_params, n_train_examples=job.n_train_examples, device=job.device,
            world_size=job.world_size, resumed_from=job.resumed_from,
        )

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_started is not None:
            self.step_seconds += time.perf_counter() - self.step_started
        # A pause asked for on an epoch's last step waits for the next step: pausing here would skip that
        # epoch's evaluation and checkpoint (on_epoch_end does nothing while pausing), and resume would not
        # come back to them. Every rank sees the same step, so all skip the agreement together.
        at_epoch_end = state.global_step % self.steps_per_epoch == 0
        if not at_epoch_end and self._agree(self.pause_requested):
            self.pausing = True
            control.should_save = True
            control.should_training_stop = True
            return control
        if self.job.has_validation and state.global_step % self.job.spec.eval_interval == 0:
            # trainer.evaluate (DPO) logs through the callback handler, which clears should_log; keep the
            # pending training log of this step.
            should_log = control.should_log
            scored = self.job.eval_figures("sampled")
            control.should_log = should_log
            self.last.update(scored)
            self.job.reporter.emit("eval", scope="sampled", step=state.global_step, epoch=self._epoch(state),
                                   **scored)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        tokens = logs.get("num_tokens")
        per_second = None
        if tokens is not None:
            new_tokens = max(0.0, tokens - self.tokens_at_last_log)
            self.job.trained_tokens += int(new_tokens)
            self.tokens_at_last_log = tokens
            per_second = new_tokens / self.step_seconds if self.step_seconds > 0 else None
        self.step_seconds = 0.0
        line = {
            "step": state.global_step,
            "total_steps": state.max_steps,
            "epoch": self._epoch(state),
            "train_loss": logs["loss"],
            "train_mean_token_accuracy": logs.get("mean_token_accuracy"),
            "learning_rate": logs.get("learning_rate"),
            "tokens_per_second": round(per_second, 1) if per_second is not None else None,
        }
        if self.job.spec.method == "reinforcement":
            from .rft import train_figures

            del line["train_mean_token_accuracy"]
            line.update(train_figures(logs))
            self.last.update({k: line[k] for k in ("train_mean_reward", "frac_reward_zero_std",
                                                   "completion_tokens_mean")})
        if "rewards/margins" in logs:
            line["train_reward_margin"] = logs["rewards/margins"]
            line["train_reward_accuracy"] = logs.get("rewards/accuracies")
            self.last.update(train_reward_margin=line["train_reward_margin"],
                             train_reward_accuracy=line["train_reward_accuracy"])
        self.last.update(step=state.global_step, train_loss=logs["loss"],
                         train_mean_token_accuracy=logs.get("mean_token_accuracy"))
        self.job.reporter.emit("metrics", **line)

    def on_epoch_end(self, args, state, control, **kwargs):
        # Trainer also calls this when training stops mid-epoch (a pause); that is not an epoch end.
        if self.pausing or state.global_step % self.steps_per_epoch:
            return control
        epoch = state.global_step // self.steps_per_epoch
        if self.job.has_validation:
            scored = self.job.eval_figures("full")
            self.last.update(scored)
            self.job.reporter.emit("eval", scope="full", step=state.global_step, epoch=epoch, **scored)
        self.epoch_to_save = epoch
        control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        job = self.job
        dist = _dist()
        if dist:
            dist.barrier()  # every rank has written its part (RNG state) of Trainer's folder
        written = checkpoints.trainer_dir(job.spec.output_dir) / f"checkpoint-{state.global_step}"
        names = {"dpo": CHECKPOINT_METRICS + DPO_CHECKPOINT_METRICS,
                 "reinforcement": RFT_CHECKPOINT_METRICS}.get(job.spec.method, CHECKPOINT_METRICS)
        metrics = {k: self.last.get(k) for k in names}
        metrics["step"] = state.global_step
        state_record = {"step": state.global_step, "epoch": self.epoch_to_save, "metrics": metrics,
                        "trained_tokens": job.trained_tokens, "kind": "pause" if self.pausing else "epoch"}
        if job.is_main:
            if self.pausing:
                checkpoints.finalize(written, checkpoints.pause_dir(job.spec.output_dir), job.spec_dict,
                                     state_record)
                job.reporter.emit("paused", step=state.global_step)
            else:
                final = checkpoints.checkpoints_dir(job.spec.output_dir) / checkpoints.epoch_name(
                    self.epoch_to_save, state.global_step)
                checkpoints.finalize(written, final, job.spec_dict, state_record)
                job.final_checkpoint = str(final)
                job.reporter.emit("checkpoint", epoch=self.epoch_to_save, step=state.global_step,
                                  path=str(final), bytes=checkpoints.folder_bytes(final), metrics=metrics)
                for folder in checkpoints.prune(job.spec.output_dir, job.spec.keep_last_n):
                    job.reporter.message(f"Removed the optimizer state of {folder.name} (keep_last_n).")
        if dist:
            dist.barrier()
        self.epoch_to_save = None
        return control

    # --- helpers -----------------------------------------------------------

    def _agree(self, flag):
        """True on every rank when any rank got the signal, so all stop at the same step."""
        dist = _dist()
        if not dist:
            return flag
        value = torch.tensor([1 if flag else 0], device=self.job.torch_device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    @staticmethod
    def _epoch(state):
        return round(float(state.epoch or 0.0), 4)
