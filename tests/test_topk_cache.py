"""knowledge_distill_util.topk_cache: the top-k teacher logits cache (content, layout, atomic and resumable
writes, fingerprints, truncation, permissions, bad input) and a KD step reading it."""
import json
import os

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import TopKLogits, cache_teacher_logits
from knowledge_distill_util import topk_cache
from knowledge_distill_util.functional import kl_div, sparse_kl_div

H, V, K = 5, 9, 3


def teacher_model(seed=0):
    flow.manual_seed(seed)
    return flow.nn.Linear(H, V)


def dataset(batches=5, seed=0):
    """Token-level batches (x [2, 3, H], labels); the last batch is smaller."""
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(1 if i == batches - 1 else 2, 3, H)).astype(np.float32), np.zeros(2))
            for i in range(batches)]


class Counting(flow.nn.Module):
    """The teacher, counting its calls and raising at call ``fail_at`` (a build killed mid-way)."""

    def __init__(self, teacher, fail_at=None):
        super().__init__()
        self.teacher, self.calls, self.fail_at = teacher, 0, fail_at

    def state_dict(self, *args, **kwargs):  # the wrapped teacher's weights: the same fingerprint
        return self.teacher.state_dict(*args, **kwargs)

    def forward(self, x):
        if self.calls == self.fail_at:
            raise RuntimeError("killed")
        self.calls += 1
        return self.teacher(x)


def build(path, teacher=None, data=None, **kwargs):
    kwargs.setdefault("top_k", K)
    kwargs.setdefault("batches_per_chunk", 2)
    return cache_teacher_logits(teacher_model() if teacher is None else teacher, dataset() if data is None else data,
                                path, **kwargs)


