"""Post-training harness: Megatron-core trains, SGLang generates, Ray places the workers.

Importing the package is cheap on purpose (no torch, no megatron): entry points and tools import
what they need.
"""
__version__ = "0.1.0"
