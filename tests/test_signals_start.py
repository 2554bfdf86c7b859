"""A Ctrl-C in a command's first moments, while its modules load, before click's main can take it."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from conftest import REPO

STAGES = sorted(p.name for p in (REPO / "stages").glob("*.py"))

# A command started as its entry point starts it (`python stages/NAME.py`, or the `mypt` console
# script's wrapper), with a Ctrl-C at the moment the module argv[1] is first imported: the same
# import every run, where a signal sent from outside lands wherever the start-up has got to.
CTRL_C_AT_IMPORT = '''
import os, runpy, signal, sys


module, sys.argv = sys.argv[1], sys.argv[2:]


class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            signal.raise_signal(signal.SIGINT)
        return None


sys.meta_path.insert(0, CtrlC())
if sys.argv[0] == "mypt":
    from mypt.cli import main

    sys.exit(main())
sys.path[0] = os.path.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.mark.parametrize("command, module", [*((f"stages/{name}", "mypt.options") for name in STAGES),
                                             ("stages/eval.py", "torch"), ("stages/clean.py", "click"),
                                             ("mypt", "mypt.options"), ("mypt", "click")])
def test_a_ctrl_c_while_a_command_starts_says_aborted_not_a_traceback(tmp_path, command, module):
    """A Ctrl-C while a stage's or `mypt`'s modules loaded (torch's import, a second of eval's
    start) printed a KeyboardInterrupt traceback through the import it cut. It says click's
    Aborted!, as one a moment later does, and the process ends as a Ctrl-C ends it (killed by
    SIGINT: 130 in a shell), having written nothing."""
    script = tmp_path / "ctrl_c_at_import.py"
    script.write_text(CTRL_C_AT_IMPORT)
    target = command if command == "mypt" else str(REPO / command)
    run = subprocess.run([sys.executable, str(script), module, target, "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert (run.returncode, run.stdout, run.stderr) == (-signal.SIGINT, "", "\nAborted!\n"), run.stderr
    assert [p.name for p in tmp_path.iterdir()] == [script.name]


def test_importing_mypt_as_a_library_leaves_the_interpreters_hooks_as_they_were():
    """mypt.cli, the `mypt` console script's module, set sys.excepthook when imported (its
    Aborted! for a Ctrl-C while the command's modules load): a program that imports mypt or
    mypt.cli as a library found its uncaught exceptions going through mypt's hook. The hook is
    set only while mypt.cli's own imports run (the test above: a Ctrl-C there still says Aborted!)."""
    check = ("import signal, sys, threading\n"
             "hooks = lambda: (sys.excepthook, threading.excepthook, sys.unraisablehook, "
             "signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))\n"
             "before = hooks()\n"
             "import mypt, mypt.cli\n"
             "assert mypt.cli.main is not None\n"
             "print([a is b for a, b in zip(before, hooks())], sys.excepthook is sys.__excepthook__)\n")
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (0, "[True, True, True, True, True] True\n"), run.stderr
