"""Module outputs captured by module path (torchdistill's forward hooks), in eager mode and under ``nn.Graph``.

A path is a key of ``dict(model.named_modules())`` (``"body.1"``, ``"encoder.layer.3.output"``). A
:class:`FeatureTaps` wraps the ``forward`` of each tapped module while it is installed (a context manager):
the wrapper records the module's output (its first element when the output is a tuple or list, as
``nn.LSTM``'s ``(output, (h, c))``; the last call when a module runs several times) and returns it
unchanged. ``register_forward_hook`` is not used because ``nn.Graph`` ignores Module hooks (OneFlow 0.9,
``nn/graph/proxy.py``: "hooks of nn.Modules are ignored"), while it does call the instance's ``forward``.

    >>> import oneflow as flow
    >>> model = flow.nn.Sequential(flow.nn.Linear(2, 3), flow.nn.ReLU())
    >>> taps = FeatureTaps(model, ["0"], "student")
    >>> with taps:
    ...     _ = model(flow.ones(1, 2))
    ...     tuple(taps.get("0").shape)
    (1, 3)
    >>> resolve_module(model, "1.relu", "student")
    Traceback (most recent call last):
    ...
    ValueError: the student has no module '1.relu'; the closest module paths are '1', '0' (all paths: dict(model.named_modules()))
"""
import difflib
import types
from typing import Dict, Iterable

import oneflow as flow
import oneflow.nn as nn

__all__ = ["resolve_module", "FeatureTaps"]


def resolve_module(model: nn.Module, path: str, side: str) -> nn.Module:
    """The module at ``path`` of ``model``; ``ValueError`` naming the closest paths when there is none."""
    modules = dict(model.named_modules())
    if path in modules and path != "":
        return modules[path]
    names = [name for name in modules if name]
    close = difflib.get_close_matches(path, names, n=3, cutoff=0.0)
    hint = f"the closest module paths are {', '.join(map(repr, close))}" if close else "it has no submodules"
    raise ValueError(f"the {side} has no module {path!r}; {hint} (all paths: dict(model.named_modules()))")


def _first_tensor(output, path: str, side: str) -> flow.Tensor:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, flow.Tensor):
        raise TypeError(f"the {side}'s module {path!r} returned a {type(output).__name__}, not a tensor (or a tuple "
                        f"starting with one); tap a module that returns a tensor, or use an adaptor")
    return output


class FeatureTaps:
    """The outputs of the modules at ``paths`` of ``model`` (``side``: "student"/"teacher" for messages)."""

    def __init__(self, model: nn.Module, paths: Iterable[str], side: str):
        self.side = side
        self.modules = {path: resolve_module(model, path, side) for path in dict.fromkeys(paths)}
        self.outputs: Dict[str, flow.Tensor] = {}
        self.installed = False

    def _wrap(self, path: str, module: nn.Module) -> None:
        cls_forward = type(module).forward
        outputs, side = self.outputs, self.side

        def forward(this, *args, **kwargs):  # ``this``: the module, or nn.Graph's proxy of it
            result = cls_forward(this, *args, **kwargs)
            outputs[path] = _first_tensor(result, path, side)
            return result

        module.forward = types.MethodType(forward, module)

    def __enter__(self) -> "FeatureTaps":
        for path, module in self.modules.items():
            if "forward" in module.__dict__:
                raise ValueError(f"the {self.side}'s module {path!r} already has its forward replaced (tapped twice, "
                                 f"or patched by other code); tap each module once")
            self._wrap(path, module)
        self.installed = True
        return self

    def __exit__(self, *exc) -> None:
        for module in self.modules.values():
            module.__dict__.pop("forward", None)
        self.outputs.clear()
        self.installed = False

    def clear(self) -> None:
        """Forget the previous forward's outputs (call before each forward)."""
        self.outputs.clear()

    def get(self, path: str) -> flow.Tensor:
        """The output of ``path`` in the last forward; ``ValueError`` when that module did not run."""
        if path not in self.outputs:
            raise ValueError(f"the {self.side}'s module {path!r} did not run in the forward pass, so there is no "
                             f"output to match; pick a module the forward calls (print the model to see them)")
        return self.outputs[path]
