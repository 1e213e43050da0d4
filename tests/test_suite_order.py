"""The suite's own order (tests/conftest.py): the longest tests start first, so no worker ends on one."""

import conftest
import pytest


class FakeItem:
    def __init__(self, name: str, *marks):
        self.name, self.marks = name, marks

    def iter_markers(self, name: str):
        return (m for m in self.marks if m.name == name)


def test_slow_tests_go_first_by_their_minutes_hint_and_the_rest_keep_file_order():
    slow, hinted = pytest.mark.slow.mark, pytest.mark.slow(minutes=8).mark
    items = [FakeItem("fast_a"), FakeItem("slow_plain", slow), FakeItem("fast_b"),
             FakeItem("param_case", pytest.mark.slow(minutes=1).mark, hinted),  # its case's mark raises the hint
             FakeItem("slow_two", pytest.mark.slow(minutes=2).mark)]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["param_case", "slow_two", "slow_plain", "fast_a", "fast_b"]

