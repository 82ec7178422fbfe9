"""knowledge_distill_util._state: nested states as safetensors + structure metadata, read without pickle."""
import json
import os
from collections import OrderedDict

import numpy as np
import oneflow as flow
import pytest

from conftest import same_state
from knowledge_distill_util._state import (FORMAT, LegacyPickleError, UnreadableStateError, is_legacy_directory,
                                           legacy_error, read_state, state_bytes, write_state)


def nested_state():
    rng = np.random.default_rng(0)
    return {
        "state": {0: {"exp_avg": flow.tensor(rng.standard_normal((2, 3)).astype(np.float32))}, "step": 7,
                  1: {"exp_avg": flow.tensor(np.float32(np.nan) * np.ones(2, np.float32))}},
        "param_groups": [{"lr": 0.1 + 0.2, "betas": (0.9, 0.999), "weight_decay": 0, "amsgrad": False, "x": None,
                          "inf": float("-inf"), "nan": float("nan"), "tiny": 5e-324, "big": 2 ** 70,
                          "params": [0, 1], "name": "g/0"}],
        "graph": OrderedDict([("m", OrderedDict([("weight", flow.nn.Parameter(flow.ones(2, 2)))])),
                              ("System-Train-TrainStep", flow.tensor(np.array([12], np.int64)))]),
        "dtypes": [flow.tensor(np.array(2.5)), flow.tensor(np.array([1, 0], np.bool_)),
                   flow.tensor(np.arange(3, dtype=np.uint8)), flow.tensor(np.arange(3, dtype=np.int8)),
                   flow.tensor(np.arange(3, dtype=np.int32)), flow.tensor(np.ones(2, np.float16)),
                   flow.tensor(np.zeros((0, 4), np.float32))],
        "__reserved": {"__tensor__": "not a tensor"},
        "same/key": flow.zeros(1), "same": {"key": flow.ones(1)},  # two paths flatten to one key
    }


def test_nested_round_trip_is_exact(tmp_path):
    state = nested_state()
    write_state(tmp_path / "s.safetensors", state)
    back = read_state(tmp_path / "s.safetensors")
    same_state(state["graph"]["m"]["weight"].detach(), back["graph"]["m"]["weight"])
    state["graph"]["m"]["weight"] = state["graph"]["m"]["weight"].detach()  # a Parameter comes back a tensor
    same_state(state, back)
    assert os.listdir(tmp_path) == ["s.safetensors"]


def test_the_file_is_plain_safetensors_with_the_structure_in_its_metadata(tmp_path):
    from safetensors import safe_open

    write_state(tmp_path / "s.safetensors", {"state": {3: {"exp_avg": flow.ones(2)}}, "param_groups": []})
    with safe_open(str(tmp_path / "s.safetensors"), framework="numpy") as handle:
        assert list(handle.keys()) == ["state/3/exp_avg"]
        meta = handle.metadata()
    assert meta["format"] == FORMAT
    assert json.loads(meta["structure"]) == {"state": {"__dict__": [[3, {"exp_avg": {"__tensor__": "state/3/exp_avg"}}]]},
                                             "param_groups": []}


def test_a_file_without_structure_reads_as_a_flat_dict(tmp_path):
    from safetensors.numpy import save_file

    save_file({"a.weight": np.arange(4, dtype=np.float32)}, str(tmp_path / "x.safetensors"))
    back = read_state(tmp_path / "x.safetensors")
    assert list(back) == ["a.weight"] and back["a.weight"].numpy().tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("value, message", [
    ({"a": np.zeros(2)}, r"a is a ndarray"),
    ({"a": {1.5: 1}}, r"key 1.5 at a is a float"),
    ({"a": [1, {"b": object()}]}, r"a/1/b is a object"),
])
def test_values_a_state_cannot_hold_are_refused_naming_them(tmp_path, value, message):
    with pytest.raises(TypeError, match=message):
        write_state(tmp_path / "s.safetensors", value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cut", ["empty", "header", "half"])
def test_a_truncated_file_is_named(tmp_path, cut):
    path = tmp_path / "s.safetensors"
    write_state(path, {"w": flow.ones(64)})
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "header": data[:20], "half": data[: len(data) // 2]}[cut])
    with pytest.raises(UnreadableStateError, match=r"s.safetensors is unreadable \(.+\); it is truncated or corrupt"):
        read_state(path)


def test_a_structure_that_does_not_fit_its_tensors_is_refused(tmp_path):
    from safetensors.numpy import save

    for structure, message in [({"w": {"__tensor__": "absent"}}, r"names a tensor 'absent'"),
                               ({}, r"holds tensors its structure does not name: \['w'\]")]:
        data = save({"w": np.ones(2, np.float32)}, metadata={"format": FORMAT, "structure": json.dumps(structure)})
        (tmp_path / "s.safetensors").write_bytes(data)
        with pytest.raises(UnreadableStateError, match=message):
            read_state(tmp_path / "s.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing.safetensors does not exist"):
        read_state(tmp_path / "nothing.safetensors")


def test_legacy_directory_and_its_refusal(tmp_path):
    (tmp_path / "w").mkdir()
    assert not is_legacy_directory(str(tmp_path / "w"), "model.safetensors")
    (tmp_path / "w" / "pickled_data").write_bytes(b"x")
    assert is_legacy_directory(str(tmp_path / "w"), "model.safetensors")
    error = legacy_error("saved model", str(tmp_path / "w"), str(tmp_path))
    assert isinstance(error, ValueError) and isinstance(error, LegacyPickleError)
    assert str(error).endswith(f"convert them once with: python -m knowledge_distill_util convert-checkpoint {tmp_path}")
    assert "can run code" in str(error) and str(error).count(". ") == 0  # one sentence
    (tmp_path / "w" / "model.safetensors").write_bytes(state_bytes({}))
    assert not is_legacy_directory(str(tmp_path / "w"), "model.safetensors")
