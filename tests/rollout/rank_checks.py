"""Functions run on both gloo ranks (tests/support/multirank.py): a Megatron actor at TP=2 or PP=2
exports its weights into a rollout engine; rank 0 is the trainer side of the sync."""
from __future__ import annotations

import torch

from harness.config.parallel import ParallelConfig
from harness.models.builder import build_model
from harness.models.hf_config import load_model_spec
from harness.models.mapping import model_mapping
from harness.models.sharding import global_names, load_full_weights
from harness.parallel import destroy_model_parallel, initialize_model_parallel
from harness.rollout.base import SamplingParams
from harness.workers.weight_export import export_hf_weights, push_weights
from tests.support.tiny_hf import hf_state_dict

PROMPTS = [[3, 17, 42, 9], [100, 5, 61, 7, 200, 12]]
GREEDY = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)


def build_actor(hf_dir: str, tp: int, pp: int, scale: float = 1.0):
    """A Megatron actor holding the HF weights of ``hf_dir`` (times ``scale``: a "trained" step)."""
    spec = load_model_spec(hf_dir)
    parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    initialize_model_parallel(parallel)
    chunks = build_model(spec, parallel, params_dtype=torch.float32)
    mapping, hf = model_mapping(spec), hf_state_dict(hf_dir)
    full = {}
    for chunk in chunks:
        for name in global_names(chunk).values():
            p = mapping.find(name)
            full[name] = mapping.to_megatron(p, [hf[n].float() for n in p.hf_names])
            if scale != 1.0 and "norm" not in name:
                full[name] = full[name] * scale
    load_full_weights(chunks, full, mapping)
    return spec, chunks


def teacher_forced_logprobs(chunks, spec, sequences):
    """Megatron's log p(token_t | tokens_<t), on the last pipeline stage (None elsewhere)."""
    from harness.checkpoint.verify import megatron_logits

    out = []
    for sequence in sequences:
        tokens = torch.tensor([sequence])
        logits = megatron_logits(chunks, tokens, spec.vocab_size)
        if logits is not None:
            logprobs = torch.log_softmax(logits[0, :-1].float(), -1)
            out.append(logprobs.gather(1, tokens[0, 1:, None])[:, 0].tolist())
    return out or None


def export_into_embedded(hf_dir: str, tp: int, pp: int, scale: float, feeders=(0,), failing_rank=None):
    """Exports the actor into an in-process engine on each feeder rank (rank 0 relays to the others);
    returns its state dict there (None elsewhere). The engine of `failing_rank` refuses the stream at
    once: that rank reports the error after taking its part, and the others finish."""
    from harness.config.rollout import RolloutConfig
    from harness.rollout.embedded_engine import EmbeddedEngine

    spec, chunks = build_actor(hf_dir, tp, pp, scale)
    rank = torch.distributed.get_rank()
    try:
        stream = export_hf_weights(chunks, spec, feeders=feeders)
        engine = EmbeddedEngine(RolloutConfig(name="embedded", model_path=hf_dir, dtype="float32")) \
            if stream.feeds else None
        if rank == failing_rank:
            engine.update_weights = lambda weights, version: (_ for _ in ()).throw(RuntimeError("engine refused"))
        try:
            push_weights(stream, engine, version=1)
        except RuntimeError as error:
            return f"raised: {error}"
        return {n: t.clone() for n, t in engine.model.state_dict().items()} if engine else None
    finally:
        destroy_model_parallel()


def sync_into_sglang(url: str, hf_dir: str, transport: str, tp: int, pp: int, scale: float, version: int,
                     bucket_size_mb: int = 1):
    """Exports the actor into the running server at ``url``; on rank 0: SGLang's greedy output and
    teacher-forced log-probs, and an HF model's greedy output on the very tensors that were sent."""
    from harness.config.rollout import RolloutConfig
    from harness.rollout.sglang_engine import SGLangEngine

    spec, chunks = build_actor(hf_dir, tp, pp, scale)
    try:
        stream = export_hf_weights(chunks, spec)
        result = {}
        if stream.is_sender:
            engine = SGLangEngine(RolloutConfig(server_urls=[url], model_path=hf_dir, weight_transport=transport,
                                                bucket_size_mb=bucket_size_mb, device="cpu"))
            sent = {}
            stream.tensors = ((n, sent.setdefault(n, t.clone())) for n, t in stream.tensors)
            push_weights(stream, engine, version)
            completions = engine.generate(PROMPTS, GREEDY)
            sequences = [p + c.token_ids for p, c in zip(PROMPTS, completions)]
            result = {"sglang_tokens": [c.token_ids for c in completions],
                      "sglang_versions": [c.weight_version for c in completions],
                      "sglang_scores": engine.score(sequences), "sequences": sequences,
                      "hf_tokens": hf_greedy(hf_dir, sent), "health": engine.health()}
            engine.transport.reset()
        else:
            push_weights(stream, None, version)
        return {**result, "megatron_scores": teacher_forced_logprobs(chunks, spec, _shared_sequences(result))}
    finally:
        destroy_model_parallel()


def _shared_sequences(result):
    box = [result.get("sequences")]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def hf_greedy(hf_dir: str, state_dict: dict):
    """Greedy tokens of the HF model holding ``state_dict`` in bf16 (the dtype SGLang serves)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16).eval()
    model.load_state_dict({n: t.to(torch.bfloat16) for n, t in state_dict.items()}, strict=False)
    out = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = model.generate(torch.tensor([prompt]), max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
                                 min_new_tokens=GREEDY.max_new_tokens)
            out.append(ids[0, len(prompt):].tolist())
    return out
