"""SIGTERM and SIGINT while training, and under torchrun the end of torchrun itself: a request
to stop at the end of the step in flight."""

from __future__ import annotations

import os
import signal
import sys
import threading

# torchrun sets it in its ranks' environment: their parent is torchrun's agent.
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"
PARENT_GONE = "torchrun ended (its process was killed)"


class StopSignals:
    """While training runs, SIGTERM and SIGINT only ask it to stop: the step in flight ends,
    a checkpoint is written and fit raises TrainingStopped. A Ctrl-C (SIGINT) after that acts
    at once (the handler that was there before); a second SIGTERM does not: schedulers (SLURM's
    scancel and time limit, systemd) signal every process of a job, and torchrun forwards its
    own to each rank, so a rank gets two for one stop (their SIGKILL follows if it takes too
    long). A signal the process ignores stays ignored. Handlers can
    only be set in the main thread; elsewhere signals keep theirs. The previous handlers come
    back on exit.

    Under torchrun a rank also stops when torchrun is gone (a kill -9 of it, an OOM kill): its
    ranks trained on, orphans, to the end of the run or to a collective's timeout, with nobody
    left to stop them but a kill of each, which saves nothing. A thread looks at the parent
    once a second (on a node's agent gone, every rank of the node sees it; the other nodes'
    ranks stop at the same step, as for a signal on one rank)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    WATCH_S = 1.0  # how often a rank under torchrun looks at its parent

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}
        self._watching: threading.Event | None = None

    def _watch_parent(self, parent: int, done: threading.Event) -> None:
        while not done.wait(self.WATCH_S):
            if os.getppid() != parent:
                if self.received is None:
                    self.received = PARENT_GONE
                return

    def __enter__(self) -> StopSignals:
        if os.environ.get(TORCHRUN_ENV):
            self._watching = threading.Event()
            threading.Thread(target=self._watch_parent, args=(os.getppid(), self._watching),
                             name="mypt-torchrun-watch", daemon=True).start()
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                # An ignored signal stays ignored: a job started in the background by a script
                # (`mypt train ... &`) ignores SIGINT, so a Ctrl-C meant for the shell's
                # foreground must not stop it.
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            return
        if signum != signal.SIGINT:  # another copy of the stop asked for (see above)
            return
        self.__exit__()  # Ctrl-C during the stop: the user will not wait
        if os.environ.get("RANK", "0") == "0":  # (under torchrun, once)
            sys.stderr.write(f"\nSIGINT after {self.received}: stopping at once, without a checkpoint of "
                             "the step in flight; a checkpoint saved before is kept (continue it with --resume)\n")
            sys.stderr.flush()
        signal.raise_signal(signum)

    def __exit__(self, *exc) -> None:
        if self._watching is not None:
            self._watching.set()
            self._watching = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}
