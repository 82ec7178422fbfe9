"""Shared test set-up: quiet OneFlow's start-up logging and expose a CUDA skip marker."""
import os

os.environ.setdefault("GLOG_minloglevel", "3")

import oneflow as flow  # noqa: E402
import pytest  # noqa: E402

requires_cuda = pytest.mark.skipif(
    not flow.cuda.is_available(), reason="needs a CUDA device; this machine has none"
)
