"""Shared test set-up.

- ``KDU_NPROC=1``: the ``kdu-train`` commands the tests start run in one process (``--nproc auto`` is its
  default otherwise, ``knowledge_distill_util/engine/launch.py``); tests of ``--nproc`` pass it explicitly.
- Quiet OneFlow's start-up logging before any test imports it, and import the package first, so OneFlow's
  OpenBLAS loads the CPU's kernel set (``OPENBLAS_CORETYPE``, see ``knowledge_distill_util/_cpu.py``).
- Tests marked ``graph`` (they compile ``nn.Graph`` s) run in a child pytest process, one child per test
  module: the first graph test of a module to run starts a child with every selected graph test of that
  module from it on (one start-up instead of one per test), and each test then reports the outcome its
  child recorded for it (``KDU_GRAPH_TEST_RESULTS``: one JSON line per phase report). OneFlow 0.9's
  graph runtime has a race (a segmentation fault in ``LazyJobStreamPolicy::DequeueNNGraph`` on a runtime
  thread) that kills about one process in a few hundred graph compilations, with built-in ops as well as
  with this package's kernels. A test whose child dies from a signal while it runs is run again (with the
  module's tests that had not run yet, in a new child), up to ``GRAPH_TEST_TRIES`` times in all; a child
  that dies from a signal after its last test runs all of its tests again (the same limit); a test that
  fails an assertion or raises is never retried. The batching assumes a module's tests run in one process
  (no xdist, or ``--dist loadfile`` as in the README); split across xdist workers, a test may run twice.
- Modules run longest first: the modules of :data:`LONGEST_MODULES` lead the collection, longest first, then
  those with the most ``slow`` tests (the order is otherwise kept), so that under ``-n 3 --dist loadfile`` no
  long module is handed out last to run alone at the end while the other workers have nothing left
  (``tests/training/test_distributed_training.py`` takes about 4 of the suite's 7 minutes of one worker).
  pytest-xdist would hand out the modules with the most tests first instead (its ``--loadscope-reorder``, on
  by default): :func:`pytest_configure` turns that off.
- The root logger's handlers and level are restored after every test: a command run in-process (its
  ``main()`` calls ``logging.basicConfig``) binds a handler to that test's captured stderr, which is closed
  once the test ends; left in place, it turns every later log line into a "Logging error" on stderr.
"""
import collections
import json
import logging
import os
import subprocess
import sys
import tempfile

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
#: Seconds one xdist worker spent in each of the longest modules (``-n 3``, 2026-12-06; the others took less
#: than 30 s): the order in which they are handed out (see the module docstring), not a limit.
LONGEST_MODULES = {
    "tests/training/test_distributed_training.py": 250, "tests/training/test_run.py": 70,
    "tests/compat/test_models.py": 60, "tests/test_benchmark_smoke.py": 50, "tests/training/test_compression.py": 45,
    "tests/training/test_faults.py": 45, "tests/training/test_trainer.py": 35, "tests/engine/test_teacher_cache.py": 35,
    "tests/test_packaging.py": 35, "tests/training/test_interrupt.py": 30, "tests/training/test_stage_configs.py": 30,
    "tests/data/test_ofrecord.py": 30, "tests/test_dp_smoke.py": 30,
}
_CHILD = "KDU_GRAPH_TEST_CHILD"
_RESULTS = "KDU_GRAPH_TEST_RESULTS"  # the child's report file (JSON lines)
_graph_outcomes = {}  # node id -> (outcome, text) recorded by a child, until that test reports it


def _module(item) -> str:
    return item.nodeid.split("::")[0]


def pytest_configure(config):
    """Under pytest-xdist, hand the modules out in the collection's order (see the module docstring)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """The modules of :data:`LONGEST_MODULES` first, longest first, then the modules with more ``slow`` tests;
    each module's tests and the ties in their order (see the module docstring)."""
    slow = collections.Counter(_module(item) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: (-LONGEST_MODULES.get(_module(item), 0), -slow[_module(item)]))  # a stable sort


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


