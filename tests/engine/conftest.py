"""Fixtures of the engine tests: a small MLP teacher/student pair (modules ``body.0`` ... as in the issue's
snippet: the student's ``body.1`` gives 32 features, the teacher's ``body.3`` 128) and small data sets."""
import numpy as np
import oneflow as flow
import oneflow.nn as nn
import pytest
from oneflow.utils.data import DataLoader, TensorDataset


class MLP(nn.Module):
    """``Linear, ReLU, (Dropout,) Linear, ReLU, ..., Linear`` under ``body``: ``[B, widths[0]] -> [B, widths[-1]]``."""

    def __init__(self, widths, dropout=0.0):
        super().__init__()
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        self.body = nn.Sequential(*layers[:-2 if dropout else -1])

    def forward(self, x):
        return self.body(x)


class DictMLP(MLP):
    """The same model called with a keyword: ``model(features=x)``."""

    def forward(self, features):
        return self.body(features)


def pair(inputs=64, classes=10, seed=0, dropout=0.0, cls=MLP):
    """``(teacher, student)``: widths ``[in, 128, 128, C]`` and ``[in, 32, C]``."""
    flow.manual_seed(seed)
    return cls([inputs, 128, 128, classes]), cls([inputs, 32, classes], dropout=dropout)


def random_data(rows=64, inputs=8, classes=3, seed=0):
    """``(x float32 [rows, inputs], y int64 [rows])`` with labels a linear function of x."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, inputs)).astype(np.float32)
    y = (x @ rng.standard_normal((inputs, classes))).argmax(1).astype(np.int64)
    return x, y


def tuple_loader(x, y, batch_size=16, shuffle=False):
    return DataLoader(TensorDataset(flow.tensor(x), flow.tensor(y)), batch_size=batch_size, shuffle=shuffle)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits (bundled, no download) as ``(train_loader, dev_loader)`` factories' data."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)
