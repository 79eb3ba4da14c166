"""Saves a small random-init HF causal LM with a local character-level tokenizer and chat template.

    python tools/make_tiny_model.py --arch qwen2|qwen3|llama --out DIR [--size tiny|small] [--seed S]
        [--dtype float32|bfloat16|float16] [--tie-word-embeddings] [--max-position-embeddings N]
        [--chat-template chatml|compact] [--force]

The directory loads with ``AutoTokenizer`` / ``AutoModelForCausalLM`` (and SGLang); every CPU demo and
test gets its model here. Sizes (all 4 layers, 8 attention heads, 2 key/value heads, vocabulary 259):
    tiny:  hidden 64,  MLP 192  (~0.2M parameters): tests
    small: hidden 128, MLP 384  (~0.8M parameters): the char_count quickstart (notes/quickstart.md)
Token ids: 0 <|endoftext|> (pad, bos), 1 <|im_start|>, 2 <|im_end|> (eos: ends every assistant turn),
then 3 + b for byte b (harness/data/char_tokenizer.py). Chat template: ChatML, or "compact" (only the
assistant turn marked; the quickstart's, for ~40 % shorter examples).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.char_tokenizer import CHAT_TEMPLATES  # noqa: E402 (no heavy import)

SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2),
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2),
}
ARCHITECTURES = ("qwen2", "qwen3", "llama")
DTYPES = ("float32", "bfloat16", "float16")


def model_config(arch: str, size: str, tokenizer, *, tie_word_embeddings: bool = False,
                 max_position_embeddings: int = 512):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if size not in SIZES:
        raise ValueError(f"unknown --size {size!r}; choose from {', '.join(SIZES)}")
    shape = SIZES[size]
    common = dict(
        vocab_size=len(tokenizer),  # Megatron pads it to its own multiple
        tie_word_embeddings=tie_word_embeddings,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    if arch == "qwen2":
        config = Qwen2Config(rope_theta=1_000_000.0, **common)
    elif arch == "qwen3":
        # Qwen3's default head_dim is 128, whatever the width: derive it from the tiny shape.
        config = Qwen3Config(rope_theta=1_000_000.0, head_dim=shape["hidden_size"] // shape["num_attention_heads"],
                             **common)
    else:
        config = LlamaConfig(rope_theta=500_000.0, **common)
    config.architectures = [type(config).__name__.replace("Config", "ForCausalLM")]
    return config


def make_tiny_model(arch: str, out_dir, size: str = "tiny", seed: int = 0, dtype: str = "float32",
                    tie_word_embeddings: bool = False, max_position_embeddings: int = 512, force: bool = False,
                    chat_template: str = "chatml") -> Path:
    """Builds and saves model, tokenizer and generation config into ``out_dir``; returns the path.

    Written into a temporary directory renamed at the end; a non-empty ``out_dir`` is refused
    (``FileExistsError``) unless ``force``, which replaces it.
    """
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from harness.data.char_tokenizer import END_OF_TEXT, build_char_tokenizer

    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if chat_template not in CHAT_TEMPLATES:
        raise ValueError(f"unknown --chat-template {chat_template!r}; choose from {', '.join(CHAT_TEMPLATES)}")
    tokenizer = build_char_tokenizer(model_max_length=max_position_embeddings, chat_template=chat_template)
    config = model_config(arch, size, tokenizer, tie_word_embeddings=tie_word_embeddings,
                          max_position_embeddings=max_position_embeddings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(getattr(torch, dtype))
    # Stop sampling at the end of a turn or of the text, as Qwen's instruct models do.
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TEXT)])
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} is not empty (give --force to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, choices=ARCHITECTURES)
    parser.add_argument("--out", required=True, help="directory to write (created)")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--tie-word-embeddings", action="store_true")
    parser.add_argument("--max-position-embeddings", type=int, default=512)
    parser.add_argument("--chat-template", default="chatml", choices=sorted(CHAT_TEMPLATES))
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    try:
        out = make_tiny_model(args.arch, args.out, size=args.size, seed=args.seed, dtype=args.dtype,
                              tie_word_embeddings=args.tie_word_embeddings,
                              max_position_embeddings=args.max_position_embeddings, force=args.force,
                              chat_template=args.chat_template)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(out)
    print(f"wrote {out}: {config.architectures[0]}, hidden {config.hidden_size}, {config.num_hidden_layers} layers, "
          f"vocab {config.vocab_size}, {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
