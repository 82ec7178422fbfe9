"""Teacher-output caching of the Distiller (engine/teacher_cache.py): the same losses as an uncached run, the
teacher run only while rows are new, and every refusal before the first step."""
import logging

import numpy as np
import oneflow as flow
import pytest
from oneflow.utils.data import DataLoader, Dataset

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.engine.parallel import Ranks
from knowledge_distill_util.engine.teacher_cache import TeacherCache

from .conftest import DictMLP, pair, random_data, tuple_loader

#: Every kind of teacher read: the logits (kl_div), a module-path match with a projection, an index match.
CONFIG = dict(temperature=2.0, hard_label_weight=0.5, intermediate_matches=[
    {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse", "proj": ["linear", 32, 128]},
    {"layer_S": 0, "layer_T": 1, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 32, 128]}])


def hidden_adaptor(batch, outputs):
    """The logits and, as ``hidden``, the MLP's first two layer outputs (read from its taps in the model)."""
    return {"logits": outputs[0], "hidden": list(outputs[1:])}


class HiddenMLP(DictMLP):
    """``features -> (logits, body.0 output, body.2 output)``."""

    def forward(self, features):
        hidden, x = [], features
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in (0, 2):
                hidden.append(x)
        return (x, *hidden)


class Rows(Dataset):
    """``{"features": x[i], "labels": y[i], key: i}`` (``key`` None: no id)."""

    def __init__(self, x, y, key="index", ids=None):
        self.x, self.y, self.key = x, y, key
        self.ids = np.arange(len(x)) if ids is None else ids

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        row = {"features": self.x[i], "labels": self.y[i]}
        if self.key is not None:
            row[self.key] = self.ids[i]
        return row


def _loader(rows=40, **kwargs):
    x, y = random_data(rows=rows, inputs=8, classes=3)
    return DataLoader(Rows(x, y, **kwargs), batch_size=16, shuffle=True)


def _run(tmp_path, name, calls=None, on_step=None, rows=40, **options):
    teacher, student = pair(inputs=8, classes=3, cls=HiddenMLP)
    if calls is not None:
        teacher.register_forward_hook(lambda module, inputs, output: calls.append(1))
    training = TrainingConfig(str(tmp_path / name), num_epochs=2, seed=0, **options)
    distiller = Distiller(teacher, student, DistillationConfig(**CONFIG), training, adaptor_T=hidden_adaptor,
                          adaptor_S=hidden_adaptor)
    key = "index" if options.get("cache_teacher_outputs", "off") != "off" else None  # the same rows and order
    return distiller, distiller.train(_loader(rows, key=key), on_step=on_step)


def _csv_without_seconds(out):
    rows = [line.split(",") for line in (out / "losses.csv").read_text().splitlines()]
    column = rows[0].index("seconds")
    return [row[:column] + row[column + 1:] for row in rows]


def test_float32_cache_gives_the_uncached_losses_and_runs_the_teacher_in_the_first_epoch_only(tmp_path, caplog):
    plain_calls, cached_calls = [], []
    _, plain = _run(tmp_path, "plain", plain_calls)
    with caplog.at_level(logging.INFO, logger="knowledge_distill_util.engine.teacher_cache"):
        distiller, cached = _run(tmp_path, "cached", cached_calls, cache_teacher_outputs="memory")
    assert plain["step"] == cached["step"] == list(range(1, 7))  # 40 rows in batches of 16: 3 batches per epoch
    for term in ("loss", "kl_div", "hard_label", "match0_hidden_mse", "match1_hidden_mse"):
        assert cached[term] == plain[term], term  # bit for bit
    assert _csv_without_seconds(tmp_path / "cached") == _csv_without_seconds(tmp_path / "plain")
    assert len(plain_calls) == 1 + 6 and len(cached_calls) == 1 + 3  # the probe, then every step / epoch 1 only
    lines = [r.getMessage() for r in caplog.records if "teacher-output cache" in r.getMessage()]
    assert lines == ["teacher-output cache after the first pass: 40 rows of logits [3], match0.0 [128], match1.0 "
                     "[128] (float32, 0.04 MB); the teacher ran on 3 batches and runs only for rows not cached"]
    assert set(distiller.evaluate(_loader())) == {"accuracy"}  # the ids are dropped in evaluation too


