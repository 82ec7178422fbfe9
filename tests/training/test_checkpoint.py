"""Atomic checkpoints: an interrupted write is ignored and cleaned up."""
import os

import oneflow as flow

from knowledge_distill_util.training.checkpoint import latest_checkpoint, save_checkpoint


def test_checkpoint_ignores_an_interrupted_write(tmp_path):
    root = str(tmp_path)
    save_checkpoint(root, 2, {"w": flow.ones(2)}, None, {})
    os.makedirs(os.path.join(root, ".step-00000004.partial"))      # a write killed before os.replace
    assert latest_checkpoint(root) == os.path.join(root, "step-00000002")
    save_checkpoint(root, 4, {"w": flow.zeros(2)}, None, {})
    assert sorted(os.listdir(root)) == ["LATEST", "step-00000004"]
