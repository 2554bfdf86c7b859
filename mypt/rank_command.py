"""The class of the commands that train (`mypt train`, the train stage): under torchrun, a
rank that fails before it joined the others tells them why. They wait for every rank before
forming the process group (mypt.distributed), up to 30 minutes; run_training tells them of its
own failures, this of what comes before it: a flag click refuses (`--max_iters abc`), a setting
or path the command refuses before the run is built. Apart from mypt.options so that only the
training commands depend on mypt.distributed (the data stages' DVC deps stay theirs).

OneProcessCommand: the commands that run in one process (eval, export-hf) refuse to run as
several under torchrun, said once a node, not once a rank."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from mypt.options import MyptCommand
from mypt.signals import TORCHRUN_ENV, stop_said_here, stops_said_once


class RankCommand(MyptCommand):
    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        from mypt.signals import watch_torchrun

        watch_torchrun()  # (first: torchrun's end, from here on, stops this rank; see mypt.signals)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # a flag click refuses (not --help's exit)
            _tell_other_ranks(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        with stops_said_once():  # (a SIGTERM or Ctrl-C before training: its line once, not once a rank)
            try:
                return super().invoke(ctx)  # (mypt's errors come out as click's, with their message)
            except (click.exceptions.Exit, click.Abort):
                raise
            except Exception as e:
                _tell_other_ranks(e)
                raise


def _tell_other_ranks(error: Exception) -> None:
    """Under torchrun only (no torch import elsewhere). A click error as click prints it, with
    the flag it is about."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # (torchrun's agent: its other checks there)
        from mypt.distributed import tell_ranks_start_failed

        if isinstance(error, click.ClickException):
            error = click.ClickException(error.format_message())
        tell_ranks_start_failed(error)


class OneProcessCommand(MyptCommand):
    """A command of one process (eval, export-hf), refused under torchrun with more than one: each
    rank did the same work, into the same output (export-hf's ranks raced for --out_dir's lock: the
    loser's error silenced, the winner stopped by torchrun, the cause said nowhere). Its errors
    (that refusal, a flag click refuses) are said by each node's local rank 0 (stop_said_here);
    the other ranks exit with the same status and say nothing (8 ranks said each error 8 times).
    A stop by a signal: once too (stops_said_once)."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # a flag click refuses (not --help's exit)
            _leave_quietly(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        with stops_said_once():
            try:
                processes = os.environ.get("WORLD_SIZE", "1") if os.environ.get(TORCHRUN_ENV) else "1"
                if processes != "1":
                    raise click.ClickException(
                        f"mypt {ctx.info_name} runs in one process, and torchrun started {processes} (WORLD_SIZE): "
                        f"each would do the same work into the same output; run `mypt {ctx.info_name}` alone, "
                        "without torchrun")
                return super().invoke(ctx)  # (mypt's errors come out as click's, with their message)
            except click.ClickException as e:
                _leave_quietly(e)
                raise


def _leave_quietly(error: click.ClickException) -> None:
    """Exit with `error`'s status, unsaid, on a rank that leaves the saying to another. Under
    torchrun only, whose ranks are known to share a node's local rank 0: a RANK set by anything
    else (another launcher, a variable left over) must not silence the only process there is."""
    if os.environ.get(TORCHRUN_ENV) and not stop_said_here():
        sys.exit(error.exit_code)