def test_float16_cache_stays_within_its_rounding(tmp_path):
    _, plain = _run(tmp_path, "plain")
    distiller, half = _run(tmp_path, "half", cache_teacher_outputs="memory", cache_dtype="float16")
    np.testing.assert_allclose(half["loss"], plain["loss"], rtol=2e-2)
    assert half["loss"][0] != plain["loss"][0]  # the rounded values from the first batch on (the teacher ran there)
    assert distiller.teacher_cache.summary().endswith("(float16, 0.02 MB)")  # 40 rows x 259 values x 2 bytes


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_resumed_run_starts_with_an_empty_cache_and_the_same_losses(tmp_path, dtype):
    _, plain = _run(tmp_path, "plain", **({} if dtype == "float32" else dict(cache_teacher_outputs="memory",
                                                                           cache_dtype=dtype)))

    def stop(step, total, terms):
        if step == 4:  # the first step of epoch 2, checkpointed
            raise KeyboardInterrupt

    cached = dict(cache_teacher_outputs="memory", checkpoint_every=2, cache_dtype=dtype)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "cached", on_step=stop, **cached)
    calls = []
    _, resumed = _run(tmp_path, "cached", calls, resume=True, **cached)
    assert resumed["step"] == [5, 6] and resumed["loss"] == plain["loss"][4:]
    assert len(calls) == 1 + 2  # the probe, then both batches again: nothing survives the interruption


def test_the_disk_cache_gives_the_same_losses_from_files_it_deletes_at_the_end(tmp_path):
    _, plain = _run(tmp_path, "plain")
    files = tmp_path / "disk" / ".kdu-teacher-cache" / "rank0"
    seen = []

    def look(step, total, terms):
        seen.append(sorted(p.name for p in files.iterdir()))
        assert np.load(files / "logits.npy", mmap_mode="r").shape == (40, 3)  # sized for the data set's rows

    _, disk = _run(tmp_path, "disk", on_step=look, cache_teacher_outputs="disk")
    assert disk["loss"] == plain["loss"]
    assert seen == [["logits.npy", "match0.0.npy", "match1.0.npy"]] * 6
    assert sorted(p.name for p in (tmp_path / "disk").iterdir()) == ["checkpoints", "losses.csv", "losses.png"]


def test_a_failed_disk_run_deletes_its_files_too(tmp_path):
    def stop(step, total, terms):
        assert (tmp_path / "disk" / ".kdu-teacher-cache" / "rank0" / "logits.npy").is_file()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "disk", on_step=stop, cache_teacher_outputs="disk")
    assert not (tmp_path / "disk" / ".kdu-teacher-cache").exists()


def test_the_disk_cache_grows_past_its_first_size(tmp_path):
    cache = TeacherCache("float16", "index", None, "cpu", str(tmp_path / "cache" / "rank0"))
    cache.capacity = 2
    for first in (0, 2, 4):  # 2 rows, then 4, then 8 rows of room: the files are replaced, the rows kept
        rows = np.arange(first, first + 2)
        cache.reads(rows, lambda: {"logits": flow.tensor(rows[:, None].astype(np.float32) * [1.0, 10.0])})
    assert np.load(tmp_path / "cache" / "rank0" / "logits.npy", mmap_mode="r").shape == (8, 2)
    got = cache.reads(np.array([5, 0, 3]), lambda: 1 / 0)["logits"]
    assert got.tolist() == [[5.0, 50.0], [0.0, 0.0], [3.0, 30.0]]
    cache.close()
    assert list(tmp_path.iterdir()) == []  # the directory, and its parent left empty


def test_a_disk_cache_that_wrote_nothing_leaves_the_directory_alone(tmp_path):
    """A run refused before its first store (e.g. by another run's lock) never deletes that run's files."""
    (tmp_path / "rank0").mkdir()
    (tmp_path / "rank0" / "logits.npy").write_bytes(b"the other run's")
    TeacherCache("float32", "index", None, "cpu", str(tmp_path / "rank0")).close()
    assert (tmp_path / "rank0" / "logits.npy").read_bytes() == b"the other run's"


