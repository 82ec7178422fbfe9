"""tests/conftest.py's graph-test children: one child pytest per module, a test the child died in is run
again (up to ``GRAPH_TEST_TRIES`` in all), an ordinary failure never is."""
import json
import os
import shutil
import signal
import subprocess
import sys
import types

import conftest

HERE = os.path.dirname(os.path.abspath(__file__))


def _fake_items(names, path="tests/test_x.py"):
    items = [types.SimpleNamespace(nodeid=f"{path}::{name}", path=path, get_closest_marker=lambda _: True)
             for name in names]
    session = types.SimpleNamespace(items=items)
    for item in items:
        item.session, item.config = session, types.SimpleNamespace(rootpath=HERE)
    return items


def _scripted_children(monkeypatch, script):
    """``subprocess.run`` replaced: child number i reports ``script[i]``, a list of (test name, outcome) with
    outcome passed/failed/skipped, ending optionally with ``("died", signal)`` (it dies in the next test it
    was given) or ``("exit", code)``; returns the test names each child was given."""
    given = []

    def run(command, env, **kwargs):
        nodeids = [arg for arg in command if "::" in arg]
        given.append([nodeid.split("::")[1] for nodeid in nodeids])
        code = 0
        with open(env[conftest._RESULTS], "a", encoding="utf-8") as stream:
            for name, outcome in script[len(given) - 1]:
                nodeid = f"tests/test_x.py::{name}"
                if name == "exit":
                    code = outcome
                    break
                if name == "died":  # in the next test given: its setup report is written, then no more
                    code = -outcome
                    break
                for when in ("setup", "call", "teardown"):
                    phase = outcome if when == "call" else "passed"
                    stream.write(json.dumps({"nodeid": nodeid, "when": when, "outcome": phase,
                                             "text": f"{name} {phase}"}) + "\n")
        return subprocess.CompletedProcess(command, code, "child stdout", "child stderr")

    monkeypatch.setattr(conftest.subprocess, "run", run)
    monkeypatch.setattr(conftest, "_graph_outcomes", {})
    return given


def test_one_child_runs_the_modules_graph_tests_and_a_crash_reruns_the_test_it_died_in(monkeypatch):
    given = _scripted_children(monkeypatch, [
        [("b", "failed"), ("died", signal.SIGSEGV)],   # dies in c
        [("c", "passed"), ("d", "skipped")],
    ])
    items = _fake_items("abcd")
    conftest._run_graph_children(items[1])                     # from b on: a ran before, elsewhere
    assert given == [["b", "c", "d"], ["c", "d"]]               # b's ordinary failure is not run again
    outcomes = conftest._graph_outcomes
    assert {name[-1]: outcome for name, (outcome, _) in outcomes.items()} == {
        "b": "failed", "c": "passed", "d": "skipped"}
    assert "b failed" in outcomes["tests/test_x.py::b"][1]


def test_a_test_its_child_dies_in_every_time_fails_after_the_allowed_tries(monkeypatch):
    died = [("a", "passed"), ("died", signal.SIGSEGV)]
    given = _scripted_children(monkeypatch, [died, [("died", signal.SIGSEGV)], [("died", signal.SIGKILL)],
                                             [("c", "passed")]])
    conftest._run_graph_children(_fake_items("abc")[0])
    assert given == [["a", "b", "c"], ["b", "c"], ["b", "c"], ["c"]]
    outcome, text = conftest._graph_outcomes["tests/test_x.py::b"]
    assert outcome == "failed" and "killed by signals [11, 11, 9] in all 3 tries" in text
    assert conftest._graph_outcomes["tests/test_x.py::c"][0] == "passed"


def test_a_child_dying_after_its_last_test_runs_them_all_again(monkeypatch):
    given = _scripted_children(monkeypatch, [[("a", "passed"), ("b", "failed"), ("exit", -11)],
                                             [("a", "passed"), ("b", "failed")]])
    conftest._run_graph_children(_fake_items("ab")[0])
    assert given == [["a", "b"], ["a", "b"]]
    assert [outcome for outcome, _ in conftest._graph_outcomes.values()] == ["passed", "failed"]


def test_a_test_the_child_did_not_run_fails_with_the_childs_output(monkeypatch):
    _scripted_children(monkeypatch, [[("a", "passed"), ("exit", 4)]])   # e.g. a usage error after a
    conftest._run_graph_children(_fake_items("ab")[0])
    outcome, text = conftest._graph_outcomes["tests/test_x.py::b"]
    assert outcome == "failed" and "was not run by its child pytest (exit 4):\nchild stdout" in text


def test_real_children_report_each_test_and_rerun_only_the_one_that_crashed(tmp_path):
    """End to end: a module of four graph tests; the child dies (SIGSEGV) in the second test once."""
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    graph: compiles nn.Graph\n")
    (tmp_path / "test_batch.py").write_text(
        "import os, signal\nimport pytest\npytestmark = pytest.mark.graph\n"
        "HERE = os.path.dirname(__file__)\n"
        "def _ran(name):\n    with open(os.path.join(HERE, name + '.runs'), 'a') as f:\n        f.write('x')\n"
        "def test_a():\n    _ran('a')\n"
        "def test_b():\n    _ran('b')\n    if open(os.path.join(HERE, 'b.runs')).read() == 'x':\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
        "def test_c():\n    _ran('c')\n    assert 1 == 2, 'an ordinary failure'\n"
        "def test_d():\n    _ran('d')\n    pytest.skip('not here')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    env.pop(conftest._CHILD, None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "1 failed, 2 passed, 1 skipped" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert "an ordinary failure" in done.stdout and "in its own process: " in done.stdout
    runs = {name: (tmp_path / f"{name}.runs").read_text() for name in "abcd"}
    assert runs == {"a": "x", "b": "xx", "c": "x", "d": "x"}


def test_modules_with_more_slow_tests_come_first_each_in_its_own_order():
    def item(module, name, slow=False):
        return types.SimpleNamespace(nodeid=f"{module}::{name}",
                                     get_closest_marker=lambda marker, slow=slow: slow if marker == "slow" else None)

    items = [item("a.py", "t1"), item("b.py", "t1", slow=True), item("b.py", "t2"), item("c.py", "t1"),
             item("d.py", "t1", slow=True), item("d.py", "t2", slow=True), item("d.py", "t3")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == ["d.py::t1", "d.py::t2", "d.py::t3", "b.py::t1", "b.py::t2", "a.py::t1",
                                         "c.py::t1"]


def test_the_longest_modules_come_first_then_those_with_slow_tests(monkeypatch):
    def item(module, name, slow=False):
        return types.SimpleNamespace(nodeid=f"{module}::{name}",
                                     get_closest_marker=lambda marker, slow=slow: slow if marker == "slow" else None)

    monkeypatch.setattr(conftest, "LONGEST_MODULES", {"c.py": 40, "a.py": 90})
    items = [item("a.py", "t1"), item("b.py", "t1", slow=True), item("c.py", "t1"), item("c.py", "t2"),
             item("d.py", "t1")]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == ["a.py::t1", "c.py::t1", "c.py::t2", "b.py::t1", "d.py::t1"]


def test_xdist_is_told_to_keep_the_collection_order():
    config = types.SimpleNamespace(option=types.SimpleNamespace(loadscopereorder=True))
    conftest.pytest_configure(config)
    assert config.option.loadscopereorder is False
    conftest.pytest_configure(types.SimpleNamespace(option=types.SimpleNamespace()))  # without xdist: nothing to do
