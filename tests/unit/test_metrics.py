"""Metrics: one `source` vocabulary, and no `_created` series in what /metrics serves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLE_EVENTS
from trigger.core.metrics import SOURCES, Metrics, source_label
from trigger.decoders.detect import decode_file
from trigger.sources.oss.poll import object_event


@pytest.mark.parametrize(
    ("event_file", "label"),
    [
        ("webhook-request.json", "webhook"),
        ("eventbridge-put-csv.json", "oss-push"),
        ("mns-push.xml", "oss-push"),
        ("kafka-order.json", "kafka"),
        ("cron-tick.json", "cron"),
    ],
)
def test_source_label_of_each_example_event(event_file: str, label: str) -> None:
    """Each kind of event is labelled with its name from the one vocabulary."""
    (event, *_) = decode_file(Path(EXAMPLE_EVENTS / event_file))
    assert source_label(event) == label
    assert label in SOURCES


def test_polled_objects_are_labelled_oss_poll() -> None:
    """An object found by polling is `oss-poll`, though its event's source is `oss`."""
    listed = SimpleNamespace(
        key="incoming/a.csv",
        size=3,
        etag='"ABC"',
        last_modified=1_735_689_600,
        storage_class="Standard",
    )
    event = object_event("example-bucket", "cn-hangzhou", listed, None)
    assert event.source == "oss"
    assert source_label(event) == "oss-poll"


def test_render_has_no_created_series() -> None:
    """Counters and histograms render their values, never a `_created` time."""
    metrics = Metrics()
    metrics.events_received.labels("webhook").inc()
    metrics.submit_latency.observe(0.2)
    families = list(text_string_to_metric_families(metrics.render().decode()))
    names = {s.name for f in families for s in f.samples}
    assert "trigger_events_received_total" in names
    assert "trigger_submit_latency_seconds_count" in names
    assert not [n for n in names if n.endswith("_created")]
