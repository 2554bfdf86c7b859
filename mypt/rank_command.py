"""The class of the commands that train (`mypt train`, the train stage): under torchrun, a
rank that fails before it joined the others tells them why. They wait for every rank before
forming the process group (mypt.distributed), up to 30 minutes; run_training tells them of its
own failures, this of what comes before it: a flag click refuses (`--max_iters abc`), a setting
or path the command refuses before the run is built. Apart from mypt.options so that only the
training commands depend on mypt.distributed (the data stages' DVC deps stay theirs).

SaidOnceCommand: the commands that do the same on every rank (eval, export-hf: nothing
shared between the ranks) say their error once, not once a rank."""

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


class SaidOnceCommand(MyptCommand):
    """Under torchrun, an error is said by each node's local rank 0 (stop_said_here); the other
    ranks, which hit the same one (the same checkpoint, the same flags), exit with its status
    and say nothing: `mypt eval` under torchrun on 8 GPUs printed its error 8 times. Each node
    still says it once, as an error of one node's own (its mount of --checkpoints_dir) is said
    nowhere else. A stop by a signal: once too (stops_said_once)."""

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # a flag click refuses (not --help's exit)
            _leave_quietly(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        with stops_said_once():
            try:
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
