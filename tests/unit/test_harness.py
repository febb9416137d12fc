"""The harness the e2e tests and the benchmarks share: its ports, figures and tables."""

from __future__ import annotations

import math
import socket

import pytest

from tools.harness import fmt, free_port, free_udp_port, nearest_rank, parse_metrics, percentile, port_band, table


def test_a_port_is_handed_out_once_and_is_bindable_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(20)] + [free_udp_port() for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(12000 <= port <= 19999 for port in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_each_xdist_worker_takes_its_ports_from_a_slice_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    slices = []
    for worker in ("gw0", "gw1", "gw2", "gw3"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(port_band())
    assert slices[0][0] == 12000
    assert all(a[1] < b[0] for a, b in zip(slices, slices[1:]))
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    first, last = slices[2]
    assert all(first <= free_port() <= last for _ in range(10))


def test_metrics_text_becomes_series_and_values_skipping_comments_and_garbage() -> None:
    text = '# HELP x\n# TYPE x counter\niot_sink_readings_total{sink="storage"} 42.0\nup 1\nbroken line nan-ish\n'
    assert parse_metrics(text) == {'iot_sink_readings_total{sink="storage"}': 42.0, "up": 1.0}


def test_percentile_interpolates_between_ranks_and_nearest_rank_returns_a_sample() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0.5) == 2.5
    assert percentile(values, 1.0) == 4.0
    assert math.isnan(percentile([], 0.5))
    assert nearest_rank(values, 50) == 2.0
    assert nearest_rank([float(v) for v in range(30)], 99) == 29.0


def test_a_figure_that_could_not_be_measured_prints_as_a_dash() -> None:
    assert fmt(12345.678) == "12,346"
    assert fmt(1.5, 2) == "1.50"
    assert fmt(math.nan) == "-"
    assert fmt(None) == "-"


def test_a_table_puts_labels_left_and_figures_right_in_a_box() -> None:
    assert table(["phase", "msgs/s"], [["bare", "1,000"], ["platform", "12"]]).splitlines() == [
        "+----------+--------+",
        "| phase    | msgs/s |",
        "+----------+--------+",
        "| bare     |  1,000 |",
        "| platform |     12 |",
        "+----------+--------+",
    ]
