"""Click helpers shared by the `mypt` commands and the stage scripts.

- `option`: click.option that also accepts the kebab-case spelling of a snake_case flag.
- `settings_options`: the options of settings dataclasses (mypt.settings), generated from
  their fields, so a default, a range or a help text is written once.
- `MyptCommand`: catches mypt's errors once and prints them on one line (exit 1).
- `GreedyCommand`: lets `--input_files a b c` take several values after one flag;
  `input_files_option` declares that flag, once for every command.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import select
import signal
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import click

from mypt.errors import MyptError, TrainingStopped, os_error_message
from mypt.signals import (TORCHRUN_ENV, Terminated, record_exit_status, sigterm_as_interrupt, stop_said_here,
                          stops_said_once)
from mypt.settings import _base_type, choices_of, flag_name, gives_none


def option(*decls: str, **kwargs):
    """click.option that also accepts the kebab-case spelling of every snake_case flag."""
    names = list(decls)
    for decl in decls:
        parts = [p.strip() for p in decl.split("/")]
        for i, part in enumerate(parts):
            if part.startswith("--") and "_" in part:
                kebab = part.replace("_", "-")
                names.append(f" /{kebab}" if i == 1 else kebab)
            if i == 1 and part.startswith("--no_") and "_" in part[5:]:
                # DVC's boolean_optional writes a false `qk_norm` as --no-qk_norm: the key as it is.
                names.append(f" /--no-{part[5:]}")
    return click.option(*names, **kwargs)


# YAML 1.1's booleans that YAML 1.2 (DVC's) reads as text, and spellings of true/false.
_YAML11_BOOLEANS = {"yes", "no", "y", "n", "on", "off", "true", "false"}


class _RecordsExitStatus:
    """click's main ends with the process's exit status (SystemExit; a KeyboardInterrupt or a
    traceback when something escaped it): recorded for an interpreter's exit that a second Ctrl-C
    cuts short (mypt.signals.record_exit_status). `mypt`'s group and the stage scripts' commands."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().main(*args, **kwargs)  # type: ignore[misc]
        except SystemExit as e:
            record_exit_status(e.code)
            raise
        except KeyboardInterrupt:
            record_exit_status(128 + signal.SIGINT)
            raise
        except BaseException:
            record_exit_status(1)
            raise