def contents(cache):
    return [(v.numpy(), i.numpy(), cache.logsumexp(n).numpy()) for n, (v, i) in enumerate(cache)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, w in zip(x, y):
            np.testing.assert_array_equal(u, w)


def test_the_cache_holds_the_teachers_top_k_per_token_in_raw_memory_mappable_files(tmp_path):
    teacher, data = teacher_model(), dataset()
    cache = build(tmp_path / "c", teacher, data, temperature=2.0)
    assert len(cache) == 5 and cache.rows == 4 * 6 + 3 and cache.top_k == K and cache.vocab_size == V
    for n, (x, _) in enumerate(data):
        logits = teacher(flow.tensor(x)).numpy().astype(np.float64)
        values, ids = cache[n]
        assert values.dtype == flow.float16 and ids.dtype == flow.int32 and tuple(ids.shape) == x.shape[:2] + (K,)
        expected_ids = np.argsort(-logits, axis=-1)[..., :K]
        np.testing.assert_array_equal(ids.numpy(), expected_ids)
        np.testing.assert_array_equal(values.numpy(), np.take_along_axis(logits, expected_ids, -1).astype(np.float16))
        scaled = logits / 2.0
        lse = np.log(np.exp(scaled - scaled.max(-1, keepdims=True)).sum(-1)) + scaled.max(-1)
        np.testing.assert_allclose(cache.logsumexp(n).numpy(), lse, rtol=1e-5)
    header = json.loads((tmp_path / "c" / "header.json").read_text())
    assert header["shape"] == [27, K] and header["top_k"] == K and header["vocab_size"] == V
    assert header["dtype"] == {"values": "float16", "ids": "int32", "logsumexp": "float32"}
    assert header["rows"] == 27 and header["complete"] and header["temperature"] == 2.0
    assert len(header["data_fingerprint"]) == 64
    assert header["teacher_fingerprint"] == topk_cache.teacher_fingerprint(teacher)
    files = sorted(f for f in os.listdir(tmp_path / "c") if f.endswith(".bin"))
    assert len(files) == 9  # 3 chunks (2 + 2 + 1 batches) x values, ids, logsumexp
    assert sum(os.path.getsize(tmp_path / "c" / f) for f in files) == 27 * (6 * K + 4)  # bytes per token: 6k + 4
    first = np.memmap(tmp_path / "c" / "chunk-00000.ids.bin", dtype="<i4", mode="r", shape=(12, K))
    np.testing.assert_array_equal(first[:6].reshape(2, 3, K), cache[0][1].numpy())


def test_the_teacher_runs_in_eval_mode_and_every_submodules_mode_is_restored(tmp_path):
    seen = []

    class Teacher(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.frozen = flow.nn.Linear(H, V), flow.nn.Dropout(0.5)

        def forward(self, x):
            seen.append((self.training, self.body.training, self.frozen.training))
            return self.frozen(self.body(x))

    teacher = Teacher()
    teacher.frozen.eval()
    build(tmp_path / "c", teacher)
    assert set(seen) == {(False, False, False)}
    assert (teacher.training, teacher.body.training, teacher.frozen.training) == (True, True, False)


def test_a_complete_cache_is_reused_without_running_the_teacher(tmp_path):
    first = contents(build(tmp_path / "c"))
    counting = Counting(teacher_model())
    assert_same(contents(build(tmp_path / "c", counting)), first)
    assert counting.calls == 0


def test_a_build_killed_mid_way_resumes_from_the_last_complete_chunk(tmp_path):
    fresh = contents(build(tmp_path / "fresh"))
    with pytest.raises(RuntimeError, match="killed"):
        build(tmp_path / "c", Counting(teacher_model(), fail_at=3))  # batches 0-1 (chunk 0) done, 2 in memory
    header = json.loads((tmp_path / "c" / "header.json").read_text())
    assert len(header["chunks"]) == 1 and not header["complete"]
    assert not [f for f in os.listdir(tmp_path / "c") if "kdu-tmp" in f]
    with pytest.raises(ValueError, match=r"is incomplete \(2 batches written, the build was interrupted\); run "
                                         r"cache_teacher_logits again"):
        TopKLogits(tmp_path / "c")
    resumed = Counting(teacher_model())
    assert_same(contents(build(tmp_path / "c", resumed)), fresh)
    assert resumed.calls == 3  # only batches 2, 3, 4


def test_chunk_files_written_but_not_yet_listed_are_rewritten(tmp_path, monkeypatch):
    """Killed between a chunk's files and the header naming it: the chunk is built again."""
    fresh = contents(build(tmp_path / "fresh"))
    writes = []
    real = topk_cache.atomic_write_json

    def dying_header_write(path, obj, **kwargs):
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt  # after chunk 1's files, before the header lists them
        real(path, obj, **kwargs)

    monkeypatch.setattr(topk_cache, "atomic_write_json", dying_header_write)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path / "c")
    monkeypatch.undo()
    assert os.path.exists(tmp_path / "c" / "chunk-00001.values.bin")
    assert len(json.loads((tmp_path / "c" / "header.json").read_text())["chunks"]) == 1
    resumed = Counting(teacher_model())
    assert_same(contents(build(tmp_path / "c", resumed)), fresh)
    assert resumed.calls == 3


def test_a_cache_of_another_teacher_data_set_or_top_k_is_refused(tmp_path):
    build(tmp_path / "c")
    other_data = dataset()
    other_data[1] = (other_data[1][0] + 1, other_data[1][1])
    cases = [
        (dict(teacher=teacher_model(seed=1)), "was written for another teacher (fingerprint"),
        (dict(data=other_data), "was written for another data set (batch 1 differs"),
        (dict(data=dataset() + dataset()[:1]), "was written for another data set (batch 5 differs"),
        (dict(data=dataset()[:4]), "holds 5 batches but data has only 4"),
        (dict(top_k=2), "holds top_k=3, not top_k=2"),
        (dict(temperature=2.0), "was written at temperature=1.0, not temperature=2.0"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError) as raised:
            build(tmp_path / "c", **kwargs)
        assert words in str(raised.value) and "\n" not in str(raised.value), kwargs
    with pytest.raises(ValueError, match="was written for another data set; build a cache"):
        TopKLogits(tmp_path / "c", data=other_data)
    with pytest.raises(ValueError, match="was written for another teacher; build a cache"):
        TopKLogits(tmp_path / "c", teacher=teacher_model(seed=1))
    TopKLogits(tmp_path / "c", data=dataset(), teacher=teacher_model())  # the right ones pass


def test_a_truncated_chunk_is_refused_by_the_reader_and_rebuilt_by_the_builder(tmp_path):
    fresh = contents(build(tmp_path / "c"))
    victim = tmp_path / "c" / "chunk-00001.values.bin"
    size = os.path.getsize(victim)
    with open(victim, "r+b") as handle:
        handle.truncate(size - 5)
    with pytest.raises(ValueError) as raised:
        TopKLogits(tmp_path / "c")
    assert str(raised.value) == (
        f"the top-k logits cache {tmp_path / 'c'} is damaged: chunk-00001.values.bin has {size - 5} bytes but its "
        f"header says {size} (a truncated copy or a disk error); run cache_teacher_logits again with the same "
        f"teacher and data to rebuild it")
    resumed = Counting(teacher_model())
    assert_same(contents(build(tmp_path / "c", resumed)), fresh)
    assert resumed.calls == 3  # chunks 1 and 2 again


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_cache_gets_the_umasks_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        build(tmp_path / "c")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "c").st_mode & 0o777 == 0o777 & ~umask
    for name in os.listdir(tmp_path / "c"):
        assert os.stat(tmp_path / "c" / name).st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(top_k=0), ValueError, "top_k must be"),
    (dict(top_k=V + 1), ValueError, f"top_k is {V + 1} but the teacher's logits of batch 0 have only V = {V} classes"),
    (dict(top_k=2.5), TypeError, "top_k must be"),
    (dict(temperature=-1.0), ValueError, "temperature must be a finite number"),
    (dict(batches_per_chunk=0), ValueError, "batches_per_chunk must be"),
    (dict(data=5), TypeError, "data must be an iterable of batches, got int"),
    (dict(teacher=lambda x: x), TypeError, "without state_dict, so it cannot be fingerprinted; pass teacher_id="),
    (dict(teacher=lambda x: (x,), teacher_id="x"), TypeError, None),  # passes the fingerprint, then x is [.., H]
    (dict(data=[]), ValueError, "data gave no batch"),
])
def test_bad_input_is_one_sentence_naming_the_argument(tmp_path, kwargs, error, words):
    if words is None:  # a callable teacher with teacher_id works
        cache = build(tmp_path / "c", **kwargs)
        assert cache.vocab_size == H
        return
    with pytest.raises(error) as raised:
        build(tmp_path / "c", **kwargs)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_non_empty_directory_that_is_not_a_cache_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is a non-empty directory without a top-k logits cache header"):
        build(tmp_path / "c")
    assert os.listdir(tmp_path / "c") == ["notes.txt"]


def test_a_kd_step_from_the_cache_matches_the_live_teacher_at_k_equal_to_v(tmp_path):
    """End to end: a student trained from the cache; at k = V its loss is the dense kl_div of the live teacher
    up to the float16 rounding of the stored values."""
    teacher, data = teacher_model(), dataset()
    cache = build(tmp_path / "c", teacher, data, top_k=V, temperature=2.0)
    flow.manual_seed(1)
    student = flow.nn.Linear(H, V)
    optimizer = flow.optim.SGD(student.parameters(), lr=0.1)
    for n, (x, _) in enumerate(data):
        x = flow.tensor(x)
        values, ids = cache[n]
        loss = sparse_kl_div(student(x), values, ids, temperature=2.0, missing="uniform",
                             teacher_logsumexp=cache.logsumexp(n))
        dense = kl_div(student(x), teacher(x), student_temperature=2.0, teacher_temperature=2.0)
        assert loss.item() == pytest.approx(dense.item(), abs=2e-3)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