def test_the_cache_reruns_the_teacher_for_a_batch_with_a_new_row():
    cache, runs = TeacherCache("float32", "index", None, "cpu"), []

    def teacher(rows):
        return lambda: runs.append(rows) or {"logits": flow.tensor(np.array(rows, np.float32)[:, None] * [1.0, -1.0])}

    cache.reads(np.array([0, 1]), teacher([0, 1]))
    cache.reads(np.array([1, 2]), teacher([1, 2]))  # row 2 is new: the teacher runs on the batch
    got = cache.reads(np.array([2, 0, 1]), teacher([9, 9, 9]))  # all cached: it does not
    assert runs == [[0, 1], [1, 2]] and got["logits"].tolist() == [[2.0, -2.0], [0.0, 0.0], [1.0, -1.0]]
    assert got["logits"].dtype == flow.float32 and len(cache.slots) == 3


@pytest.mark.parametrize("reads, message", [
    ({"logits": flow.zeros(3, 2)}, "'logits' per row, but its shape \\(3, 2\\) does not start with the batch's 2 rows"),
    ({"logits": flow.zeros(2, 5)}, "'logits' has rows of shape \\(5,\\) in this batch and \\(2,\\) before; pad"),
])
def test_teacher_outputs_that_are_not_rows_of_one_shape_are_refused(reads, message):
    cache = TeacherCache("float32", "index", None, "cpu")
    cache.reads(np.array([0, 1]), lambda: {"logits": flow.zeros(2, 2)})
    with pytest.raises(ValueError, match=message):
        cache.reads(np.array([7, 8]), lambda: reads)


def _refused(tmp_path, loader, error, message, **options):
    teacher, student = pair(inputs=8, classes=3, cls=DictMLP)
    training = TrainingConfig(str(tmp_path / "out"), max_steps=2, cache_teacher_outputs="memory", **options)
    with pytest.raises(error, match=message):
        Distiller(teacher, student, DistillationConfig(), training).train(loader)
    assert not (tmp_path / "out").exists()


def test_batches_that_are_not_dicts_are_refused(tmp_path):
    x, y = random_data(rows=32, inputs=8, classes=3)
    _refused(tmp_path, tuple_loader(x, y), TypeError, "cache_teacher_outputs needs dict batches, got a tuple batch; "
             "yield dicts with an integer row id per example under 'index'")


def test_batches_without_the_index_key_are_refused(tmp_path):
    _refused(tmp_path, _loader(key="row"), ValueError, "cache_teacher_outputs needs the row ids under "
             "TrainingConfig.index_key='index', but the batch has only 'features', 'labels', 'row'; yield dicts")
    _refused(tmp_path, _loader(key="row"), ValueError, "the batch has only", index_key="idx")


def test_row_ids_that_are_not_integers_are_refused(tmp_path):
    _refused(tmp_path, _loader(ids=np.arange(40, dtype=np.float32)), TypeError,
             "the row ids under 'index' must be integers, got dtype float32")


def test_a_cache_over_its_memory_limit_is_refused_before_the_first_step(tmp_path):
    # 40 rows x (3 logits x 4 bytes) = 480 bytes > 300 bytes; the probe's first batch (192 bytes) fits
    _refused(tmp_path, _loader(), ValueError, "the teacher-output cache would hold 40 rows x 12 bytes = 0.0 MB for "
             "the data's 40 rows, over TrainingConfig.cache_max_mb=0.000286102; raise cache_max_mb, use "
             "cache_dtype='float16' \\(half\\), set cache_max_mb=None", cache_max_mb=300 / 1024 ** 2)


class SecondOfTwo(Ranks):
    """Rank 1 of a 2-process run, without the collectives (the refusal comes before any)."""

    def __init__(self, use_graph):
        super().__init__(use_graph)
        self.world, self.rank, self.active = 2, 1, True

    def start(self, trainable):
        pass

    def finished(self):
        pass

    def failed(self, error):
        pass