class MyptCommand(_RecordsExitStatus, click.Command):
    """A command whose user-caused errors (MyptError) and environment errors (OSError: disk
    full, read-only, permissions) print as one line, exit status 1.

    A command of one process (all but the training ones: `one_process` false, mypt.rank_command)
    refuses to run as several under torchrun: each rank did the same work into the same output
    (export-hf's or prepare-dataset's ranks raced for the output's lock, the loser's error was
    said, torchrun stopped the winner: nothing written). Its errors are said by each node's local
    rank 0 (stop_said_here); the other ranks exit with the same status, quietly (8 ranks said each
    error 8 times). A stop by a signal: once too (stops_said_once)."""

    one_process = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # -h as `mypt`'s subcommands take it (they inherit it from the group): the stage scripts too.
        kwargs["context_settings"] = {"help_option_names": ["-h", "--help"], **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # params.yaml's `strict: yes` reaches a stage as `--strict yes` (DVC reads YAML 1.2, where
        # yes is text, and passes only true/false as a bare switch): click would only say
        # "unexpected extra argument (yes)", naming neither the setting nor the fix.
        # Only when click refuses the word: after a switch it may be a positional argument
        # (`mypt verify-dataset --strict yes`, a dataset named yes).
        given = list(args)  # (click's parser consumes the list it is given)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            if "extra argument" not in e.format_message():
                raise
            switches = {name for p in self.params if isinstance(p, click.Option) and p.is_flag
                        for name in (*p.opts, *p.secondary_opts)}
            for flag, value in zip(given, given[1:]):
                if flag in switches and value.lower() in _YAML11_BOOLEANS:
                    raise click.UsageError(f"{flag} {value}: {flag} is a switch and takes no value (in params.yaml "
                                           f"write true or false: DVC passes {value!r} on as text)", ctx) from None
            # A list in params.yaml (`n_layer: [2, 3]`) reaches a stage as `--n_layer 2 3`.
            single = {name: p.multiple for p in self.params if isinstance(p, click.Option) and not p.is_flag
                      and p.nargs == 1 for name in p.opts}
            for i, flag in enumerate(given[:-2]):
                if flag in single and not given[i + 2].startswith("-"):
                    fix = f"give {flag} once per value" if single[flag] else \
                        "quote a value with spaces; in params.yaml, a list passes each item on"
                    raise click.UsageError(f"{flag} {given[i + 1]} {given[i + 2]}: {flag} takes one value ({fix})",
                                           ctx) from None
            raise

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # a flag click refuses (not --help's exit)
            if self.one_process:
                _leave_quietly(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        with stops_said_once():  # (a SIGTERM or Ctrl-C under torchrun: its line once, not once a rank)
            if not self.one_process:
                return self._invoke(ctx)
            try:
                processes = os.environ.get("WORLD_SIZE", "1") if os.environ.get(TORCHRUN_ENV) else "1"
                if processes != "1":
                    raise click.ClickException(
                        f"mypt {ctx.info_name} runs in one process, and torchrun started {processes} (WORLD_SIZE): "
                        f"each would do the same work into the same output; run `mypt {ctx.info_name}` alone, "
                        "without torchrun")
                return self._invoke(ctx)
            except click.ClickException as e:
                _leave_quietly(e)
                raise

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            with sigterm_as_interrupt():
                return super().invoke(ctx)
        except Terminated:
            click.echo("Error: stopped by SIGTERM before it finished: what it was building was removed, the outputs "
                       "are as they were or complete", err=True)
            sys.exit(128 + signal.SIGTERM)
        except TrainingStopped as e:
            if e.signalled and not stop_said_here():  # (the same line from each rank of a node: once)
                sys.exit(1)
            raise click.ClickException(str(e)) from None
        except MyptError as e:
            raise click.ClickException(str(e)) from None
        except BrokenPipeError as e:
            if not _stdout_gone():  # another pipe (a socket of Ray's, of torch.distributed's): say it
                raise click.ClickException(os_error_message(e)) from None
            # `mypt generate ... | head`: the reader has what it wanted. Quiet, with the status a Unix
            # tool killed by SIGPIPE has (141, as `yes | head` leaves in PIPESTATUS: a script's
            # `|| [ $? -eq 141 ]` under pipefail tells it from a failure); exit, not the signal
            # itself, so that exit handlers still run. stdout to /dev/null so that Python's flush
            # at exit does not complain in its turn.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + signal.SIGPIPE)
        except OSError as e:
            raise click.ClickException(os_error_message(e)) from None
        except RuntimeError as e:  # Path.resolve of a link that loops, before Python 3.13 (then ELOOP: above)
            loop = re.fullmatch(r"Symlink loop from '(.*)'", str(e))
            if loop is None:
                raise
            raise click.ClickException(os_error_message(OSError(errno.ELOOP, os.strerror(errno.ELOOP),
                                                                loop.group(1)))) from None


def _leave_quietly(error: click.ClickException) -> None:
    """Exit with `error`'s status, unsaid, on a rank that leaves the saying to another. Under
    torchrun only, whose ranks are known to share a node's local rank 0: a RANK set by anything
    else (another launcher, a variable left over) must not silence the only process there is."""
    if os.environ.get(TORCHRUN_ENV) and not stop_said_here():
        sys.exit(error.exit_code)


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on it)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (captured by a test runner)
        return False


class GreedyCommand(MyptCommand):
    """Lets `multiple=True` options take several values after one flag (`--x a b c`)."""

    greedy = ("--input_files", "--input-files")

    def parse_args(self, ctx, args):
        out, current = [], None
        for arg in args:
            if arg.startswith("-"):
                current = arg if arg in self.greedy else None
                out.append(arg)
            elif current and out[-1] != current:
                out += [current, arg]
            else:
                out.append(arg)
        return super().parse_args(ctx, out)


def input_files_option(formats: str) -> Callable:
    """The `--input_files` option of every command that reads a corpus (prepare-dataset,
    train-tokenizer, the clean stage), declared once: several values after one flag (with
    GreedyCommand). `formats` lists the input formats, generated from the readers' registry
    by the caller: this module does not import the readers, since every stage imports it."""
    return option("--input_files", multiple=True, required=True, metavar="PATH...",
                  help=f"Text files ({formats}), directories (searched recursively) or globs. Several allowed.")


class MyptGroup(_RecordsExitStatus, click.Group):
    """The `mypt` group. `@group.lazy_command(name)` registers a function that builds a
    subcommand when it is first asked for (run, or shown by --help): a command whose options
    need heavy modules (prepare-dataset's come from every data step's settings) costs the
    other commands nothing."""

    command_class = MyptCommand

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.builders: dict[str, Callable[[], click.Command]] = {}

    def lazy_command(self, name: str) -> Callable:
        def register(build: Callable[[], click.Command]) -> Callable[[], click.Command]:
            self.builders[name] = build
            return build

        return register

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.builders})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.builders:
            self.add_command(self.builders[name](), name)
        return super().get_command(ctx, name)


