"""A small float64 finite-difference gradient check for OneFlow (OneFlow has no gradcheck)."""
from typing import Callable, List, Sequence

import numpy as np
import oneflow as flow


def analytic_grads(fn: Callable[..., flow.Tensor], arrays: Sequence[np.ndarray], device: str = "cpu") -> List[np.ndarray]:
    """Gradients of ``fn(*tensors)`` w.r.t. every input, by OneFlow's autograd."""
    tensors = [flow.tensor(a, dtype=flow.float64, device=device, requires_grad=True) for a in arrays]
    fn(*tensors).backward()
    return [None if t.grad is None else t.grad.numpy() for t in tensors]


def numeric_grad(fn: Callable[..., flow.Tensor], arrays: Sequence[np.ndarray], index: int, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``fn`` w.r.t. ``arrays[index]`` (float64)."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    target = arrays[index]
    grad = np.zeros_like(target)

    def value() -> float:
        return fn(*[flow.tensor(a, dtype=flow.float64) for a in arrays]).item()

    for pos in np.ndindex(*target.shape):
        original = target[pos]
        target[pos] = original + eps
        plus = value()
        target[pos] = original - eps
        minus = value()
        target[pos] = original
        grad[pos] = (plus - minus) / (2 * eps)
    return grad


def assert_gradients_match(fn, arrays, indices, rtol: float = 1e-3, atol: float = 1e-5) -> None:
    """PyTorch gradcheck tolerances: rtol 1e-3, atol 1e-5, eps 1e-6, float64."""
    grads = analytic_grads(fn, arrays)
    for i in indices:
        np.testing.assert_allclose(grads[i], numeric_grad(fn, arrays, i), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")


def numpy_numeric_grad(fn: Callable[..., float], arrays: Sequence[np.ndarray], index: int, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a numpy float64 reference ``fn`` w.r.t. ``arrays[index]``."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    target = arrays[index]
    grad = np.zeros_like(target)
    for pos in np.ndindex(*target.shape):
        original = target[pos]
        target[pos] = original + eps
        plus = fn(*arrays)
        target[pos] = original - eps
        minus = fn(*arrays)
        target[pos] = original
        grad[pos] = (plus - minus) / (2 * eps)
    return grad