def test_the_memory_limit_of_a_data_parallel_rank_counts_every_row_of_the_data(tmp_path, monkeypatch):
    """Each rank trains on half of each batch but may cache every row (a reshuffling loader hands it other
    rows each epoch): 3 batches of 16 rows are 48 rows for the limit, not the rank's 3 x 8."""
    monkeypatch.setattr("knowledge_distill_util.engine.distiller.Ranks", SecondOfTwo)
    batches = [next(iter(_loader(rows=16)))] * 3  # a list: no data set, len(data) batches of the global batch
    _refused(tmp_path, batches, ValueError, "would hold 48 rows x 12 bytes = 0.0 MB for the data's 48 rows, over "
             "TrainingConfig.cache_max_mb", cache_max_mb=300 / 1024 ** 2)


class NoInputs:
    """Step inputs that add nothing (the refusal comes before any step)."""

    def step_inputs(self, step, total):
        return {}


def test_step_inputs_with_a_compiled_cached_data_parallel_run_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("knowledge_distill_util.engine.distiller.Ranks", SecondOfTwo)
    teacher, student = pair(inputs=8, classes=3, cls=DictMLP)
    training = TrainingConfig(str(tmp_path / "out"), max_steps=2, cache_teacher_outputs="memory", use_graph=True)
    distiller = Distiller(teacher, student, DistillationConfig(), training, step_inputs=NoInputs())
    with pytest.raises(ValueError, match=r"^cache_teacher_outputs='memory' with use_graph=True on 2 processes cannot "
                                         r"take step_inputs= \(they become global tensors"):
        distiller.train(_loader(rows=32))  # whole batches of 16: the graph's batch shape holds
    assert not (tmp_path / "out").exists()


class Unsized:
    """A re-iterable without a length: the limit is met at the batch that crosses it."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)


def test_a_cache_that_grows_over_its_limit_stops_at_that_batch(tmp_path):
    teacher, student = pair(inputs=8, classes=3, cls=DictMLP)
    training = TrainingConfig(str(tmp_path / "out"), max_steps=3, cache_teacher_outputs="memory",
                              cache_max_mb=400 / 1024 ** 2)  # 33 rows of 12 bytes
    with pytest.raises(ValueError, match="would hold 40 rows x 12 bytes = 0.0 MB at this batch, over "
                                         "TrainingConfig.cache_max_mb"):
        Distiller(teacher, student, DistillationConfig(), training).train(Unsized(_loader()))


def test_an_objective_of_its_own_is_refused(tmp_path):
    teacher, student = pair(inputs=8, classes=3)
    training = TrainingConfig(str(tmp_path), max_steps=1, cache_teacher_outputs="memory")
    with pytest.raises(ValueError, match="this Distiller has an objective= of its own"):
        Distiller(teacher, student, DistillationConfig(), training, objective=flow.nn.Linear(1, 1))


@pytest.mark.parametrize("options, error, message", [
    (dict(cache_teacher_outputs="gpu"), ValueError, "TrainingConfig.cache_teacher_outputs must be one of 'off', "
                                                    "'memory', 'disk', 'auto'; got 'gpu'"),
    (dict(cache_dtype="bfloat16"), ValueError, "TrainingConfig.cache_dtype must be one of 'float32', 'float16'"),
    (dict(index_key=""), TypeError, "TrainingConfig.index_key must be a non-empty string, got ''"),
    (dict(index_key="labels"), ValueError, "index_key and label_key are both 'labels'"),
    (dict(cache_max_mb=0), ValueError, "TrainingConfig.cache_max_mb must be a finite number > 0, got 0.0"),
])
def test_bad_cache_options_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        TrainingConfig("out", max_steps=1, **options)


def _first_visits(student_ids):
    """The batches (after the probe, ``student_ids[0]``) holding a row that no earlier batch held: where a lazy
    per-row cache must run the teacher, computed from the rows the student saw."""
    seen, runs = set(), []
    for ids in student_ids[1:]:
        if not seen.issuperset(ids):
            runs.append(ids)
        seen.update(ids)
    return runs


def _launch_cache_worker(tmp_path):
    """``(status, stderr, out, records)`` of dp_cache_worker.py on 2 processes, started again (up to
    ``GRAPH_TEST_TRIES`` in all) only when a rank died from the graph runtime's segfault."""
    import os

    from conftest import GRAPH_TEST_TRIES
    from training.test_distributed_training import CRASH

    from .test_parallel import _job

    for attempt in range(GRAPH_TEST_TRIES):
        job = _job(tmp_path, f"dp{attempt}", 2, worker=os.path.join(os.path.dirname(__file__), "dp_cache_worker.py"))
        if not CRASH.search(job[1]):
            return job
    return job


