"""The examples of the loss documentation pages (docs/losses/*.md, English and Chinese) run as doctests."""
import doctest
import os

import pytest

from knowledge_distill_util import registry

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "losses")
FAMILIES = ["logits", "divergences", "hidden", "attention", "layer_maps", "schedules", "registry"]
PAGES = [f"{family}{suffix}.md" for family in FAMILIES for suffix in ("", ".zh")]


def test_every_family_has_an_english_and_a_chinese_page():
    assert sorted(os.listdir(DOCS)) == sorted(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page):
    before = registry._LOSSES.snapshot()  # a page may register an example loss: undo it afterwards
    try:
        result = doctest.testfile(os.path.join(DOCS, page), module_relative=False, verbose=False,
                                  optionflags=doctest.NORMALIZE_WHITESPACE, report=True)
    finally:
        registry._LOSSES.restore(before)
    assert result.attempted >= 5, f"{page} has only {result.attempted} examples"
    assert result.failed == 0, f"{page}: {result.failed} of {result.attempted} examples failed (see the output above)"
