"""The pieces of the SFT loop that are not the loop: data, step plan, micro-batches, LR schedule."""
import json
from dataclasses import asdict

import torch

from harness.config.parallel import ParallelConfig
from harness.config.sft import SFTConfig, SFTDataConfig, SFTOptimConfig, SFTTrainerConfig
from harness.workers import optim_schedule
from harness.workers.megatron_engine import OptimConfig, reduce_loss, token_sum_lm_loss

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_model_spec_and_tokenizer(model_dir: str):
    """An HF model directory or a converted checkpoint: both hold config.json and the tokenizer."""
    from transformers import AutoTokenizer

    from harness.models import load_model_spec

    return load_model_spec(model_dir), AutoTokenizer.from_pretrained(model_dir)


def load_examples(data: SFTDataConfig, files, tokenizer):
    """Validated (every problem named by file and row) and tokenized with the chat template."""
    from harness.data import SFTColumns, load_sft_dataset

    columns = SFTColumns(prompt_key=data.prompt_key, response_key=data.response_key, messages_key=data.messages_key)
    return load_sft_dataset(files, tokenizer, max_length=data.max_length, truncation=data.truncation, columns=columns)


class StepPlan:
    """Which examples each optimizer step trains on: a fixed permutation per epoch (seeded), so a
    resumed run sees exactly the batches the uninterrupted run would have (the dataloader position
    is the step number)."""

    def __init__(self, num_examples: int, batch_size: int, trainer: SFTTrainerConfig, seed: int, shuffle: bool = True):
        if num_examples < batch_size:
            raise ValueError(f"data.train_batch_size={batch_size} is larger than the training set ({num_examples} examples)")
        self.num_examples, self.batch_size, self.seed, self.shuffle = num_examples, batch_size, seed, shuffle
        self.steps_per_epoch = num_examples // batch_size
        self.total_steps = trainer.total_training_steps or trainer.total_epochs * self.steps_per_epoch

    def epoch(self, step: int) -> int:
        return step // self.steps_per_epoch

    def indices(self, step: int):
        epoch, position = divmod(step, self.steps_per_epoch)
        if self.shuffle:
            order = torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(self.num_examples)
        return order[position * self.batch_size : (position + 1) * self.batch_size].tolist()


def _data_parallel_slice(indices):
    from megatron.core import parallel_state

    return indices[parallel_state.get_data_parallel_rank() :: parallel_state.get_data_parallel_world_size()]


def microbatches(dataset, indices, data: SFTDataConfig, parallel: ParallelConfig, pad_token_id: int):
    """This data-parallel rank's share of the step, grouped by length into micro-batches: by token
    budget (`max_token_len_per_gpu`) or by count, each padded only to its own longest example."""
    from harness.data import collate, token_budget_batches

    mine = _data_parallel_slice(indices)
    lengths = [len(dataset[i]["input_ids"]) for i in mine]
    # Sequence parallel splits the sequence over TP ranks: lengths must divide evenly.
    multiple = parallel.tensor_model_parallel_size if parallel.sequence_parallel else 1
    if data.use_dynamic_bsz:
        groups = token_budget_batches(lengths, data.max_token_len_per_gpu, shuffle=False, pad_to_multiple_of=multiple)
    else:
        by_length = sorted(range(len(mine)), key=lengths.__getitem__)
        size = data.micro_batch_size_per_gpu
        groups = [by_length[i : i + size] for i in range(0, len(by_length), size)]
    return [
        collate([dataset[mine[i]] for i in group], pad_token_id=pad_token_id, pad_to_multiple_of=multiple)
        for group in groups
    ]


def variable_shape_options(parallel: ParallelConfig) -> dict:
    """Micro-batches are padded to their own length: pipeline stages must exchange shapes first.
    (megatron-core refuses variable lengths with its default MoE dispatcher, even for dense models.)"""
    if parallel.pipeline_model_parallel_size == 1:
        return {}
    return {"variable_seq_lengths": True, "moe_token_dispatcher_type": "alltoall"}


def step_tokens(dataset, indices) -> int:
    """Tokens that carry a label in the step, over all data-parallel ranks (padding not counted)."""
    return sum(len(dataset[i]["input_ids"]) - 1 for i in indices)


def validation_loss(engine, dataset, data: SFTDataConfig, parallel: ParallelConfig, pad_token_id: int) -> float:
    batches = microbatches(dataset, list(range(len(dataset))), data, parallel, pad_token_id)
    outputs = engine.forward_backward(batches, token_sum_lm_loss, forward_only=True)
    return reduce_loss(outputs)


def optim_config(optim: SFTOptimConfig) -> OptimConfig:
    return optim_schedule.optim_config(optim.lr, optim.min_lr_ratio, optim.weight_decay, optim.betas, optim.clip_grad)


def lr_scheduler(optimizer, optim: SFTOptimConfig, total_steps: int):
    return optim_schedule.lr_scheduler(optimizer, lr=optim.lr, min_lr_ratio=optim.min_lr_ratio,
                                       warmup_ratio=optim.warmup_steps_ratio, style=optim.lr_scheduler,
                                       weight_decay=optim.weight_decay, total_steps=total_steps,
                                       warmup_steps=optim.lr_warmup_steps)


def tracker(config: SFTConfig, total_steps: int, resumed_step: int):
    from harness.tracking import Tracker

    return Tracker(
        config.trainer.default_local_dir,
        loggers=config.trainer.logger,
        project=config.trainer.project_name,
        experiment=config.trainer.experiment_name,
        config=json.loads(json.dumps(asdict(config), default=str)),
        total_steps=total_steps,
        resumed_step=resumed_step,
    )