def test_data_parallel_caches_give_the_uncached_losses_and_run_the_teacher_for_first_visits_only(tmp_path):
    """2 processes (dp_cache_worker.py: eagerly uncached, "memory", "disk", then compiled uncached and "memory",
    one after the other in the same processes). Not marked ``graph``: this process compiles nothing (the
    launched ranks do, each a fresh process, and a rank's segfault starts the job again), so it needs no
    process of its own (which would add a OneFlow start-up to the test's ~10 s)."""
    import json
    import os

    code, err, out, records = _launch_cache_worker(tmp_path)
    assert code == 0, err[-3000:]
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    terms = ("loss", "kl_div", "hard_label", "match0_hidden_mse", "match1_hidden_mse")
    plain = ranks[0]["off"]["history"]
    assert plain["step"] == list(range(1, 9))  # 16 rows in global batches of 4, 2 epochs
    for mode, uncached in (("memory", "off"), ("disk", "off"), ("graph-memory", "graph-off")):
        for term in terms:  # float32: bit for bit
            assert ranks[0][mode]["history"][term] == ranks[0][uncached]["history"][term], (mode, term)
        assert sorted(os.listdir(out / mode)) == ["checkpoints", "losses.csv", "losses.png"]  # the files deleted
    np.testing.assert_allclose(ranks[0]["graph-off"]["history"]["loss"], plain["loss"], rtol=1e-4)
    for rank in ranks:
        assert rank["off"]["teacher"] == rank["off"]["student"]  # uncached: the teacher runs on every batch
        assert len(rank["off"]["student"]) == 1 + 8 and all(len(ids) == 2 for ids in rank["off"]["student"])
        expected = _first_visits(rank["off"]["student"])
        assert len(expected) < 8  # some batch of epoch 2 was served from the cache alone
        for mode in ("memory", "disk", "graph-memory"):
            if mode != "graph-memory":  # (compiled: the student's batches carry no ids)
                assert rank[mode]["student"] == rank["off"]["student"]  # the same rows in the same order
            assert rank[mode]["teacher"] == rank["off"]["student"][:1] + expected, mode  # the probe, first visits
    for step in range(1, 9):  # each rank has its own half of every global batch; each epoch covers the 16 rows
        assert not set(ranks[0]["off"]["student"][step]) & set(ranks[1]["off"]["student"][step])
    for epoch in (range(1, 5), range(5, 9)):
        assert sorted(i for r in ranks for s in epoch for i in r["off"]["student"][s]) == list(range(16))
    lines = [line for line in err.splitlines() if "teacher-output cache" in line]
    assert len(lines) == 3 and all("of rank 0 (of 2 processes" in line for line in lines), lines  # rank 0 only


@pytest.mark.graph
def test_graph_mode_with_a_cache_gives_the_uncached_graph_losses(tmp_path):
    """The teacher runs eagerly outside the compiled step (only for batches with a new row) and its reads are
    inputs of the student-only graph: the uncached graph's losses bit for bit, over 2 epochs."""
    calls = []
    _, plain = _run(tmp_path, "plain", rows=48, use_graph=True)  # 3 full batches per epoch: one shape
    _, cached = _run(tmp_path, "cached", calls, rows=48, use_graph=True, cache_teacher_outputs="memory")
    assert plain["step"] == cached["step"] == list(range(1, 7))
    for term in ("loss", "kl_div", "hard_label", "match0_hidden_mse", "match1_hidden_mse"):
        assert cached[term] == plain[term], term
    assert len(calls) == 1 + 3  # the probe, then epoch 1 only
