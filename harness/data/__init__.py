"""data room: verl-layout SFT/RL parquet formats, validation, preprocessors, tokenization, batching."""
from harness.data.char_tokenizer import build_char_tokenizer
from harness.data.formats import DataError, SFTColumns, as_file_list, read_parquet, read_parquet_files, write_parquet
from harness.data.rl_dataset import RLDataset, RLPrompt, load_rl_dataset
from harness.data.sft_dataset import (SFTDataset, TokenBudgetSampler, collate, load_sft_dataset, token_budget_batches,
                                      tokenize_sft)
from harness.data.validation import Problem, check_files, format_report, validate_files, validate_rl_rows, validate_sft_rows

__all__ = [
    "DataError", "Problem", "RLDataset", "RLPrompt", "SFTColumns", "SFTDataset", "TokenBudgetSampler",
    "as_file_list", "build_char_tokenizer", "check_files", "collate", "format_report", "load_rl_dataset",
    "load_sft_dataset", "read_parquet", "read_parquet_files", "token_budget_batches", "tokenize_sft",
    "validate_files", "validate_rl_rows", "validate_sft_rows", "write_parquet",
]