def pytest_runtest_logreport(report):
    """In a graph child (``KDU_GRAPH_TEST_RESULTS`` set): append each phase's report as one JSON line."""
    path = os.environ.get(_RESULTS) if os.environ.get(_CHILD) else None
    if path:
        text = report.longreprtext + "".join(f"\n--- {name} ---\n{body}" for name, body in report.sections)
        with open(path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                                     "text": text[-6000:]}) + "\n")
            stream.flush()


def _finished_tests(path: str) -> dict:
    """Node id -> (outcome, text) of every test whose teardown the child reported (a test the child died in
    has no teardown report): ``failed`` if a phase failed, ``skipped`` if one skipped, else ``passed``."""
    reports = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                if line.endswith("\n"):  # a line cut by the child's death is no report
                    report = json.loads(line)
                    reports.setdefault(report["nodeid"], []).append(report)
    finished = {}
    for nodeid, phases in reports.items():
        if not any(phase["when"] == "teardown" for phase in phases):
            continue
        failed = [phase for phase in phases if phase["outcome"] == "failed"]
        skipped = [phase for phase in phases if phase["outcome"] == "skipped"]
        if failed:
            finished[nodeid] = ("failed", f"{failed[0]['when']}: {failed[0]['text']}")
        elif skipped:
            finished[nodeid] = ("skipped", skipped[0]["text"])
        else:
            finished[nodeid] = ("passed", "")
    return finished


def _run_graph_children(item) -> None:
    """Run ``item`` and the selected graph tests of its module after it in child pytest processes, recording
    each one's outcome in ``_graph_outcomes`` (the retry rules: the module docstring)."""
    items = item.session.items
    todo = [other.nodeid for other in items[items.index(item):]
            if other.path == item.path and other.get_closest_marker("graph") is not None
            and other.nodeid not in _graph_outcomes]
    crashes = {nodeid: [] for nodeid in todo}
    env = dict(os.environ, **{_CHILD: "1"})
    while todo:
        with tempfile.TemporaryDirectory(prefix="kdu-graph-tests-") as work:
            env[_RESULTS] = os.path.join(work, "reports.jsonl")
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", *todo],
                                  cwd=str(item.config.rootpath), env=env, capture_output=True, text=True,
                                  timeout=900 * len(todo))
            finished = _finished_tests(env[_RESULTS])
        rest = [nodeid for nodeid in todo if nodeid not in finished]
        if done.returncode >= 0:  # no crash: every outcome stands
            _graph_outcomes.update({nodeid: finished[nodeid] for nodeid in todo if nodeid in finished})
            for nodeid in rest:
                _graph_outcomes[nodeid] = ("failed", f"{nodeid} was not run by its child pytest (exit "
                                                     f"{done.returncode}):\n{done.stdout[-6000:]}")
            return
        signal_number = -done.returncode
        died_in = rest[:1] or todo  # the test it died in; after the last test: all of them again
        _graph_outcomes.update({nodeid: finished[nodeid] for nodeid in todo
                                if nodeid in finished and nodeid not in died_in})
        for nodeid in died_in:
            crashes[nodeid].append(signal_number)
            if len(crashes[nodeid]) >= GRAPH_TEST_TRIES:
                _graph_outcomes[nodeid] = ("failed", f"{nodeid}: its process was killed by signals {crashes[nodeid]} "
                                                     f"in all {GRAPH_TEST_TRIES} tries:\n{done.stderr[-3000:]}")
        todo = [nodeid for nodeid in todo if nodeid not in _graph_outcomes]


def pytest_pyfunc_call(pyfuncitem):
    """Report a ``graph`` test's outcome from its module's child pytest process (the child runs it the
    ordinary way)."""
    if pyfuncitem.get_closest_marker("graph") is None or os.environ.get(_CHILD):
        return None
    if pyfuncitem.nodeid not in _graph_outcomes:
        _run_graph_children(pyfuncitem)
    outcome, text = _graph_outcomes.pop(pyfuncitem.nodeid)
    if outcome == "skipped":
        pytest.skip(f"in its own process: {text}")
    if outcome != "passed":
        pytest.fail(f"{pyfuncitem.nodeid} failed in its own process:\n{text}", pytrace=False)
    return True


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
