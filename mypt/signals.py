"""SIGTERM and SIGINT while training, and under torchrun the end of torchrun itself: a request
to stop at the end of the step in flight. Elsewhere (stops_held) the two wait the moments an
output takes its place, or while a pool's workers start. Before a command's main, while its modules
load, a Ctrl-C says Aborted! (ctrl_c_says_aborted). Once a command has ended, a first Ctrl-C while
Python exits is ignored, a second ends it at once (quiet_exit)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Iterator

# torchrun sets it in its ranks' environment: their parent is torchrun's agent.
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"
PARENT_GONE = "torchrun ended (its process was killed)"
# What StopSignals.received may say, numbered for the ranks' vote (mypt.train: 1 + the index; the
# highest wins), so that a rank that did not see it itself can say what stopped the run.
STOP_REASONS = ("SIGINT", "SIGTERM", PARENT_GONE)


class _ParentWatch:
    """Under torchrun, a rank's watch of torchrun (its parent), from the rank's start. When
    torchrun is gone (a kill -9 of it, an OOM kill), its ranks trained on, orphans, to the end
    of the run (or, not yet training, waited up to 30 minutes on its store), with nobody left
    to stop them but a kill of each, which saves nothing. Now: while training, a request to
    stop like a SIGTERM's (the step in flight ends, a checkpoint is written; the ranks of other
    nodes stop at the same step, as for a signal on one rank); before, the rank exits at once,
    with one line (nothing of the run is written yet); after, nothing (the run ends itself).
    (Only a change of parent is torchrun gone: where torchrun is a container's process 1, its
    ranks' parent is 1 from the start.)"""

    WATCH_S = 1.0  # how often a rank looks at its parent

    def __init__(self, parent: int) -> None:
        self.parent, self.stops, self.trained, self.gone = parent, None, False, False

    def run(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(self.WATCH_S)
        self.gone = True
        stops = self.stops
        if stops is not None:
            if stops.received is None:
                stops.received = PARENT_GONE
        elif not self.trained:
            sys.stderr.write(f"Error: {PARENT_GONE} before training began: rank {os.environ.get('RANK', '?')} "
                             "stops, no checkpoint written; run the command again\n")
            sys.stderr.flush()
            os._exit(1)


_watch: _ParentWatch | None = None


def watch_torchrun() -> None:
    """Start this process's watch of torchrun (_ParentWatch), under torchrun only, once: as a
    rank starts (mypt.rank_command), or at the latest as fit's loop does."""
    global _watch
    if _watch is None and os.environ.get(TORCHRUN_ENV):
        _watch = _ParentWatch(os.getppid())
        threading.Thread(target=_watch.run, name="mypt-torchrun-watch", daemon=True).start()


class StopSignals:
    """While training runs, SIGTERM and SIGINT only ask it to stop: the step in flight ends,
    a checkpoint is written and fit raises TrainingStopped. A Ctrl-C (SIGINT) after that acts
    at once (the handler that was there before); a second SIGTERM does not: schedulers (SLURM's
    scancel and time limit, systemd) signal every process of a job, and torchrun forwards its
    own to each rank, so a rank gets two for one stop (their SIGKILL follows if it takes too
    long). A signal the process ignores stays ignored. Handlers can
    only be set in the main thread; elsewhere signals keep theirs. The previous handlers come
    back on exit. Under torchrun, torchrun's end asks the same (_ParentWatch)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        watch_torchrun()
        if _watch is not None:
            _watch.stops = self
            if _watch.gone:
                self.received = PARENT_GONE
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
        # Ctrl-C during the stop: the user will not wait. A further one while its line is said
        # is ignored (a third Ctrl-C cut the line short, or said it twice); then the handler
        # that was there before takes this one (KeyboardInterrupt: click's Aborted!).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if stop_said_here():  # (under torchrun, once)
            sys.stderr.write(f"\nSIGINT after {self.received}: stopping at once, without a checkpoint of "
                             "the step in flight; a checkpoint saved before is kept (continue it with --resume)\n")
            sys.stderr.flush()
        self.__exit__()
        signal.raise_signal(signum)

    def __exit__(self, *exc) -> None:
        if _watch is not None:
            _watch.stops, _watch.trained = None, True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}


@contextlib.contextmanager
def stops_held(mask: bool = False) -> Iterator[None]:
    """Ctrl-C and SIGTERM held back to the block's end, then delivered (not lost), as the
    handlers put back take them: a signal ignored stays ignored. In the main thread only, which
    alone may set handlers (nor over a handler set outside Python, which could not be put
    back). With `mask` they are also blocked in this thread for the block, and for good in the
    processes started inside it (a signal mask is inherited): a pool's workers (parallel)."""
    main = threading.current_thread() is threading.main_thread()
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM) if main and signal.getsignal(sig) is not None}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if mask else None
    try:
        yield
    finally:
        try:
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # one held back in this thread: to the stand-in
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)


