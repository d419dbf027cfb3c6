"""Kept for tests/test_iterate.py until it imports from tests/builders.py."""

from builders import TINY_LORA_TRAINING

__all__ = ["TINY_LORA_TRAINING"]
