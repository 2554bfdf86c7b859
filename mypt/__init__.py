"""mypt: train GPT models on corpora far larger than RAM.

Public API: `Tokenizer` (mypt.tokenizer). Importing mypt does no work: submodules load
on use.
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Tokenizer":
        from mypt.tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(name)
