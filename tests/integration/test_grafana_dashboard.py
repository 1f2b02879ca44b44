"""Static checks of the Grafana dashboard conf/grafana/cheapmodel.json: it parses, it has the shape
Grafana needs to import it, its panels neither collide nor lack a query, and its PromQL only names
variables the dashboard defines and metrics the gateway exports. Needs no gateway binary.
"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "conf" / "grafana" / "cheapmodel.json"

# Every metric the gateway exports (histograms by base name).
KNOWN_METRICS = {
    "cheapmodel_requests_total",
    "cheapmodel_request_duration_seconds",
    "cheapmodel_upstream_ttfb_seconds",
    "cheapmodel_overhead_seconds",
    "cheapmodel_tokens_total",
    "cheapmodel_cost_usd_total",
    "cheapmodel_rejected_total",
    "cheapmodel_tasks_total",
    "cheapmodel_dropped_params_total",
    "cheapmodel_estimated_requests_total",
    "cheapmodel_ledger_spool_bytes",
    "cheapmodel_ledger_errors_total",
}
# Exported but not required on the dashboard.
OPTIONAL_METRICS = {"cheapmodel_dropped_params_total"}

PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "row", "bargauge"}
DS_UID = "${datasource}"

METRIC_RE = re.compile(r"cheapmodel_[a-z_]+")
HISTOGRAM_SUFFIX_RE = re.compile(r"_(bucket|sum|count)$")
# $name, ${name}, ${name:format}, [[name]]
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


@pytest.fixture(scope="module")
def dashboard():
    text = DASHBOARD.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        pytest.fail(f"{DASHBOARD} is not valid JSON: {e}")


def all_panels(dash):
    """Top-level panels plus those nested in (collapsed) rows."""
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        if isinstance(p, dict) and p.get("type") == "row":
            out.extend(p.get("panels") or [])
    return out


def query_panels(dash):
    return [p for p in all_panels(dash) if p.get("type") != "row"]


def all_exprs(dash):
    """(panel title, expr) for every target of every panel."""
    return [(p.get("title", f"id {p.get('id')}"), t.get("expr", ""))
            for p in query_panels(dash) for t in p.get("targets", [])]


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def defined_variables(dash):
    return {v["name"] for v in dash["templating"]["list"]}


def test_top_level_keys(dashboard):
    assert isinstance(dashboard, dict)
    for key in ("title", "uid", "panels", "schemaVersion", "templating"):
        assert key in dashboard, f"missing top-level key {key!r}"
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert isinstance(dashboard["uid"], str) and dashboard["uid"]
    assert len(dashboard["uid"]) <= 40, "Grafana rejects uids longer than 40 characters"
    assert is_int(dashboard["schemaVersion"]), "schemaVersion must be an integer"
    assert isinstance(dashboard["panels"], list) and dashboard["panels"]
    assert isinstance(dashboard["templating"], dict)
    assert isinstance(dashboard["templating"].get("list"), list)


def test_template_variables(dashboard):
    variables = dashboard["templating"]["list"]
    names = [v.get("name") for v in variables]
    assert all(isinstance(n, str) and n for n in names), f"a variable without a name: {names}"
    assert len(names) == len(set(names)), f"duplicate variable names: {names}"
    by_name = {v["name"]: v for v in variables}

    ds = by_name.get("datasource")
    assert ds is not None, "no `datasource` variable"
    assert ds.get("type") == "datasource" and ds.get("query") == "prometheus"

    for name in ("model", "key"):
        var = by_name.get(name)
        assert var is not None, f"no `{name}` variable"
        assert var.get("type") == "query"
        assert var.get("multi") is True and var.get("includeAll") is True, f"`{name}` must be multi + includeAll"
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        assert isinstance(query, str) and query.startswith("label_values("), f"`{name}` query: {query!r}"
        assert re.search(rf",\s*{name}\s*\)\s*$", query), f"`{name}` must list label {name!r}: {query!r}"
        assert (var.get("datasource") or {}).get("uid") == DS_UID


def test_panel_ids_unique_integers(dashboard):
    ids = []
    for p in all_panels(dashboard):
        assert is_int(p.get("id")), f"panel {p.get('title')!r} has a non-integer id {p.get('id')!r}"
        ids.append(p["id"])
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate panel ids: {dupes}"


def test_panel_types_known(dashboard):
    for p in all_panels(dashboard):
        assert p.get("type") in PANEL_TYPES, f"panel {p.get('title')!r} has unknown type {p.get('type')!r}"


def test_grid_positions(dashboard):
    rects = []
    for p in all_panels(dashboard):
        g = p.get("gridPos")
        title = p.get("title")
        assert isinstance(g, dict), f"panel {title!r} has no gridPos"
        for k in ("x", "y", "w", "h"):
            assert is_int(g.get(k)), f"panel {title!r} gridPos.{k} is not an integer: {g.get(k)!r}"
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0, f"panel {title!r}: {g}"
        assert g["x"] + g["w"] <= 24, f"panel {title!r} is wider than the 24-column grid: {g}"
        rects.append((title, g))

    # Only panels laid out together can collide: the top level, which nested rows' panels join
    # when the row is expanded. Check all of them together (nested panels keep their y).
    for i, (ta, a) in enumerate(rects):
        for tb, b in rects[i + 1:]:
            overlap = (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                       and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
            assert not overlap, f"panels {ta!r} {a} and {tb!r} {b} overlap"


def test_every_panel_queries_via_datasource_variable(dashboard):
    panels = query_panels(dashboard)
    assert panels
    for p in panels:
        title = p.get("title")
        ds = p.get("datasource")
        assert isinstance(ds, dict) and ds.get("uid") == DS_UID, \
            f"panel {title!r} datasource must be {{'uid': {DS_UID!r}}}, got {ds!r}"
        targets = p.get("targets") or []
        exprs = [t.get("expr") for t in targets if isinstance(t.get("expr"), str) and t["expr"].strip()]
        assert exprs, f"panel {title!r} has no target with an expr"
        for t in targets:
            tds = t.get("datasource")
            if tds is not None:
                assert isinstance(tds, dict) and tds.get("uid") == DS_UID, \
                    f"panel {title!r} target {t.get('refId')} datasource: {tds!r}"
        ref_ids = [t.get("refId") for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), f"panel {title!r} has duplicate refIds {ref_ids}"


def test_expr_variables_are_defined(dashboard):
    defined = defined_variables(dashboard)
    for title, expr in all_exprs(dashboard):
        for m in VAR_RE.finditer(expr):
            name = next(g for g in m.groups() if g)
            if name.startswith("__"):
                continue  # Grafana built-ins: $__rate_interval, $__range, ...
            assert name in defined, f"panel {title!r} uses undefined variable ${name}: {expr}"


def test_variable_queries_use_defined_variables(dashboard):
    defined = defined_variables(dashboard)
    for var in dashboard["templating"]["list"]:
        if var.get("type") != "query":
            continue
        query = var.get("query")
        query = query.get("query", "") if isinstance(query, dict) else (query or "")
        for m in VAR_RE.finditer(query):
            name = next(g for g in m.groups() if g)
            assert name.startswith("__") or name in defined, f"variable {var['name']} uses undefined ${name}"


def used_metrics(dash):
    texts = [expr for _, expr in all_exprs(dash)]
    for var in dash["templating"]["list"]:
        if var.get("type") == "query":
            q = var.get("query")
            texts.append(q.get("query", "") if isinstance(q, dict) else (q or ""))
    return {HISTOGRAM_SUFFIX_RE.sub("", m) for t in texts for m in METRIC_RE.findall(t)}


def test_exprs_only_name_exported_metrics(dashboard):
    unknown = used_metrics(dashboard) - KNOWN_METRICS
    assert not unknown, f"the dashboard queries metrics the gateway does not export: {sorted(unknown)}"


def test_every_metric_is_on_the_dashboard(dashboard):
    in_exprs = {HISTOGRAM_SUFFIX_RE.sub("", m) for _, e in all_exprs(dashboard) for m in METRIC_RE.findall(e)}
    missing = KNOWN_METRICS - OPTIONAL_METRICS - in_exprs
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def unbalanced(expr):
    """None if (), [] and {} nest properly (outside string literals), else a description."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    quote = None
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\" and quote != "`":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'`":
            quote = c
        elif c in "([{":
            stack.append((c, i))
        elif c in pairs:
            if not stack or stack[-1][0] != pairs[c]:
                return f"unexpected {c!r} at {i}"
            stack.pop()
        i += 1
    if quote:
        return f"unterminated string {quote}"
    if stack:
        return f"unclosed {stack[-1][0]!r} at {stack[-1][1]}"
    return None


def test_unbalanced_helper_catches_mistakes():
    assert unbalanced('sum(rate(x{a="b"}[5m]))') is None
    assert unbalanced('sum(rate(x{a=")"}[5m]))') is None
    assert unbalanced("sum(rate(x[5m])") is not None
    assert unbalanced("sum(rate(x[5m)])") is not None
    assert unbalanced('x{a="b}') is not None


def test_exprs_brackets_balanced(dashboard):
    # promtool cannot parse a bare PromQL expression, so this is a structural check in Python.
    for title, expr in all_exprs(dashboard):
        problem = unbalanced(expr)
        assert problem is None, f"panel {title!r}: {problem} in {expr}"
