"""deploy/grafana/busd-dashboard.json: it loads, its panels are well formed, and every
query reads only series busd serves (docs/GUIDE.md, "Metrics").

The metric names are taken out of each PromQL expression by a small parser of
its own (strings, label matchers, ranges and grouping clauses removed, then
every name that is not a function or a keyword); the parser is tested too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "busd-dashboard.json"

#: The series busd serves (the master's own; the workers' arrive under their own names).
BUSD_SERIES = frozenset(
    {
        "busd_state",
        "busd_info",
        "busd_commands_total",
        "busd_reload_duration_seconds_bucket",
        "busd_reload_duration_seconds_sum",
        "busd_reload_duration_seconds_count",
        "busd_relay_messages_total",
        "busd_relay_replayed_total",
        "busd_relay_lost_total",
        "busd_clients",
        "busd_workers",
        "busd_worker_restarts_total",
        "busd_worker_cpu_seconds_total",
        "busd_worker_resident_memory_bytes",
        "busd_worker_open_fds",
        "busd_worker_uptime_seconds",
        "busd_scrape_missing_workers",
    }
)
#: The master's process collector, and the example application's own counters.
ALLOWED_PREFIXES = ("process_", "busd_example_")
#: What the dashboard must show (the panels the deployment notes promise).
SHOWN = frozenset(
    {
        "busd_workers",
        "busd_worker_restarts_total",
        "busd_worker_cpu_seconds_total",
        "busd_worker_resident_memory_bytes",
        "busd_relay_messages_total",
        "busd_commands_total",
        "busd_reload_duration_seconds_bucket",
        "busd_scrape_missing_workers",
        "busd_example_hits_total",
    }
)

STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
MATCHERS = re.compile(r"\{[^{}]*\}")
RANGE = re.compile(r"\[[^\[\]]*\]")
GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
NAME = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = STRING.sub(" ", expr)
    text = MATCHERS.sub(" ", text)
    text = RANGE.sub(" ", text)
    text = GROUPING.sub(" ", text)
    found = set()
    for match in NAME.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS or name.startswith("$"):
            continue
        found.add(name)
    return found


def is_known(name: str) -> bool:
    return name in BUSD_SERIES or name.startswith(ALLOWED_PREFIXES)


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query target."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            if "expr" in target:
                yield panel["title"], target["expr"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (pool) (rate(busd_example_hits_total{pool=~"$pool"}[1m]))',
            {"busd_example_hits_total"},
        ),
        ("rate(busd_commands_total[5m])", {"busd_commands_total"}),
        (
            "histogram_quantile(0.99, sum by (le) "
            "(rate(busd_reload_duration_seconds_bucket[$__rate_interval])))",
            {"busd_reload_duration_seconds_bucket"},
        ),
        (
            'sum by (pool) (busd_workers{state!="STARTED"}) or sum by (pool) (busd_workers) * 0',
            {"busd_workers"},
        ),
        (
            "rate(process_cpu_seconds_total[1m]) and on (instance, job) busd_info",
            {"process_cpu_seconds_total", "busd_info"},
        ),
        ('{__name__="x"} + up offset 5m', {"up"}),
        ("busd_state == 1", {"busd_state"}),
    ],
)
def test_metric_names_are_parsed_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_an_unknown_series_is_caught() -> None:
    unknown = {n for n in metric_names("rate(busd_worker_cpu_total[1m])") if not is_known(n)}
    assert unknown == {"busd_worker_cpu_total"}


def test_the_dashboard_loads_as_a_grafana_dashboard() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"]
    assert dashboard["uid"]
    assert dashboard["panels"]


def test_every_panel_has_a_unique_id_and_a_grid_position() -> None:
    panels = list(all_panels(load()["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for panel in panels:
        grid = panel.get("gridPos")
        assert isinstance(grid, dict), f"{panel['title']}: no gridPos"
        assert {"h", "w", "x", "y"} <= grid.keys(), f"{panel['title']}: gridPos {grid}"
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']}: wider than the grid"


def test_every_query_reads_only_series_busd_serves() -> None:
    dashboard = load()
    unknown = [
        f"{title}: {name} in {expr}"
        for title, expr in exprs(dashboard)
        for name in sorted(metric_names(expr))
        if not is_known(name)
    ]
    assert not unknown, "\n".join(unknown)
    assert all(metric_names(expr) for _, expr in exprs(dashboard))


def test_the_dashboard_shows_what_it_promises() -> None:
    used = {name for _, expr in exprs(load()) for name in metric_names(expr)}
    assert used >= SHOWN, f"not shown: {sorted(SHOWN - used)}"


def test_the_datasource_and_pool_variables() -> None:
    dashboard = load()
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    source = variables["DS_PROMETHEUS"]
    assert source["type"] == "datasource"
    assert source["query"] == "prometheus"
    pool = variables["pool"]
    assert pool["type"] == "query"
    query = pool["query"]["query"] if isinstance(pool["query"], dict) else pool["query"]
    assert query == "label_values(busd_workers, pool)"
    for panel in all_panels(dashboard["panels"]):
        for holder in [panel, *panel.get("targets", [])]:
            if "datasource" in holder:
                assert holder["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    pooled = [expr for _, expr in exprs(dashboard) if "busd_worker" in expr]
    assert pooled
    assert all('pool=~"$pool"' in expr for expr in pooled), pooled
