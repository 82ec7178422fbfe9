"""The rows of both teacher-output caches (engine/row_store.py): float32 rows come back as put, float16 rows
rounded once, in memory and in memory-mapped .npy files that grow without losing rows; the size accounting; the
files deleted at close, and only the store's own."""
import os

import numpy as np
import pytest

from knowledge_distill_util.engine.row_store import MB, RowStore


def _rows(ids, width=3):
    """Row ``i`` is ``[i + 0.1, i + 0.2, ...]`` (not a float16 value: rounding shows)."""
    return np.asarray(ids, np.float64)[:, None] + 0.1 * np.arange(1, width + 1)


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_float32_rows_come_back_as_put_in_any_order(tmp_path, on_disk):
    store = RowStore("float32", (lambda name: str(tmp_path / f"{name}.npy")) if on_disk else None)
    store.put(np.array([7, 3]), {"a": _rows([7, 3]).astype(np.float32), "b": np.array([[[1.0]], [[2.0]]])})
    store.put(np.array([3, 9]), {"a": _rows([3, 9]).astype(np.float32), "b": np.array([[[3.0]], [[4.0]]])})
    got = store.get(np.array([9, 7, 3, 7]))
    assert list(got) == ["a", "b"] and got["a"].dtype == np.float32
    np.testing.assert_array_equal(got["a"], _rows([9, 7, 3, 7]).astype(np.float32))
    assert got["b"].tolist() == [[[4.0]], [[1.0]], [[3.0]], [[1.0]]]  # row 3 overwritten by its second put
    assert store.slots == {7: 0, 3: 1, 9: 2} and len(store) == 3
    assert store.holds(np.array([3, 9])) and not store.holds(np.array([3, 4])) and not store.holds(np.array([]))
    assert store.row_shape("b") == (1, 1) and store.row_shape("c") is None


def test_float16_rows_are_rounded_once_and_counted_at_two_bytes():
    store = RowStore("float16")
    store.put(np.arange(4), {"a": _rows(range(4), width=5)})
    got = store.get(np.arange(4))["a"]
    np.testing.assert_array_equal(got, _rows(range(4), width=5).astype(np.float16).astype(np.float32))
    assert not np.array_equal(got, _rows(range(4), width=5).astype(np.float32))
    assert store.row_bytes() == 10 and store.row_bytes({"x": np.zeros((2, 3, 4))}) == 24
    assert store.megabytes() == 4 * 10 / MB and store.megabytes(rows=MB, row_bytes=3) == 3.0


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
def test_the_arrays_grow_by_doubling_and_keep_their_rows(tmp_path, on_disk):
    path = str(tmp_path / "a.npy")
    store = RowStore("float32", (lambda name: path) if on_disk else None, capacity=2)
    sizes = []
    for first in range(0, 10, 2):
        store.put(np.arange(first, first + 2), {"a": _rows(range(first, first + 2))})
        sizes.append(len(store.arrays["a"]))
    assert sizes == [2, 4, 8, 8, 16]
    np.testing.assert_array_equal(store.get(np.arange(10))["a"], _rows(range(10)).astype(np.float32))
    if on_disk:
        assert np.load(path, mmap_mode="r").shape == (16, 3) and store.files == [path]


def test_a_row_shape_other_than_the_stored_one_is_refused():
    store = RowStore("float32")
    store.put(np.array([0]), {"a": np.zeros((1, 3))})
    with pytest.raises(ValueError, match=r"rows of 'a' have shape \(3,\) in this store, got \(4,\)"):
        store.put(np.array([1]), {"a": np.zeros((1, 4))})


def test_close_deletes_its_own_files_only(tmp_path):
    (tmp_path / "other.npy").write_bytes(b"another run's")
    store = RowStore("float16", lambda name: str(tmp_path / f"{name}.npy"))
    store.put(np.array([0, 1]), {"a": np.zeros((2, 2)), "b": np.zeros((2, 1))})
    assert sorted(os.listdir(tmp_path)) == ["a.npy", "b.npy", "other.npy"]  # no temporary file left beside
    store.close()
    assert os.listdir(tmp_path) == ["other.npy"] and len(store) == 0 and not store.arrays
    store.close()  # twice: nothing left to do
