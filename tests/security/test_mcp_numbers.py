"""The MCP tools refuse a quoted epoch past what the stores hold, as the HTTP
API does (tests/security/test_http_boundaries.py), instead of overflowing the
database column when the refusal is logged."""

from __future__ import annotations

import pytest

from tenure.api.mcp_tools import report_from
from tenure.core.errors import InvalidInput
from tenure.core.validate import MAX_EPOCH


@pytest.mark.parametrize("epoch", [MAX_EPOCH + 1, 2**63, 2**70])
def test_a_report_quoting_an_epoch_past_the_stores_range_is_invalid(epoch: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        report_from({"task_id": "t1", "progress": 5, "epoch": epoch})
    assert refused.value.details["field"] == "epoch"


def test_the_largest_storable_epoch_is_accepted() -> None:
    assert report_from({"task_id": "t1", "epoch": MAX_EPOCH}).epoch == MAX_EPOCH
