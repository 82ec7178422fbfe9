"""mkdocs hook: let mkdocstrings 1.0 work with pymdown-extensions 12.

pymdown-extensions 12 made ``Highlight.__init__`` take the Markdown instance as its first argument;
mkdocstrings 1.0.6's ``Highlighter`` (a subclass) still calls it with keywords only, so every API page
fails with ``TypeError: Highlight.__init__() missing 1 required positional argument: 'md'``. With older
pymdown-extensions this hook does nothing. Remove it once mkdocstrings supports pymdown-extensions 12
(or pin ``pymdown-extensions<12``).
"""
import inspect

from pymdownx.highlight import Highlight

__all__ = ["on_config"]


def _patch() -> None:
    from mkdocstrings._internal.handlers.rendering import Highlighter

    if getattr(Highlighter, "_kdu_compat", False) or "md" not in inspect.signature(Highlight.__init__).parameters:
        return
    original = Highlighter.__init__
    base = Highlight.__init__

    def __init__(self, md):
        def with_md(obj, *args, **kwargs):
            base(obj, md, *args, **kwargs)

        Highlight.__init__ = with_md
        try:
            original(self, md)
        finally:
            Highlight.__init__ = base

    Highlighter.__init__ = __init__
    Highlighter._kdu_compat = True


def on_config(config):
    _patch()
    return config
