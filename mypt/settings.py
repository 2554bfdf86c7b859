"""One definition per setting: a dataclass field made with `setting()` carries the default,
the check and the help text.

The click options of `mypt` commands and of the stage scripts are generated from these
fields (mypt.options), params.yaml sections mirror them, and `Settings.__post_init__` checks
every value the same way whether it came from a flag, params.yaml or a JSON config file:
types are strict (`"dropout": "0.1"` is an error, not a string dropout), ranges and choices
come from the field's metadata.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import shlex
import types
import typing
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from mypt.errors import ConfigError, MyptError


class SettingError(ConfigError):
    """A bad value of settings `fields` (a range, or a rule between fields): Settings.from_dict
    says where those values came from (a flag, a config file)."""

    def __init__(self, message: str, fields: tuple[str, ...]):
        super().__init__(message)
        self.fields = fields


class UnknownSettingError(ConfigError, AttributeError):
    """An assignment to a name that is no field of a settings class (a typo such as `max_iter`,
    which would otherwise be kept and never read). An AttributeError too, as Python's own
    refusals of an attribute are."""


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None,
            min_open: bool = False, max_open: bool = False,
            choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
            flag: str | None = None, output: bool = True, required: bool = False,
            exists: str | None = None, show_default: Any = True,
            check: Callable[[Any], Any] | None = None, metavar: str | None = None,
            derived_from: str | None = None, acts_with: tuple[str, Any] | None = None,
            from_object: Callable[[Any], Any] | None = None, none_text: str | None = None) -> Any:
    """A settings field.

    min/max (open or closed) and choices are checked on creation and become click's
    IntRange/FloatRange/Choice. `flag` is the field's name in `mypt prepare-dataset` and in
    a dataset's recorded settings when it differs from the field (= params.yaml key, stage
    flag). `output=False` marks a setting that changes how the output is made (workers,
    memory), never its bytes: it is left out of a dataset's recorded settings (`is_recorded`),
    so changing it neither makes a dataset differ nor is inherited by --append_to.
    `choices` may be a callable (a registry's names, read when needed). exists="dir" or
    "file": a path flag must name an existing directory or file. `check(value)` validates
    what a fixed list cannot (`--tokenization hf:PATH`): it returns the value or raises a
    MyptError whose message says what is wrong; `metavar` is then the flag's help form.
    `derived_from`: left at None, the setting follows that other field (min_lr follows
    learning_rate), so a new run that sets that field drops a saved value of this one.
    `acts_with=(field, value)`: the setting changes nothing unless that field has that value
    (muon_momentum with optimizer muon); giving it otherwise is warned of (train).
    `from_object(value)`: the setting's value for a JSON value other than a string in a config
    file (rope_scaling as Hugging Face's object); it raises a MyptError as `check` does.
    `none_text`: the word (any case) that gives None where None itself reads as "not given":
    `--rope_scaling none` clears a config file's or a model's scaling. The flag keeps the word
    (an unset flag is None); the settings hold None.
    """
    meta = {"help": help, "min": min, "max": max, "min_open": min_open, "max_open": max_open,
            "choices": choices, "flag": flag, "output": output, "required": required,
            "exists": exists, "show_default": show_default, "check": check, "metavar": metavar,
            "derived_from": derived_from, "acts_with": acts_with, "from_object": from_object,
            "none_text": none_text}
    return dataclasses.field(default=default, metadata=meta)


def is_recorded(f: dataclasses.Field) -> bool:
    """Whether a setting decides the output bytes (it was not declared `output=False`)."""
    return f.metadata.get("output", True)


def choices_of(f: dataclasses.Field) -> list[str] | None:
    c = f.metadata.get("choices")
    return list(c() if callable(c) else c) if c is not None else None


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f.name


def _base_type(hint: Any) -> tuple[type, bool]:
    """(the type, whether None is allowed) of an annotation like `int | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _coerce(value: Any, hint: Any, name: str, label: str) -> Any:
    base, optional = _base_type(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{label} {name}: a value is required, got None")
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base, str(base))
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base is Path:
        ok = isinstance(value, (str, os.PathLike))
        value = Path(value) if ok else value
    elif typing.get_origin(base) is tuple:  # tuple[str, ...]: a flag given several times
        kind = "a list of strings"
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{label} {name}: must be {kind}, got {value!r} ({type(value).__name__})")
    return value


def check_field(f: dataclasses.Field, value: Any, hint: Any, label: str) -> Any:
    """The value of field `f` checked (and int -> float, str -> Path converted); a SettingError
    of that field if it is bad."""
    try:
        return _checked(f, value, hint, label)
    except ConfigError as e:
        raise SettingError(str(e), (f.name,)) from None


def says_none(word: str | None, value: Any) -> bool:
    """Whether `value` is `word`, a setting's none_text (see setting), in any case."""
    return word is not None and isinstance(value, str) and value.strip().lower() == word


def gives_none(f: dataclasses.Field, value: Any) -> bool:
    """Whether `value` is field `f`'s none_text."""
    return says_none(f.metadata.get("none_text"), value)


def _checked(f: dataclasses.Field, value: Any, hint: Any, label: str) -> Any:
    m = f.metadata
    if gives_none(f, value):
        return None
    if m.get("from_object") is not None and value is not None and not isinstance(value, str):
        try:
            value = m["from_object"](value)
        except MyptError as e:
            raise ConfigError(f"{label} {f.name}: {e}") from None
    value = _coerce(value, hint, f.name, label)
    if value is None:
        return None
    allowed = choices_of(f)
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{label} {f.name}: {value!r} is not one of {', '.join(allowed)}")
    if m.get("check") is not None:
        try:
            value = m["check"](value)
        except MyptError as e:
            raise ConfigError(f"{label} {f.name}: {e}") from None
    if isinstance(value, float) and not math.isfinite(value) and (m.get("min") is not None or m.get("max") is not None):
        raise ConfigError(f"{label} {f.name}: must be a finite number, got {value!r}")
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and (value < lo or (m.get("min_open") and value == lo)):
        raise ConfigError(f"{label} {f.name}: must be {'>' if m.get('min_open') else '>='} {lo}, got {value!r}")
    if hi is not None and (value > hi or (m.get("max_open") and value == hi)):
        raise ConfigError(f"{label} {f.name}: must be {'<' if m.get('max_open') else '<='} {hi}, got {value!r}")
    return value


class Settings:
    """Base of the settings dataclasses: checks every field on creation."""

    LABEL = "setting"  # how messages name this class's fields ("training setting max_iters: ...")
    # Public names other than the fields that may be set on an instance (TrainConfig's block_size,
    # which GPTDataLoader reads); names starting with "_" are always allowed.
    EXTRA_ATTRIBUTES: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: Any) -> None:
        # A typo (`config.max_iter = 100`) would be an attribute nothing reads: the run would train
        # with the field's old value and say nothing. Values are not checked here: settings that go
        # together (n_embd and n_head) pass through invalid pairs while set one by one; checked()
        # checks them all, as the constructor does, and fit and GPT() call it.
        if not name.startswith("_") and name not in self.__dataclass_fields__ and name not in self.EXTRA_ATTRIBUTES:
            raise UnknownSettingError(self._unknown_message(name))
        super().__setattr__(name, value)

    def _unknown_message(self, name: str) -> str:
        names = self.field_names()
        near = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {near[0]}?" if near else f"the settings are {', '.join(names)}"
        if isinstance(getattr(type(self), name, None), property):
            hint = f"{name} follows from other settings and cannot be set; " + hint
        return f"{type(self).__name__} has no {self.LABEL} {name!r}: {hint}"

    def checked(self):
        """These settings checked again as the constructor checks them, for settings changed by
        assignment after it (`config.gradient_accumulation_steps = 0`), which checks nothing:
        a new instance (normalized as the constructor normalizes), or the constructor's
        SettingError or ConfigError naming the field and its value. The names of
        EXTRA_ATTRIBUTES set on this one are kept."""
        new = dataclasses.replace(self)
        for name, value in vars(self).items():
            if name not in self.__dataclass_fields__:
                object.__setattr__(new, name, value)
        return new

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_field(f, getattr(self, f.name), hints[f.name], self.LABEL))

    @classmethod
    def derived(cls) -> dict[str, str]:
        """{setting: the field it follows when left at None} (see setting(derived_from=))."""
        return {f.name: f.metadata["derived_from"] for f in dataclasses.fields(cls)
                if f.metadata.get("derived_from")}

    @classmethod
    def acts_with(cls) -> dict[str, tuple[str, Any]]:
        """{setting: (field, value) it acts with} (see setting(acts_with=))."""
        return {f.name: f.metadata["acts_with"] for f in dataclasses.fields(cls) if f.metadata.get("acts_with")}

    @classmethod
    def none_texts(cls) -> dict[str, str]:
        """{setting: the word that gives it None} (see setting(none_text=))."""
        return {f.name: f.metadata["none_text"] for f in dataclasses.fields(cls) if f.metadata.get("none_text")}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict, source: str | None = None, flags: Collection[str] = ()):
        """cls(**d), refusing keys the class does not have (a typo must not be silently ignored).
        `flags`: the keys of `d` given as command-line flags; an error names where the values
        it is about came from: the flags (`--n_embd 33`), else `source` (`preset tiny`)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source or cls.LABEL}: expected a mapping of settings, got {d!r}")
        known = cls.field_names()
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(f"{source or cls.LABEL}: unknown {cls.LABEL.split()[0]} key(s) {unknown}; "
                              f"known: {sorted(known)}")
        try:
            return cls(**d)
        except SettingError as e:
            where = cls._origin(e.fields, d, source, flags)
            # A rule's message that names its flags itself (`--prompt and --prompt_file ...`)
            # is not prefixed with them again.
            raise ConfigError(f"{where}: {e}" if where and not str(e).startswith("--") else str(e)) from None
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None

    @classmethod
    def _origin(cls, fields: tuple[str, ...], d: dict, source: str | None, flags: Collection[str]) -> str | None:
        """Where the values of `fields` came from: `--n_embd 33 --n_head 2`, `preset tiny`, or
        `--n_embd 33 with n_head 2 from preset tiny`."""
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        given = [as_flag(flag_name(by_name[k]), d[k]) for k in fields if k in flags and k in d]
        if not given:
            return source
        rest = [f"{k} {d[k]!r}" for k in fields if k not in flags and k in d]
        others = ([f"{' and '.join(rest)} from {source or 'the settings'}"] if rest else []) + \
                 [f"the default {k}" for k in fields if k not in d]
        return " ".join(given) + (f" with {' and '.join(others)}" if others else "")

    @classmethod
    def from_flags(cls, flags: dict, **fixed):
        """An instance from parsed command-line flags (keyed by flag name); flags left at
        None keep the field's default."""
        values = {}
        for f in dataclasses.fields(cls):
            value = flags.get(flag_name(f), flags.get(f.name))
            if value is not None:
                values[f.name] = value
        # (from_dict: a bad value's error names its flag, `--temperature nan: ...`)
        return cls.from_dict({**values, **fixed}, flags=set(values) - set(fixed))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def recorded(self) -> dict:
        """The settings that decide the output bytes, under their recorded (flag) names."""
        return {flag_name(f): getattr(self, f.name) for f in dataclasses.fields(self) if is_recorded(f)}


def as_flag(name: str, value: Any, whole: bool = False) -> str:
    """A setting as a command line gives it (booleans are --x / --no_x); a long value shortened
    unless `whole` (a flag the message tells the user to pass)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no_{name}"
    if isinstance(value, (list, tuple)):  # a flag given several times
        return " ".join(f"--{name} {v}" for v in value)
    text = str(value)
    if whole and "\n" not in text:
        return f"--{name} {shlex.quote(text)}"
    if len(text) > 60 or "\n" in text:  # (a --prompt): its start, on one line
        text = repr(text[:40]) + "..."
    return f"--{name} {text}"


def flags_differ(name: str, value: bool, other: bool, whose: str, where: str = "") -> str:
    """A boolean setting that differs from `whose`, both as the flag a user types, not as Python's
    True and False (`--qk_norm False`: no such flag): '--no_qk_norm (rank 0: --qk_norm)'.
    `where`: where `value` came from, said after its flag (' in --config_file c.json')."""
    return f"{as_flag(name, value)}{where} ({whose}: {as_flag(name, other)})"


def device_setting() -> Any:
    """The `device` field of training, evaluation and generation."""
    return setting("auto", "auto (cuda when available, else mps on Apple silicon, else cpu), cpu, cuda, "
                           "cuda:1 ..., mps")


SEED_MAX = 2**63 - 1  # what every seeded generator takes: torch.manual_seed (< 2**64), numpy's (>= 0)


def seed_setting(help: str) -> Any:
    """A `seed` field (training, the val split, generation): one type and range for every
    command, so a seed that one of torch's or numpy's generators refuses is a flag error."""
    return setting(1337, help, min=0, max=SEED_MAX)


def workers_setting() -> Any:
    """The `workers` field of the parallel steps: speed only, never the bytes."""
    return setting(None, "Worker processes (default: all cores). The output is the same whatever the number.",
                   min=1, output=False, show_default="all cores")


ENGINES = ("local", "ray")


def engine_setting() -> Any:
    """The `engine` field of the parallel steps, beside `workers`: where their tasks run,
    never the bytes."""
    return setting("local", "Where the work units run: local (worker processes on this machine) or ray (Ray "
                            "tasks on the cluster of --ray_address; needs pip install 'mypt[ray]', and the inputs "
                            "and the output on storage every node sees at the same path). The output is the same "
                            "bytes either way.", choices=ENGINES, output=False)


def ray_address_setting() -> Any:
    """The `ray_address` field of the parallel steps (used with engine ray)."""
    return setting(None, "With --engine ray: the cluster to run on, HOST:PORT of its head (what `ray start --head` "
                         "prints), or auto (the cluster RAY_ADDRESS names or this machine runs). Default: a local "
                         "Ray started for the run with --workers CPUs, stopped after.", output=False,
                   show_default="a local Ray")
