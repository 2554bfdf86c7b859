"""ARCHITECTURE.md names code as `module.name` (`io.staged_dir`, `mypt.fsdp.save_dcp`): each such
name is one the code has, so the page leads to the code, not to a module that is not there."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import mypt

FILE_SUFFIXES = ("py", "json", "jsonl", "toml", "yaml", "md", "txt", "bin", "gz", "zst", "safetensors", "tokens",
                 "docs")


def _resolves(ref: str, modules: set[str]) -> bool:
    parts = ref.removeprefix("mypt.").split(".")
    for i in range(len(parts), 0, -1):
        # (a module is named from its package down: tokenizers.gpt2, or gpt2 where the row says tokenizers)
        named = [m for m in modules if m.endswith("." + ".".join(parts[:i]))]
        if named:
            obj = importlib.import_module(min(named, key=len))
            for name in parts[i:]:
                if not hasattr(obj, name):
                    return False
                obj = getattr(obj, name)
            return True
    return False


def test_every_module_name_the_architecture_page_gives_is_in_the_code():
    text = (Path(__file__).resolve().parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = {m.name for m in pkgutil.walk_packages(mypt.__path__, "mypt.")}
    refs = set(re.findall(r"`((?:[a-z_][a-z0-9_]*\.)+[A-Za-z_][A-Za-z0-9_]*)`", text))
    ours = [r for r in refs if r.split(".")[-1] not in FILE_SUFFIXES
            and (r.startswith("mypt.") or importlib.util.find_spec(r.split(".")[0]) is None
                 or f"mypt.{r.split('.')[0]}" in modules)]
    assert ours, "no `module.name` found: the pattern no longer reads the page"
    assert sorted(r for r in ours if not _resolves(r, modules)) == []