class CheckedType(click.ParamType):
    """A flag checked by its setting's `check` (a user error becomes click's usage error,
    exit status 2, like a bad choice)."""

    def __init__(self, check: Callable[[Any], Any], metavar: str | None, field: dataclasses.Field):
        self.check, self.name, self.field = check, metavar or "TEXT", field

    def get_metavar(self, param, ctx=None) -> str:
        return self.name

    def convert(self, value, param, ctx):
        if gives_none(self.field, value):  # (kept as the word: None would read as an unset flag)
            return self.field.metadata["none_text"]
        try:
            checked = self.check(value)
        except MyptError as e:
            self.fail(str(e), param, ctx)
        refused = _not_finite_in_range(self.field, checked)
        if refused:
            self.fail(refused, param, ctx)
        return checked


def _not_finite_in_range(field: dataclasses.Field, value: Any) -> str | None:
    """Why a NaN or an infinity given to a bounded setting is refused, else None. Every comparison
    with NaN is false, and inf passes a range with no upper bound (--learning_rate inf): both
    passed click's range check and reached the settings' finite rule, an error of another style
    (exit status 1, after the vocabulary loaded) than any other value out of range (click's usage
    error, exit status 2)."""
    m = field.metadata
    lo, hi = m.get("min"), m.get("max")
    if not isinstance(value, float) or math.isfinite(value) or (lo is None and hi is None):
        return None
    below, above = ("<" if m.get("min_open") else "<="), ("<" if m.get("max_open") else "<=")
    bounds = f"{lo}{below}x{above}{hi}" if lo is not None and hi is not None \
        else f"x{below.replace('<', '>')}{lo}" if lo is not None else f"x{above}{hi}"
    return f"{value} is not a finite number in the range {bounds}"


class FloatInRange(click.FloatRange):
    """click's FloatRange with NaN and the infinities refused as values out of the range
    (_not_finite_in_range)."""

    def __init__(self, field: dataclasses.Field, **bounds):
        super().__init__(**bounds)
        self.field = field

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        refused = _not_finite_in_range(self.field, number)
        if refused:
            self.fail(refused, param, ctx)
        return number


class WholeNumber(click.IntRange):
    """An integer flag that also takes a whole number written as a float: params.yaml's `1e5`
    (a float in DVC's YAML 1.2) reaches a stage as `--max_iters 100000.0`. A fraction is refused
    by name."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                int(value)
            except ValueError:
                try:
                    number = float(value)
                except ValueError:
                    number = None
                if number is not None:
                    if not number.is_integer():
                        self.fail(f"{value!r} is not a whole number", param, ctx)
                    value = int(number)
        return super().convert(value, param, ctx)


def _click_type(f: dataclasses.Field, base: type) -> Any:
    m = f.metadata
    if m.get("check") is not None:
        return CheckedType(m["check"], m.get("metavar"), f)
    if choices_of(f) is not None:
        return click.Choice(choices_of(f))
    bounds = {k: m.get(k) for k in ("min", "max")}
    if base is int:
        return WholeNumber(**bounds, min_open=m["min_open"], max_open=m["max_open"])
    if base is float:
        return FloatInRange(f, **bounds, min_open=m["min_open"], max_open=m["max_open"]) \
            if any(v is not None for v in bounds.values()) else float
    if base is Path:
        exists = m.get("exists")
        return click.Path(exists=exists is not None, file_okay=exists != "dir", dir_okay=exists != "file",
                          path_type=Path)
    return base


def settings_options(*classes: type, use_flag_names: bool = False, defaults: bool = True,
                     skip: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one click option per field of `classes` (a name shared by several
    classes, like `workers`, becomes one option); a bool field is `--x/--no_x`.

    use_flag_names: name options by the fields' `flag` metadata (prepare-dataset's spelling).
    defaults=False: every option defaults to None, meaning "the value from elsewhere"
    (mypt train: the config file's); the field's own default is shown in the help.
    """
    opts, seen = [], set()
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            name = flag_name(f) if use_flag_names else f.name
            if name in seen or f.name in skip or name in skip:
                continue
            seen.add(name)
            m = f.metadata
            base, _ = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = m.get("help", "")
            kwargs: dict = {"help": help_text, "required": m.get("required", False)}
            if defaults:
                kwargs.update(default=default, show_default=m.get("show_default", True))
            else:
                kwargs["default"] = None
                if default is not None:
                    kwargs["help"] = f"{help_text} [default: the config file's, else {default}]"
            if base is bool:
                opts.append(option(f"--{name}/--no_{name}", **kwargs))
                continue
            if typing.get_origin(base) is tuple:  # given several times: --stop a --stop b
                kwargs.update(multiple=True, type=str, show_default=False)
                opts.append(option(f"--{name}", **kwargs))
                continue
            kwargs["type"] = _click_type(f, base)
            opts.append(option(f"--{name}", **kwargs))

    def decorate(func: Callable) -> Callable:
        for opt in reversed(opts):
            func = opt(func)
        return func

    return decorate