def ctrl_c_says_aborted() -> None:
    """Called first by a command's entry point (each stage script; mypt.cli, the `mypt` console
    script's, through ctrl_c_says_aborted_while), before the imports that take its first 0.1 to
    1 s (torch's, numpy's): a Ctrl-C there, before click's main can take it, would print a
    traceback of whatever import it cut. It says click's Aborted! instead; the process still ends
    as an uncaught Ctrl-C ends Python (killed by SIGINT:
    130 in a shell, which stops a script that ran it). Only a KeyboardInterrupt that nothing
    caught reaches sys.excepthook: once click's main runs, click takes it (Aborted!, status 1).
    Every other exception goes to the hook that was there."""
    if sys.excepthook is not _say_aborted:
        _previous_hook["hook"] = sys.excepthook
        sys.excepthook = _say_aborted


_previous_hook: dict = {}


@contextlib.contextmanager
def ctrl_c_says_aborted_while() -> Iterator[None]:
    """ctrl_c_says_aborted for the imports of a module that is a command's entry point and a
    library too (mypt.cli: the `mypt` console script imports it, and so may anyone): the hook
    only while the block runs, so that importing the module leaves the interpreter's hooks as
    they were. A Ctrl-C that ends the block leaves it in place, for the interpreter's end to say
    Aborted!. The few instructions between the block's end and click's main are not covered."""
    previous = sys.excepthook
    ctrl_c_says_aborted()
    interrupted = False
    try:
        yield
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if not interrupted and sys.excepthook is _say_aborted:
            sys.excepthook = previous


def _say_aborted(kind: type[BaseException], value: BaseException, tb) -> None:
    if not issubclass(kind, KeyboardInterrupt):
        _previous_hook["hook"](kind, value, tb)
        return
    try:
        sys.stderr.write("\nAborted!\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # (stderr closed or gone: nothing to say it on)
        pass


def stop_said_here() -> bool:
    """Whether this process says what stopped it, where every rank stops for the same signal: under
    torchrun, its node's local rank 0 alone (torchrun forwards a SIGTERM or Ctrl-C it gets to each
    rank of its node: each printed the same line, then torchrun its traceback); else rank 0."""
    if os.environ.get(TORCHRUN_ENV):
        return os.environ.get("LOCAL_RANK", "0") == "0"
    return os.environ.get("RANK", "0") == "0"


@contextlib.contextmanager
def stops_said_once() -> Iterator[None]:
    """Under torchrun, on a rank that leaves the saying to local rank 0 (stop_said_here): SIGTERM
    and SIGINT, where at Python's defaults, end the rank quietly (SystemExit, status 128 + the
    signal; finally blocks still clean up), while local rank 0 says it once (Terminated, Ctrl-C's
    KeyboardInterrupt). sigterm_as_interrupt leaves the handler set here in place; training's own
    stop takes both over while it trains (StopSignals). In the main thread only."""
    if not os.environ.get(TORCHRUN_ENV) or stop_said_here() or \
            threading.current_thread() is not threading.main_thread():
        yield
        return

    left = []

    def leave(signum: int, frame) -> None:
        if left:  # (a copy: see sigterm_as_interrupt)
            return
        left.append(signum)
        raise SystemExit(128 + signum)

    defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
    previous = {sig: signal.signal(sig, leave) for sig, default in defaults.items() if signal.getsignal(sig) is default}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's, `kill`), raised as Ctrl-C is: the same clean-up runs (a work
    directory removed, workers stopped), where the default action ended the process at once,
    silently, leaving a prepare-dataset's `.NAME.work` the size of the corpus."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises Terminated while a command runs (in the main thread, over Python's
    default only: one the process was started ignoring stays ignored; training's own stop,
    a checkpoint first, takes it over while it trains). And once a command ran, a first Ctrl-C
    at the interpreter's exit is ignored, a second ends it at once (quiet_exit) with the status
    the command's main recorded (record_exit_status)."""
    quiet_exit()  # (here too, should the end's call below be cut short by a Ctrl-C)
    try:
        with _sigterm_raises():
            yield
    finally:
        quiet_exit()  # (last registered, first run)


