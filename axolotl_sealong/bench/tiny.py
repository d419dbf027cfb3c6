"""A tiny tokenizer built in process: tests and the GPU check, offline.

A byte-level BPE trained on a few sentences, with a ChatML template and
special tokens: any text encodes, nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Passage 1: The quick brown fox jumps over the lazy dog near the river bank.",
    "Question: Who founded the city where the author was born? Answer: Zorvan.",
    "Let's first understand the problem and devise a plan to solve it.",
    "Then, let's carry out the plan and solve the problem step-by-step.",
    "The answer is 42. Paris is the capital of France; Berlin of Germany.",
    "0123456789 ,.;:!?'\"()[]{}-_/\\ abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOP",
]


def build_tiny_tokenizer(path: Path, model_max_length: int = 8192) -> Path:
    """A byte-level BPE (any text encodes) with a ChatML template and specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=model_max_length,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return path
