"""SIGTERM during a pytest session stops the stacks the fixtures hold (tests/sigterm_stops.py with
mqttlb.stack.ephemeral's signal block).

A session in a subprocess holds stand-in stacks the way the live fixtures do -- a module-scope one, then a
session-scope one opened inside it, which outlives it -- and SIGTERMs itself in a test of the next module,
which holds a module-scope one of its own: the session ends at once with status 143 (no later test runs)
and every stand-in's ``finally`` has run.  (Before: a stack's block turned SIGTERM into SystemExit, which
pytest counts as one failed test and goes on; and a module fixture's teardown could put SIGTERM's default
action back while the session's stack still ran, so SIGTERM killed pytest with that stack left running.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent

STAND_IN = '''
import contextlib
import os
from pathlib import Path

import pytest

from mqttlb.stack.ephemeral import _sigterm_exits

MARKS = Path(os.environ["MARKS"])


@contextlib.contextmanager
def stand_in(name):
    """What running_stack does around a stack: the SIGTERM block, then up ... finally down."""
    with _sigterm_exits():
        (MARKS / f"{name}.up").touch()
        try:
            yield
        finally:
            (MARKS / f"{name}.down").touch()


@pytest.fixture(scope="session")
def session_stack():
    with stand_in("session"):
        yield
'''

HEADER = '''
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import stand_in
'''

NEVER_RUNS = '''

def test_never_runs():
    (Path(os.environ["MARKS"]) / "after").touch()
'''


def module_with_stack(name: str, tests: str) -> str:
    """A test module's text: a module-scope fixture ``<name>_stack`` that holds the stand-in stack ``name``
    (marks ``<name>.up`` / ``<name>.down``), then ``tests`` (module text that may use os, signal, time, Path)."""
    fixture = f'''

@pytest.fixture(scope="module")
def {name}_stack():
    with stand_in("{name}"):
        yield

'''
    return HEADER + fixture + tests


MODULE_A = module_with_stack(
    "module",
    '''
def test_uses_both(module_stack, session_stack):
    pass
''',
)

MODULE_B = module_with_stack(
    "module_b",
    '''
def test_is_terminated(session_stack, module_b_stack):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
'''
    + NEVER_RUNS,
)

MODULES = {"test_a.py": MODULE_A, "test_b.py": MODULE_B}


# SIGTERM while a module's stack stops (its fixture's teardown): the stop is not cut short, then the
# session ends.
MODULE_STOPPING = '''
import os
import signal
import time
from pathlib import Path

import pytest

MARKS = Path(os.environ["MARKS"])


@pytest.fixture(scope="module")
def stopping_stack():
    yield
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    (MARKS / "stopping.down").touch()


def test_uses_it(stopping_stack, session_stack):
    pass
'''

MODULE_LATER = '''
import os
from pathlib import Path
'''
MODULE_LATER += NEVER_RUNS


def run_session(tmp_path: Path, modules: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], list[str], float]:
    """pytest with the plugin over ``modules`` (file name -> text) and the stand-in conftest, in a
    subprocess; returns (the run, the sorted marks the stand-ins left, seconds)."""
    session = tmp_path / "session"
    marks = tmp_path / "marks"
    session.mkdir()
    marks.mkdir()
    (session / "conftest.py").write_text(STAND_IN)
    for name, text in modules.items():
        (session / name).write_text(text)
    env = {**os.environ, "MARKS": str(marks), "PYTHONPATH": str(TESTS)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "sigterm_stops", "-p", "no:cacheprovider", *modules],
        cwd=session,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, sorted(p.name for p in marks.iterdir()), time.monotonic() - started


def test_sigterm_in_a_test_tears_down_every_stack_fixture(tmp_path: Path) -> None:
    result, marks, took = run_session(tmp_path, MODULES)
    assert result.returncode == 143, result.stdout + result.stderr
    assert "SIGTERM: stopping the session" in result.stdout + result.stderr
    assert marks == [
        "module.down",
        "module.up",
        "module_b.down",
        "module_b.up",
        "session.down",
        "session.up",
    ]
    assert took < 25, f"the session went on after SIGTERM ({took:.1f} s)"


def test_sigterm_while_a_stack_stops_lets_it_stop_then_ends_the_session(tmp_path: Path) -> None:
    result, marks, _took = run_session(tmp_path, {"test_c.py": MODULE_STOPPING, "test_d.py": MODULE_LATER})
    assert result.returncode == 143, result.stdout + result.stderr
    assert marks == ["session.down", "session.up", "stopping.down"]