def record_exit_status(code: object) -> None:
    """The status the process exits with (a SystemExit's code: None is 0, a text 1), recorded by
    the command's main as it ends, after click said its last line: a second Ctrl-C at exit ends
    the process with it (_ctrl_c_at_exit). Recorded there, not where the command returns: a
    Ctrl-C in between (click's error print, a context's close) changes the status."""
    _at_exit["status"] = 0 if code is None else code if isinstance(code, int) else 1


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    stopped = []

    def stop(*_) -> None:
        # A copy of a stop under way is ignored while it unwinds: torchrun forwards a signal to
        # ranks that the group's reached already, and a second Terminated in the clean-up was a
        # second line or a traceback.
        if not stopped:
            stopped.append(True)
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# The interpreter's exit after a command: "registered", quiet_exit's registrations; "ctrl_c", the
# Ctrl-Cs it got; "status", the command's.
_at_exit: dict = {"registered": 0}


def quiet_exit() -> None:
    """From the start of the interpreter's exit, a first Ctrl-C is ignored (_exit_begins): the
    command has ended and said its last line (its output, its error, click's Aborted!). What runs
    then is Python's and the libraries' exit-time work: a Ctrl-C during torch's atexit handlers
    (the release of torch.library's registrations, dynamo's dump_compile_times importing
    tabulate) printed their traceback after mypt's line. A second ends the process at once
    (_ctrl_c_at_exit): a hang there (a thread that is never done, wandb's teardown) is not only
    for SIGTERM or kill to end. Registered with threading's exit functions, which run before
    Python joins the threads and before every atexit handler (and the last registered first): in
    the process that exits only, not in one that ran a command inside itself (a test's
    CliRunner), whose Ctrl-C stays its own. At most twice a process: a command's start, its end."""
    if _at_exit["registered"] >= 2:
        return
    _at_exit["registered"] += 1
    try:
        threading._register_atexit(_exit_begins)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # (another Python; the exit under way)
        atexit.register(_exit_begins)


def _exit_begins() -> None:
    if threading.current_thread() is not threading.main_thread() or "ctrl_c" in _at_exit:
        return
    _at_exit["ctrl_c"] = 0
    try:
        signal.signal(signal.SIGINT, _ctrl_c_at_exit)
    except KeyboardInterrupt:  # one that came just before, after the command's end: the first
        signal.signal(signal.SIGINT, _ctrl_c_at_exit)
        _at_exit["ctrl_c"] = 1


def _ctrl_c_at_exit(signum: int, frame) -> None:
    _at_exit["ctrl_c"] += 1
    if _at_exit["ctrl_c"] < 2:
        return
    for stream in (sys.stdout, sys.stderr):  # what the command said, not lost to os._exit
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    # The command's own status: it had ended, with its last line. (130, a Ctrl-C's in a shell,
    # where none was recorded: a command whose end was cut short.)
    os._exit(_at_exit.get("status", 128 + signal.SIGINT))


def _exit_ends() -> None:
    """After the atexit handlers, Python puts a handler of its own (_ctrl_c_at_exit) back to the
    default before the modules' teardown: a Ctrl-C there killed the process silently (status -2,
    130 in a shell: a command that had completed, or said Aborted! with status 1, lost its exit
    status). Ignored instead, as Python leaves it; registered as this module is imported, before
    the libraries a command imports: run after their atexit handlers (the last registered runs
    first)."""
    if "ctrl_c" in _at_exit and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


atexit.register(_exit_ends)
