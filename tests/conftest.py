"""Shared test set-up.

- ``KDU_NPROC=1``: the ``kdu-train`` commands the tests start run in one process (``--nproc auto`` is its
  default otherwise, ``knowledge_distill_util/engine/launch.py``); tests of ``--nproc`` pass it explicitly.
- Quiet OneFlow's start-up logging before any test imports it, and import the package first, so OneFlow's
  OpenBLAS loads the CPU's kernel set (``OPENBLAS_CORETYPE``, see ``knowledge_distill_util/_cpu.py``).
- Tests marked ``graph`` (they compile ``nn.Graph`` s) run each in a fresh Python process. OneFlow 0.9's
  graph runtime has a race (a segmentation fault in ``LazyJobStreamPolicy::DequeueNNGraph`` on a runtime
  thread) that kills about one process in a few hundred graph compilations, with built-in ops as well as
  with this package's kernels. A test whose process dies from a signal is run again, up to
  ``GRAPH_TEST_TRIES`` times in all; a test that fails an assertion or raises is never retried.
- The root logger's handlers and level are restored after every test: a command run in-process (its
  ``main()`` calls ``logging.basicConfig``) binds a handler to that test's captured stderr, which is closed
  once the test ends; left in place, it turns every later log line into a "Logging error" on stderr.
"""
import logging
import os
import subprocess
import sys

os.environ.setdefault("GLOG_minloglevel", "3")
os.environ.setdefault("KDU_NPROC", "1")  # kdu-train runs of the tests: one process unless --nproc says otherwise
if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: several OneFlow processes share the CPU cores
    os.environ.setdefault("ONEFLOW_VM_COMPUTE_ON_WORKER_THREAD", "0")  # the same values (tests/test_device.py)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # shared helpers (reference, gradcheck) for tests/*/

import pytest  # noqa: E402

# Before any test module imports oneflow: the package picks the CPU's OpenBLAS kernels (knowledge_distill_util/_cpu.py)
# and leaves OPENBLAS_CORETYPE set for the processes the tests start.
import knowledge_distill_util  # noqa: E402,F401

GRAPH_TEST_TRIES = 3
_CHILD = "KDU_GRAPH_TEST_CHILD"


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """Put back the root logger's handlers and level after the test (see the module docstring)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_retrying_signals(command, tries: int = GRAPH_TEST_TRIES, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True, **kwargs)``, run again (up to ``tries`` in
    all) only while the process is killed by a signal: for subprocesses that compile ``nn.Graph`` s."""
    for _ in range(tries):
        done = subprocess.run(command, capture_output=True, text=True, **kwargs)
        if done.returncode >= 0:
            return done
    return done


def pytest_pyfunc_call(pyfuncitem):
    """Run a ``graph`` test in a child pytest process (the child runs it the ordinary way)."""
    if pyfuncitem.get_closest_marker("graph") is None or os.environ.get(_CHILD):
        return None
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", pyfuncitem.nodeid]
    env = dict(os.environ, **{_CHILD: "1"})
    crashes = []
    for _ in range(GRAPH_TEST_TRIES):
        done = subprocess.run(command, cwd=str(pyfuncitem.config.rootpath), env=env,
                              capture_output=True, text=True, timeout=900)
        if done.returncode == 0:
            return True
        if done.returncode > 0:  # an ordinary failure: report it, never retry
            pytest.fail(f"{pyfuncitem.nodeid} failed in its own process:\n{done.stdout[-6000:]}", pytrace=False)
        crashes.append(-done.returncode)
    pytest.fail(f"{pyfuncitem.nodeid}: its process was killed by signals {crashes} in all {GRAPH_TEST_TRIES} "
                f"tries:\n{done.stderr[-3000:]}", pytrace=False)


def same_state(a, b):
    """Assert bit-identical tensors (dtype, shape, bytes) and the same Python types everywhere in two states."""
    import oneflow as flow

    if isinstance(a, flow.Tensor):
        assert isinstance(b, flow.Tensor) and a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)
        assert a.numpy().tobytes() == b.numpy().tobytes()
        return
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same_state(x, y)
    elif isinstance(a, float) and a != a:  # NaN
        assert b != b
    else:
        assert a == b and repr(a) == repr(b), (a, b)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any call of pickle.load(s) or flow.load fails the test."""
    import pickle

    import oneflow as flow

    def refuse(*args, **kwargs):
        raise AssertionError("pickle or flow.load was called")
    for module, name in [(pickle, "load"), (pickle, "loads"), (flow, "load")]:
        monkeypatch.setattr(module, name, refuse)


#: The words of :func:`word_corpus`.
CORPUS_WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


@pytest.fixture
def word_corpus(tmp_path):
    """``tmp_path/c.txt``: a pregeneration corpus of 6 documents of 5 sentences, each 7 words drawn from
    :data:`CORPUS_WORDS` (``random.Random(0)``) and `` .``, documents separated by a blank line; its path (str).
    Used by tests/cli/test_pregenerate.py and tests/data/test_pregenerate.py."""
    import random

    path = tmp_path / "c.txt"
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(6):
            for _ in range(5):
                out.write(" ".join(rng.choice(CORPUS_WORDS) for _ in range(7)) + " .\n")
            out.write("\n")
    return str(path)
