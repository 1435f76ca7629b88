"""One job, top to bottom: load spec → build model and data → train → save → report.

`main(argv, protocol_stream)` is what `python -m training.engine` runs; tests
call it in-process with a StringIO. It returns the exit status: 0 when done
or paused, 1 on an `error` line, 143 when cancelled by SIGTERM. A full disk
pauses the job (a `paused` line with `reason: disk_full` and what to do)
rather than failing it: the last complete checkpoint is intact.
"""

import argparse
import errno
import json
import os
import pathlib
import signal
import socket
import sys
import threading
import traceback

from . import checkpoints
from .report import Cancelled, EngineError, Reporter
from .spec import SpecError, parse_spec, resolve_auto


def _checkpointing_argument():
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {field.name for field in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _rank():
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def fsdp_arguments(model, device):
    """TrainingArguments for FSDP2: each decoder layer its own shard unit, saved as one full state dict (rank 0
    writes the usual model.safetensors or adapter_model.safetensors, and optimizer.bin). FSDP2 shards a PEFT
    model as it is (FSDP1's use_orig_params is not needed).

    Refused on a host without a GPU: accelerate 1.15 turns FSDP on only for a GPU-like distributed type
    (accelerate/state.py, AcceleratorState.__init__, the `elif self.distributed_type in [MULTI_GPU, …]` branch
    that sets DistributedType.FSDP); processes on CPUs are MULTI_CPU, so the FSDP settings are dropped without a
    word and the model is wrapped in plain DDP. torch's own fully_shard does run on gloo; Trainer cannot reach
    it."""
    if device == "cpu":
        raise EngineError("invalid_spec", "distributed fsdp needs GPUs: on a host without one, accelerate runs the "
                                          "processes as plain DDP over gloo and ignores the FSDP settings, so the "
                                          "model would not be sharded. Use distributed ddp on this host.")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": list(base._no_split_modules),
                                          "state_dict_type": "FULL_STATE_DICT"}}


