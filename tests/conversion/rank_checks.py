"""Checks run on both ranks of the 2-rank gloo group (tests/support/multirank.py)."""
import torch

from harness.config.parallel import ParallelConfig
from harness.models.hf_config import load_model_spec


def checkpoint_logits(mcore_path, tp, pp, tokens):
    """The converted checkpoint loaded at TP=tp/PP=pp: full logits on the last stage, else None."""
    from harness.checkpoint.verify import megatron_checkpoint_logits

    spec = load_model_spec(mcore_path)
    return megatron_checkpoint_logits(mcore_path, spec, tokens,
                                      ParallelConfig(tensor_model_parallel_size=tp,
                                                     pipeline_model_parallel_size=pp))


def exported_hf_tensors(mcore_path, hf_path, tp, pp):
    """The weight sync's path on a model loaded at TP=tp/PP=pp: this stage's parameters gathered
    over TP, named and laid out as HF's by the mapping. Also returns the parameters whose local TP
    shard differs from what the mapping's shard helper makes of the HF tensors."""
    from megatron.core import parallel_state

    from harness.checkpoint.torch_dist import load_checkpoint
    from harness.models.builder import build_model
    from harness.models.mapping import model_mapping
    from harness.models.safetensors_io import SafetensorsReader
    from harness.models.sharding import gather_full, global_names
    from harness.parallel import destroy_model_parallel, initialize_model_parallel

    spec = load_model_spec(mcore_path)
    parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    mapping = model_mapping(spec)
    reader = SafetensorsReader(hf_path)
    initialize_model_parallel(parallel)
    try:
        chunks = build_model(spec, parallel)
        load_checkpoint(mcore_path, chunks)
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        wrong_shards = []
        for chunk in chunks:
            names = global_names(chunk)
            for local_name, param in chunk.named_parameters():
                p = mapping.find(names[local_name])
                full = mapping.to_megatron(p, [reader.read(n) for n in p.hf_names])
                if not torch.equal(p.transform.shard(full, tp, tp_rank, spec), param.data):
                    wrong_shards.append(local_name)
        exported = {}
        for name, full in gather_full(chunks, lambda param: param.data, mapping).items():
            exported.update(mapping.to_hf(mapping.find(name), full))
        return exported, wrong_shards
    finally:
        destroy_model_parallel()


def resave_at(mcore_path, save_to, tp, pp):
    """Loads the converted checkpoint at TP=tp/PP=pp and saves it as the trainer does
    (``save_checkpoint``): a checkpoint whose chunks are TP shards and PP stages."""
    from harness.checkpoint.torch_dist import load_checkpoint, save_checkpoint
    from harness.models.builder import build_model
    from harness.parallel import destroy_model_parallel, initialize_model_parallel

    spec = load_model_spec(mcore_path)
    parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    initialize_model_parallel(parallel)
    try:
        chunks = build_model(spec, parallel)
        load_checkpoint(mcore_path, chunks)
        save_checkpoint(save_to, chunks)
    finally:
        destroy_model_parallel()
