"""--dataset_dir NAME=PATH:WEIGHT: the datasets of a run (several make a mixture) and their
weights, parsed and checked before anything is opened; eval's --dataset NAME=DIR by the same
rules, without a weight."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mypt.errors import ConfigError

# A dataset's name: a key of the metrics and part of their file names (eval_NAME.tsv).
NAME = re.compile(r"[A-Za-z0-9_.-]+")
# The smallest share of a mixture a dataset may have: below one sequence in a billion it would
# never be drawn (a weight of 1e-320 is positive, and effectively 0).
MIN_SHARE = 1e-9


@dataclass(frozen=True)
class DatasetSpec:
    """One --dataset_dir: NAME=PATH:WEIGHT, where NAME= and :WEIGHT are optional (NAME
    defaults to the directory's name, WEIGHT to None = an equal share)."""

    name: str
    path: Path
    weight: float | None = None
    text: str = ""  # as the user wrote it, for messages

    @classmethod
    def parse(cls, spec: str | os.PathLike, flag: str = "--dataset_dir", weighted: bool = True) -> DatasetSpec:
        """`flag`'s value as a DatasetSpec; weighted=False (eval's --dataset NAME=DIR, whose
        datasets are evaluated apart): a weight is refused."""
        text = os.fspath(spec)
        form = "NAME=PATH:WEIGHT" if weighted else "NAME=DIR"
        if Path(text).is_dir():  # an existing directory is a path, whatever ':' or '=' it holds
            return cls(Path(text).resolve().name or text, Path(text), None, text)
        name, sep, rest = text.partition("=")
        if not sep or not NAME.fullmatch(name):
            name, rest = "", text
        path, colon, weight = rest.rpartition(":")
        value = None
        if colon:
            try:
                value = float(weight)
            except ValueError:  # a ':' inside the path, not a weight
                if Path(path).is_dir() and weighted:  # data/general:abc, where data/general is the dataset
                    raise ConfigError(f"{flag} {text}: weight {weight!r} is not a number; give a finite "
                                      f"positive one (e.g. {path}:0.7) or none (equal shares)") from None
                path = rest
            else:
                if Path(rest).is_dir() and Path(path).is_dir():  # x=d:1 beside folders d and d:1: either
                    raise ConfigError(f"{flag} {text}: both {path} (weight {weight}) and {rest} are "
                                      f"directories; say which: {name + '=' if name else ''}{rest}:1 for the "
                                      f"folder {rest}, {name + '=' if name else ''}{path}/:{weight} for {path}")
                if not weighted:
                    raise ConfigError(f"{flag} {text}: {flag} takes no weight (:{weight}): each dataset is "
                                      f"evaluated apart; give {form}")
                if not math.isfinite(value) or value <= 0:
                    raise ConfigError(f"{flag} {text}: weight {weight} must be a finite positive number "
                                      "(e.g. web=data/web:0.7); leave a dataset out rather than weigh it 0")
        else:
            path = rest
        if not path:
            raise ConfigError(f"{flag} {text!r}: no path; expected {form}" + (", PATH:WEIGHT or PATH" if weighted
                                                                               else " or DIR"))
        name = name or Path(path).resolve().name
        if not NAME.fullmatch(name) and not Path(path).exists():  # the name is not what went wrong
            raise ConfigError(f"{flag} {text}: no such directory {path}; prepare it with `mypt "
                              f"prepare-dataset --out_dir`, or fix the path ({form}, each part optional)")
        if not NAME.fullmatch(name):
            raise ConfigError(f"{flag} {text}: {name!r} cannot name a dataset in the eval line; "
                              f"give a name of letters, digits, '_', '-' or '.': {form}")
        return cls(name, Path(path), value, text)


def parse_dataset_specs(specs, flag: str = "--dataset_dir", weighted: bool = True) -> list[DatasetSpec]:
    """The --dataset_dir flags (`flag`'s: DatasetSpec.parse) as DatasetSpecs, each name once, with
    their weights normalized to sum to 1: every dataset weighted, or none (equal shares)."""
    out = [s if isinstance(s, DatasetSpec) else DatasetSpec.parse(s, flag, weighted) for s in specs]
    has_weight = [s.weight is not None for s in out]
    if len(out) > 1 and any(has_weight) and not all(has_weight):
        raise ConfigError(f"{flag}: give every dataset of a mixture a weight (NAME=PATH:WEIGHT) or none "
                          f"(equal shares); got {', '.join(s.text for s in out)}")
    named: dict[str, DatasetSpec] = {}
    for s in out:  # (the second would replace the first: its sampler state, its eval line, its metrics)
        if s.name in named:
            raise ConfigError(f"{flag} {s.text!r}: two datasets named {s.name}: the name {s.name!r} is given to "
                              f"{flag} {named[s.name].text} already; give each dataset a name of its own, "
                              f"NAME1={'PATH1 NAME2=PATH2' if weighted else 'DIR1 NAME2=DIR2'}")
        named[s.name] = s
    # Over the largest first: weights of 1e308 summed to inf, and every share was 0.
    top = max((s.weight or 1.0 for s in out), default=1.0)
    total = sum((s.weight or 1.0) / top for s in out)
    specs = [DatasetSpec(s.name, s.path, (s.weight or 1.0) / top / total, s.text) for s in out]
    tiny = next((s for s in specs if s.weight < MIN_SHARE), None)
    if tiny is not None:  # 1e-320 is positive, yet its dataset would never be drawn
        share = f"{tiny.weight:.3g}"
        if float(share) >= MIN_SHARE:  # (rounded up to the limit: the digits that put it under)
            share = repr(tiny.weight)
        raise ConfigError(f"{flag} {tiny.text}: its weight is a share of {share} of the mixture, "
                          f"under {MIN_SHARE:g} (never drawn in practice); leave the dataset out, or give it a "
                          "larger weight")
    return specs
