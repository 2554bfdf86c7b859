"""mypt: train GPT models on corpora far larger than RAM.

Public API, as the MyPT guide imports it: `from mypt import GPT, GPTConfig, GPTDataLoader,
Tokenizer, TrainConfig` (and MixtureLoader, several datasets by weight). Importing mypt does no work: these load on first use.
"""

__version__ = "0.1.0"

_PUBLIC = {"GPT": "mypt.model", "GPTConfig": "mypt.config", "TrainConfig": "mypt.config",
           "GPTDataLoader": "mypt.data", "MixtureLoader": "mypt.data", "Tokenizer": "mypt.tokenizers"}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(name)
