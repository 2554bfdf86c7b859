"""The class of the commands that train (`mypt train`, the train stage): run as several ranks
(torchrun, or RANK and WORLD_SIZE set by another launcher), a rank that fails before it joined
the others tells them why. They wait for every rank before forming the process group
(mypt.distributed), up to 30 minutes; run_training tells them of its own failures, this of what
comes before it: a flag click refuses (`--max_iters abc`), a setting or path the command refuses
before the run is built. An error is said once a node, by the first of its ranks to stop with it
(mypt.distributed.says_error). Apart from mypt.options so that only the training commands depend
on mypt.distributed (the data stages' DVC deps stay theirs).

(Every other command runs in one process: refused as several under torchrun, mypt.options.)"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from mypt.options import MyptCommand


class RankCommand(MyptCommand):
    one_process = False  # (its ranks train together)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        from mypt.signals import watch_torchrun

        watch_torchrun()  # (first: torchrun's end, from here on, stops this rank; see mypt.signals)
        if _ranks() and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":  # (they meet in rank 0's store)
            from mypt.distributed import host_start_store

            host_start_store()
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as e:  # a flag click refuses (not --help's exit)
            _tell_other_ranks(e)
            raise

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super()._invoke(ctx)  # (mypt's errors come out as click's, with their message)
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            _tell_other_ranks(e)
            raise


def _ranks() -> bool:
    """Whether this process is one of several ranks (torch is imported only then)."""
    return os.environ.get("WORLD_SIZE", "1") != "1"


def _tell_other_ranks(error: Exception) -> None:
    """Where this process is one of several ranks only. A click error as click prints it, with
    the flag it is about; said once a node (mypt.distributed.says_error): the other ranks of the
    node that stop with it exit with its status, quietly."""
    if _ranks():  # (the ranks' start store, mypt.distributed)
        from mypt.distributed import says_error, tell_ranks_start_failed

        said = error.format_message() if isinstance(error, click.ClickException) else None
        tell_ranks_start_failed(error if said is None else click.ClickException(said))
        if said is not None and not says_error(said):
            sys.exit(error.exit_code)
