"""Writes datasets in verl's parquet layout, and checks data files.

    python tools/prepare_data.py char_count --out data/char_count [--n-train N] [--n-val N] [--seed S]
    python tools/prepare_data.py gsm8k --input DIR --out data/gsm8k
    python tools/prepare_data.py jsonl --input FILE.jsonl [--val-input FILE.jsonl] --out DIR
    python tools/prepare_data.py validate FILE [FILE ...] [--kind sft|rl] [--tokenizer DIR] [--max-length N]

Each preprocessor writes sft_train.parquet, sft_val.parquet, rl_train.parquet and rl_val.parquet into
--out, then validates them. ``validate`` reports every problem with its file, 0-based row and column;
rows repeating an earlier one are a warning with a count (the data trains as it is).
Exit codes: 0 fine (warnings included), 1 invalid data, 2 bad input or arguments.
"""
import argparse
import sys
from pathlib import Path

# Runnable as a script from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.formats import DataError, SFTColumns  # noqa: E402
from harness.data.preprocessors import PREPROCESSORS, drop_repeats, write_splits  # noqa: E402
from harness.data.validation import errors_and_warnings, format_report, validate_files, warning_summary  # noqa: E402


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in PREPROCESSORS.items():
        sub = commands.add_parser(name, help=module.HELP)
        sub.add_argument("--out", required=True, help="directory for the four parquet files")
        sub.add_argument("--n-train", type=_count, help="training rows (default: the preprocessor's)")
        sub.add_argument("--n-val", type=_count, help="validation rows (default: the preprocessor's)")
        sub.add_argument("--seed", type=int, default=0)
        module.add_arguments(sub)
    check = commands.add_parser("validate", help="check parquet files; every problem is reported")
    check.add_argument("files", nargs="+")
    check.add_argument("--kind", choices=["sft", "rl"], help="default: rl when a file has reward_model")
    check.add_argument("--tokenizer", help="HF tokenizer directory, to check lengths after the chat template")
    check.add_argument("--max-length", type=int, help="max tokens of an SFT chat / an RL prompt (needs --tokenizer)")
    check.add_argument("--allow-duplicates", action="store_true", help="do not look for repeated rows")
    check.add_argument("--prompt-key", default="prompt")
    check.add_argument("--response-key", default="response")
    check.add_argument("--messages-key", default="messages")
    return parser


def validate(args) -> int:
    if (args.tokenizer is None) != (args.max_length is None):
        print("error: --tokenizer and --max-length go together", file=sys.stderr)
        return 2
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    columns = SFTColumns(args.prompt_key, args.response_key, args.messages_key)
    tables, problems = validate_files(args.files, args.kind, columns=columns, tokenizer=tokenizer,
                                      max_length=args.max_length, allow_duplicates=args.allow_duplicates)
    errors, warnings = errors_and_warnings(problems)
    if warnings:
        print(f"warning: {warning_summary(warnings)}", file=sys.stderr)
    if errors:
        print(format_report(errors), file=sys.stderr)
        return 1
    for path, table in tables:
        print(f"{path}: {table.num_rows} rows, columns {', '.join(table.column_names)}: ok")
    return 0


def prepare(args) -> int:
    splits = PREPROCESSORS[args.command].build(args)
    for name, count in drop_repeats(splits).items():
        if count:
            print(f"dropped {count} row(s) of {name} repeating an earlier row")
    written = write_splits(splits, args.out)
    errors, _ = errors_and_warnings(validate_files([str(path) for path in written.values()])[1])
    for name, path in written.items():
        print(f"wrote {path} ({len(splits[name])} rows)")
    if errors:
        print(format_report(errors), file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return validate(args) if args.command == "validate" else prepare(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
