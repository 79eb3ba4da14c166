"""Names in a checkpoint directory, importable without torch (the entry points' pre-flight reads them)."""

# Written last by a save: a directory without it is not a complete checkpoint.
MARKER = "harness_checkpoint.json"