class Job:
    def __init__(self, spec_path, reporter, resume=False):
        self.spec_path = pathlib.Path(spec_path)
        self.reporter = reporter
        self.resume = resume
        self.rank, self.world_size = _rank()
        self.is_main = self.rank == 0
        self.trained_tokens = 0
        self.final_checkpoint = None
        self.resumed_from = None
        self.callback = None

    # --- setup ---------------------------------------------------------------

    def load_spec(self):
        try:
            raw = json.loads(self.spec_path.read_text())
        except FileNotFoundError:
            raise EngineError("file_not_found", f"Spec file not found: {self.spec_path}.") from None
        except json.JSONDecodeError as exc:
            raise EngineError("invalid_spec", f"The spec is not valid JSON: {exc.msg}.") from None
        try:
            self.spec = parse_spec(raw)
        except SpecError as exc:
            raise EngineError("invalid_spec", f"Invalid spec: {exc}.") from None

    def load_tokenizer(self):
        from transformers import AutoConfig, AutoTokenizer

        name = self.spec.model
        looks_local = name.startswith(("/", ".", "~")) or os.path.exists(name) or name.count("/") != 1
        if looks_local and not (pathlib.Path(name).expanduser() / "config.json").is_file():
            raise EngineError("model_not_found",
                              f"Base model '{name}' was not found: no folder with a config.json there. "
                              "Pick a base model that exists on the training host.")
        try:
            self.model_config = AutoConfig.from_pretrained(name)
            self.tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            raise EngineError("model_not_found",
                              f"Base model '{name}' could not be loaded ({exc.__class__.__name__}). Check the "
                              "model id, or download it to the training host first.") from None
        if not self.tokenizer.chat_template:
            raise EngineError("no_chat_template",
                              f"The tokenizer of '{name}' has no chat template, so chat examples cannot be "
                              "rendered. Use an instruct/chat variant of the model, or add a chat_template to "
                              "its tokenizer_config.json.")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        context = getattr(self.model_config.get_text_config(), "max_position_embeddings", None)
        if context and self.spec.max_seq_length > context:
            raise EngineError("sequence_too_long",
                              f"max_seq_length ({self.spec.max_seq_length}) is longer than the model's context "
                              f"({context} tokens). Lower max_seq_length to {context} or less.")

    def load_data(self):
        from .data import dpo_rows, read_jsonl, sft_rows

        spec = self.spec
        train_raw = read_jsonl(spec.training_file, "training_file")
        valid_raw = read_jsonl(spec.validation_file, "validation_file") if spec.validation_file else []
        self.n_train_examples = len(train_raw)
        self.spec, self.resolved = resolve_auto(spec, len(train_raw))
        self.spec_dict = self.spec.model_dump(mode="json")
        if self.spec.method == "dpo":
            self.train_rows = dpo_rows(train_raw, "training_file")
            self.valid_rows = dpo_rows(valid_raw, "validation_file")
        elif self.spec.method == "reinforcement":
            from .rft import Grading, reasoning_effort_kwargs, rft_rows

            self.train_rows = rft_rows(train_raw, "training_file")
            self.valid_rows = rft_rows(valid_raw, "validation_file")
            self.grading = Grading(self.spec, self.reporter)
            self.chat_template_kwargs, sentence = reasoning_effort_kwargs(self.tokenizer, self.spec.reasoning_effort)
            if sentence and self.is_main:
                self.reporter.message(sentence)
        else:
            length = self.spec.max_seq_length
            self.train_rows, cut = sft_rows(self.tokenizer, train_raw, length, "training_file")
            self.valid_rows, cut_valid = sft_rows(self.tokenizer, valid_raw, length, "validation_file")
            if cut or cut_valid:
                self.reporter.message(
                    f"{cut} training and {cut_valid} validation examples are longer than max_seq_length "
                    f"({length} tokens) and were truncated from the end.", level="warn")
            if not self.train_rows:
                raise EngineError("invalid_file", "No training example has an assistant message to learn from "
                                                  "(all have weight 0 or were truncated away).")
        # The sampled evaluation uses the same fixed sample all run long, so its curve is comparable.
        self.has_validation = bool(self.valid_rows)
        self.sampled_rows = self.valid_rows[: self.spec.eval_samples]

    def build_model(self):
        import torch
        from transformers import AutoModelForCausalLM, set_seed

        set_seed(self.spec.seed)
        cuda = torch.cuda.is_available()
        self.device = "cuda" if cuda else "cpu"
        self.bf16 = cuda and torch.cuda.is_bf16_supported()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.torch_device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        # fp32 on CPU: bf16 there is emulated and measured several times slower.
        dtype = torch.bfloat16 if self.bf16 and self.spec.adapter == "full" else torch.float32
        start = self.starting_weights()
        source = self.spec.model if start != "full" else self.spec.init_from
        if self.spec.quantization != "none":
            model = self.load_quantized(source, cuda)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True)
        if start == "adapter":
            from peft import PeftConfig, PeftModel

            # A fine-tuned adapter: LoRA goes on training it (with this job's dropout); full fine-tuning starts
            # from it merged.
            config = PeftConfig.from_pretrained(self.spec.init_from)
            config.lora_dropout = self.spec.lora_dropout
            model = PeftModel.from_pretrained(model, self.spec.init_from, config=config,
                                              is_trainable=self.spec.adapter == "lora")
            if self.spec.adapter == "full":
                model = model.merge_and_unload()
                model.requires_grad_(True)  # loading the adapter froze the base
        model.config.use_cache = False  # no KV cache while training
        if self.spec.packing:  # the spec allows it for supervised jobs only
            from .attention import use_varlen

            # Packed rows: attention per example, not over the whole flattened batch.
            if not use_varlen(model) and "flash" not in model.config._attn_implementation:
                self.reporter.message(
                    f"Packing with {model.config._attn_implementation} attention masks the whole flattened batch "
                    "at once; it may be slower than padding. Install flash-attn or turn packing off.",
                    level="warn")
        if self.spec.adapter == "lora" and start != "adapter":
            from peft import LoraConfig, get_peft_model

            target = self.spec.lora_target_modules
            model = get_peft_model(model, LoraConfig(
                r=self.spec.lora_r, lora_alpha=self.spec.lora_alpha, lora_dropout=self.spec.lora_dropout,
                target_modules=target, task_type="CAUSAL_LM"))
        self.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.total_params = sum(p.numel() for p in model.parameters())
        self.model = model

    def load_quantized(self, source, cuda):
        """The base with its linear layers quantized by bitsandbytes (QLoRA), made ready for adapters.

        On a GPU the compute dtype is bf16 (fp16 without bf16 support); on a CPU it is fp32, where
        bitsandbytes' CPU backend computes (bf16 there is emulated). Gradient checkpointing stays off, as
        in every engine job."""
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise EngineError("quantization_unavailable",
                              f"quantization {self.spec.quantization} needs bitsandbytes, which does not import on "
                              f"this host ({exc}). Install it into the engine's venv (make install), or set "
                              "quantization to none.") from None
        compute = (torch.bfloat16 if self.bf16 else torch.float16) if cuda else torch.float32
        if self.spec.quantization == "4bit":
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                        bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
            layer = bnb.nn.Linear4bit
        else:
            config = BitsAndBytesConfig(load_in_8bit=True)
            layer = bnb.nn.Linear8bitLt
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=compute, quantization_config=config, device_map={"": self.torch_device},
                use_safetensors=True)
        except OSError:  # missing or unreadable weights: as for an unquantized load
            raise
        except Exception as exc:  # bitsandbytes and the quantizer raise ValueError, RuntimeError, ImportError, …
            raise EngineError("quantization_failed",
                              f"quantization {self.spec.quantization} failed while loading {source}: "
                              f"{type(exc).__name__}: {exc}. Set quantization to none for this model.") from None
        if not any(isinstance(module, layer) for module in model.modules()):
            # transformers only logs a warning when it finds no linear layer to replace.
            raise EngineError("quantization_failed",
                              f"quantization {self.spec.quantization}: {source} has no linear layers bitsandbytes "
                              "can quantize (its output head is kept in full precision), so nothing would be "
                              "saved. Set quantization to none for this model.")
        if not cuda and self.spec.quantization == "4bit":
            # On a CPU with AVX512-bf16, bitsandbytes (0.50.2) repacks a 4-bit layer for its inference kernel the
            # first time it runs in eval mode, and that kernel has no backward: after the first evaluation the
            # gradient through the base layers would be lost (measured: layer 0's LoRA gradient halved). Keep
            # the layout that trains.
            for module in model.modules():
                if isinstance(module, layer):
                    module.support_avx512bf16_for_cpu = False
        # Norms and embeddings to fp32, the inputs' gradients on, for adapters on a frozen quantized base.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    def starting_weights(self):
        """What `init_from` holds: None (no snapshot: the base model), "adapter" or "full"; EngineError when the
        folder has neither safetensors weights nor an adapter."""
        folder = self.spec.init_from
        if not folder:
            return None
        folder = pathlib.Path(folder)
        if (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file():
            return "adapter"
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return "full"
        raise EngineError("model_not_found",
                          f"The fine-tuned snapshot to start from ({folder}) has no safetensors weights: neither "
                          "an adapter (adapter_config.json, adapter_model.safetensors) nor a model (config.json, "
                          "*.safetensors).")

    def build_trainer(self):
        from datasets import Dataset

        from .callbacks import ProgressCallback

        spec = self.spec
        checkpointing = _checkpointing_argument()
        per_device = spec.batch_size // (self.world_size * spec.gradient_accumulation_steps)
        if per_device < 1:
            raise EngineError("invalid_spec", f"batch_size ({spec.batch_size}) is smaller than n_gpus × n_nodes × "
                                              "gradient_accumulation_steps; raise batch_size.")
        common = dict(
            output_dir=str(checkpoints.trainer_dir(spec.output_dir)),
            per_device_train_batch_size=per_device,
            per_device_eval_batch_size=max(per_device, 8),
            gradient_accumulation_steps=spec.gradient_accumulation_steps,
            num_train_epochs=spec.n_epochs,
            learning_rate=spec.learning_rate,
            lr_scheduler_type=spec.lr_scheduler,
            warmup_steps=spec.warmup_ratio,  # a float below 1 is a ratio of the total steps
            weight_decay=spec.weight_decay,
            logging_steps=spec.logging_steps,
            save_strategy="no",  # the callback asks for a save at each epoch end
            eval_strategy="no",  # the callback runs both evaluations itself
            report_to="none",  # trackers are fed from our own lines (integrations.py)
            disable_tqdm=True,
            seed=spec.seed,
            bf16=self.bf16,
            # Measured 8× slower on a CPU; transformers 5 renamed it (the old name still works, with a warning).
            **{checkpointing: False},
            use_cpu=self.device == "cpu",
            ddp_backend="gloo" if self.device == "cpu" and self.world_size > 1 else None,
            ddp_find_unused_parameters=False,
            dataloader_num_workers=0,
            max_length=spec.max_seq_length,
            **(fsdp_arguments(self.model, self.device) if spec.distributed == "fsdp" else {}),
        )
        self.callback = ProgressCallback(self)
        train_dataset = Dataset.from_list(self.train_rows)
        if spec.method == "reinforcement":
            from trl import GRPOConfig, GRPOTrainer

            from .rft import GraderReward, grpo_arguments, uses_vllm

            args = GRPOConfig(**grpo_arguments(self, common))
            self.generation_batch = max(per_device, 8)
            self.trainer = GRPOTrainer(model=self.model, reward_funcs=[GraderReward(self.grading)], args=args,
                                       train_dataset=train_dataset, processing_class=self.tokenizer,
                                       callbacks=[self.callback])
            if self.is_main:
                where = "vLLM, colocated with training" if uses_vllm(self.device) else "the training process"
                self.reporter.message(f"Sampling {spec.num_generations} answers per prompt in {where}; "
                                      f"{spec.batch_size // spec.num_generations} prompts per step.")
        elif spec.method == "dpo":
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(beta=spec.beta, **common)
            eval_dataset = None
            if self.has_validation:
                eval_dataset = {"sampled": Dataset.from_list(self.sampled_rows),
                                "full": Dataset.from_list(self.valid_rows)}
            self.trainer = DPOTrainer(model=self.model, args=args, train_dataset=train_dataset,
                                      eval_dataset=eval_dataset, processing_class=self.tokenizer,
                                      callbacks=[self.callback])
        else:
            from trl import SFTConfig

            from .sft import SFTTrainer, use_plain_head

            # Packing: best-fit-decreasing rows of max_seq_length, padding-free, each example keeping its own
            # position_ids; attention.py keeps each example to itself.
            args = SFTConfig(packing=spec.packing, packing_strategy="bfd", padding_free=spec.packing, **common)
            plain_head = use_plain_head(self.device, per_device, spec.max_seq_length,
                                        self.model_config.get_text_config().vocab_size)
            self.trainer = SFTTrainer(model=self.model, args=args, train_dataset=train_dataset,
                                      processing_class=self.tokenizer, callbacks=[self.callback],
                                      plain_head=plain_head)
        if spec.quantization != "none" and self.device == "cpu":
            # TRL's trainers put a quantized model's adapters in bf16 (the QLoRA paper's advice, for a GPU). On a
            # CPU, where bf16 is emulated, the engine trains in fp32, and the checkpoint then holds fp32 weights
            # as a plain LoRA job's does.
            for parameter in self.trainer.model.parameters():
                if parameter.requires_grad:
                    parameter.data = parameter.data.float()

    def eval_figures(self, scope):
        """The figures of an `eval` line, by name, on the sampled batch or the whole validation file."""
        rows = self.sampled_rows if scope == "sampled" else self.valid_rows
        if self.spec.method == "reinforcement":
            from .rft import validation_figures

            return validation_figures(self, rows, scope)
        figures = self.evaluate(scope)
        prefix = "valid" if scope == "sampled" else "full_valid"
        return {f"{prefix}_loss": figures["loss"], f"{prefix}_mean_token_accuracy": figures["accuracy"],
                **{f"{prefix}_{k}": v for k, v in figures.get("extra", {}).items()}}

    def evaluate(self, scope):
        """{"loss", "accuracy", "extra"} on the sampled batch or the whole validation file."""
        if self.spec.method == "dpo":
            metrics = self.trainer.evaluate(eval_dataset=scope, metric_key_prefix=f"eval_{scope}")
            # evaluate() leaves the model in eval mode, and DPOTrainer.log picks train or eval metrics by
            # that mode: put it back so this step's training metrics are reported as such.
            self.trainer.model.train()
            # DPOTrainer adds its reward figures when it logs (as eval_rewards/…), not to evaluate()'s result.
            logged = self.trainer.state.log_history[-1] if self.trainer.state.log_history else {}
            return {"loss": metrics.get(f"eval_{scope}_loss"),
                    "accuracy": logged.get("eval_mean_token_accuracy"),
                    "extra": {"reward_margin": logged.get("eval_rewards/margins"),
                              "reward_accuracy": logged.get("eval_rewards/accuracies")}}
        from .evaluate import assistant_loss

        rows = self.sampled_rows if scope == "sampled" else self.valid_rows
        return assistant_loss(self.trainer.model, rows, batch_size=self.trainer.args.per_device_eval_batch_size,
                              pad_token_id=self.tokenizer.pad_token_id)

    # --- train / save / report ---------------------------------------------------

    def train(self):
        if self.is_main:
            for sentence in checkpoints.tidy(self.spec.output_dir):
                self.reporter.message(sentence)
        resume_from = checkpoints.latest_resumable(self.spec.output_dir) if self.resume else None
        if self.resume and resume_from is None:
            self.reporter.message("No complete checkpoint to resume from; starting from the beginning.",
                                  level="warn")
        if resume_from is not None:
            saved = json.loads((resume_from / checkpoints.SPEC_FILE).read_text())
            for mismatch in checkpoints.spec_mismatches(saved, self.spec_dict):
                self.reporter.message(f"Spec differs from the checkpoint's: {mismatch}", level="warn")
            state = checkpoints.read_state(resume_from)
            self.trained_tokens = state.get("trained_tokens", 0)
            self.callback.last.update({k: v for k, v in state["metrics"].items() if v is not None})
            self.resumed_from = str(resume_from)
            self.reporter.message(f"Resuming from {resume_from.name} at step {state['step']}.")
            previous = checkpoints.epoch_checkpoints(self.spec.output_dir)
            if previous:
                self.final_checkpoint = str(previous[-1])
        self.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    def report(self):
        if self.callback.pausing:
            return
        pause = checkpoints.pause_dir(self.spec.output_dir)
        if self.is_main and pause.exists():
            import shutil

            shutil.rmtree(pause, ignore_errors=True)  # the run finished past it
        self.reporter.emit("done", trained_tokens=self.trained_tokens, final_checkpoint=self.final_checkpoint)

    def run(self):
        self.load_spec()
        self.load_tokenizer()
        self.load_data()
        self.build_model()
        self.build_trainer()
        trackers = []
        if self.is_main:
            from .integrations import open_trackers

            trackers = open_trackers(self.spec, self.spec_dict)
            self.reporter.sinks.extend(trackers)
        ok = False
        try:
            self.train()
            self.report()
            ok = True
        finally:
            for tracker in trackers:
                tracker.close(ok)
            self.reporter.sinks.clear()


def _is_oom(exc):
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower() or \
        "can't allocate memory" in str(exc).lower()


def _log_traceback():
    try:
        traceback.print_exc(file=sys.stderr)
    except OSError:
        pass  # stderr is the job folder's engine.log, maybe on the disk that is full


def _is_disk_full(exc, output_dir=None):
    seen = exc
    while seen is not None:
        if (isinstance(seen, OSError) and seen.errno == errno.ENOSPC) or "no space left" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    if output_dir is None:
        return False
    # torch.save reports a write that did not fit without the errno ("unexpected pos …"): the free space
    # left on the job folder's disk tells.
    import shutil

    folder = pathlib.Path(output_dir)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return False
    return usage.free < min(64 << 20, usage.total // 100)


def _pause_for_full_disk(job, reporter):
    """Drop the unfinished save (it holds the space), say where resume will continue from, and stop."""
    output_dir = job.spec.output_dir
    step = job.trainer.state.global_step if hasattr(job, "trainer") else 0
    if job.is_main:
        checkpoints.tidy(output_dir)
    latest = checkpoints.latest_resumable(output_dir)
    where = (f"{latest.name} (step {checkpoints.read_state(latest)['step']})" if latest is not None
             else "the beginning (no complete checkpoint yet)")
    reporter.emit("paused", step=step, reason="disk_full",
                  message=f"The disk holding {output_dir} is full: the state at step {step} could not be saved. "
                          "The job is paused. Free space (or set keep_last_n to keep fewer optimizer states), "
                          f"then resume it: it continues from {where}.")


def main(argv=None, protocol=None):
    parser = argparse.ArgumentParser(prog="python -m training.engine")
    parser.add_argument("spec", help="path of the job's SPEC.json")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint")
    args = parser.parse_args(argv)
    rank, world = _rank()
    if world > 1:  # to the log (stderr): which process of a job on several GPUs or nodes ran where
        print(f"engine rank {rank} of {world} on {socket.gethostname()} (local rank "
              f"{os.environ.get('LOCAL_RANK', '0')})", file=sys.stderr, flush=True)
    reporter = Reporter(protocol or sys.stdout, is_main=rank == 0)
    job = Job(args.spec, reporter, resume=args.resume)

    def on_sigterm(signum, frame):
        raise Cancelled()

    def on_sigusr1(signum, frame):
        if job.callback is not None:
            job.callback.pause_requested = True

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm),
                    signal.SIGUSR1: signal.signal(signal.SIGUSR1, on_sigusr1)}
    try:
        job.run()
        return 0
    except Cancelled:
        step = job.trainer.state.global_step if hasattr(job, "trainer") else 0
        reporter.message(f"Cancelled at step {step}.", level="warn")
        return 143
    except EngineError as exc:
        reporter.emit("error", code=exc.code, message=exc.message)
        return 1
    except Exception as exc:  # noqa: BLE001 - every failure must end with an error line
        _log_traceback()
        spec = getattr(job, "spec", None)
        if _is_oom(exc):
            what = ""
            if spec is not None:
                what = (f" (batch_size {spec.batch_size}, max_seq_length {spec.max_seq_length}"
                        + (f", lora_r {spec.lora_r}" if spec.adapter == "lora" else "") + ")")
            reporter.emit("error", code="out_of_memory",
                          message=f"Out of memory{what}. Lower batch_size, max_seq_length or lora_r, or raise "
                                  "gradient_accumulation_steps and lower batch_size per step.")
        elif spec is not None and _is_disk_full(exc, spec.output_dir):
            try:
                _pause_for_full_disk(job, reporter)
                return 0
            except Exception:  # noqa: BLE001 - then it ends as a failure that says the disk is full
                _log_traceback()
                reporter.emit("error", code="disk_full", message=f"The disk holding {spec.output_dir} is full. "
                              "Free space or set keep_last_n to keep fewer optimizer states.")
        elif spec is None and _is_disk_full(exc):  # with a spec, the branch above has looked already
            reporter.emit("error", code="disk_full",
                          message="The disk holding the job folder is full. Free space or set keep_last_n to keep "
                                  "fewer optimizer states.")
        else:
            reporter.emit("error", code="internal_error", message=f"{exc.__class__.__name__}: {exc}")
        return 1
    finally:
        for signum, previous in handlers.items():
            signal.signal(signum, previous)
