"""Scenario parsing (errors name the key), the weighted picker and the parameter generators."""

from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edgetds.loadtest.scenario import ScenarioError, WeightedPicker, load_scenario, parse_scenario

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "loadtest"


def doc(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "load": {"concurrency": 2, "count": 10},
        "queries": [{"sql": "SELECT 1"}],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_parse(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.queries
    assert (scenario.load.duration_s is None) != (scenario.load.count is None)


@pytest.mark.parametrize(
    ("data", "key", "hint"),
    [
        ({"queries": [{"sql": "SELECT 1"}]}, "load", "missing [load]"),
        (doc(queries=[]), "queries", "at least one"),
        (doc(load={"concurrency": 2}), "load", "duration_s"),
        (doc(load={"count": 5, "duration_s": 3}), "load", "exactly one"),
        (doc(load={"count": 0}), "load.count", ">= 1"),
        (doc(load={"count": 5, "concurrency": "8"}), "load.concurrency", "integer"),
        (doc(load={"count": 5, "rate": -1}), "load.rate", "> 0"),
        (doc(load={"count": 5, "speed": 3}), "load.speed", "unknown key"),
        (doc(queries=[{"name": "x"}]), "queries[0]", "exactly one of sql"),
        (doc(queries=[{"sql": "SELECT 1", "query": "q"}]), "queries[0]", "exactly one of sql"),
        (doc(queries=[{"sql": "SELECT 1", "weight": 0}]), "queries[0].weight", "> 0"),
        (doc(queries=[{"sql": "SELECT 1", "wieght": 2}]), "queries[0].wieght", "unknown key"),
        (
            doc(queries=[{"sql": "S", "params": {"id": {"int": [5, 1]}}}]),
            "queries[0].params.id.int",
            "greater than high",
        ),
        (
            doc(queries=[{"sql": "S", "params": {"id": {"int": [1]}}}]),
            "queries[0].params.id.int",
            "[low, high]",
        ),
        (
            doc(queries=[{"sql": "S", "params": {"id": {"range": [1, 2]}}}]),
            "queries[0].params.id",
            "exactly one generator key",
        ),
        (
            doc(queries=[{"sql": "S", "params": {"id": {"int": [1, 2], "uuid": True}}}]),
            "queries[0].params.id",
            "exactly one generator key",
        ),
        (
            doc(queries=[{"sql": "S", "params": {"r": {"choice": []}}}]),
            "queries[0].params.r.choice",
            "non-empty list",
        ),
        (
            doc(queries=[{"sql": "S", "params": {"r": [1, 2]}}]),
            "queries[0].params.r",
            "choice",
        ),
        (
            doc(queries=[{"sql": "S", "params": {"u": {"uuid": "yes"}}}]),
            "queries[0].params.u.uuid",
            "must be true",
        ),
        (doc(identity={"groups": "analysts"}), "identity.groups", "list of strings"),
        (doc(colour="blue"), "colour", "unknown top-level key"),
    ],
)
def test_errors_name_the_key(data: dict[str, Any], key: str, hint: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    message = str(info.value)
    assert message.startswith(f"{key}:") or f": {key}:" in message
    assert hint in message


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[load]\nconcurrency = 2\ncount = 3\n[[queries]]\nsql = 5\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: queries\[0\]\.sql: must be a non-empty"):
        load_scenario(bad)
    bad.write_text("[load\n")
    with pytest.raises(ScenarioError, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.toml")


def test_weighted_picker_follows_weights() -> None:
    scenario = parse_scenario(
        doc(
            queries=[
                {"name": "a", "sql": "SELECT 1", "weight": 6},
                {"name": "b", "sql": "SELECT 2", "weight": 3},
                {"name": "c", "sql": "SELECT 3", "weight": 1},
            ]
        )
    )
    picker = WeightedPicker(scenario.queries)
    rng = random.Random(7)
    counts = Counter(picker.pick(rng).name for _ in range(20_000))
    assert set(counts) == {"a", "b", "c"}
    assert counts["a"] / 20_000 == pytest.approx(0.6, abs=0.02)
    assert counts["b"] / 20_000 == pytest.approx(0.3, abs=0.02)
    assert counts["c"] / 20_000 == pytest.approx(0.1, abs=0.02)


def test_generators() -> None:
    scenario = parse_scenario(
        doc(
            queries=[
                {
                    "sql": "S",
                    "params": {
                        "i": {"int": [3, 5]},
                        "f": {"float": [0.5, 1.5]},
                        "c": {"choice": ["x", "y"]},
                        "u": {"uuid": True},
                        "s": {"string": "cust-##-??-*"},
                        "q": {"sequence": 10},
                        "k": "constant",
                        "d": {"type": "decimal(10,2)", "choice": ["1.50"]},
                    },
                }
            ]
        )
    )
    query = scenario.queries[0]
    rng = random.Random(1)
    values = [query.make_params(rng) for _ in range(300)]
    assert {v["i"] for v in values} == {3, 4, 5}
    assert all(0.5 <= v["f"] <= 1.5 for v in values)
    assert {v["c"] for v in values} == {"x", "y"}
    assert all(uuid.UUID(v["u"]).version == 4 for v in values)
    assert len({v["u"] for v in values}) == 300
    assert all(re.fullmatch(r"cust-\d\d-[a-z]{2}-[A-Za-z0-9]", v["s"]) for v in values)
    assert [v["q"] for v in values[:3]] == [10, 11, 12]
    assert all(v["k"] == "constant" for v in values)
    assert values[0]["d"] == {"type": "decimal(10,2)", "value": "1.50"}
    # the HTTP body carries sql + params (a named query carries "query" instead)
    body = query.http_body(rng)
    assert body["sql"] == "S"
    assert set(body["params"]) == {"i", "f", "c", "u", "s", "q", "k", "d"}


def test_same_seed_same_parameters() -> None:
    scenario = parse_scenario(doc(queries=[{"sql": "S", "params": {"i": {"int": [1, 10**9]}}}]))
    q = scenario.queries[0]
    a = [q.make_params(random.Random(5)) for _ in range(3)]
    b = [q.make_params(random.Random(5)) for _ in range(3)]
    assert a == b


def test_command_line_overrides() -> None:
    scenario = parse_scenario(doc(load={"rate": 50, "concurrency": 4, "duration_s": 5}))
    assert scenario.load.mode == "open"
    closed = scenario.with_load(concurrency=16)
    assert closed.load.mode == "closed"
    assert closed.load.concurrency == 16
    counted = scenario.with_load(count=100)
    assert counted.load.count == 100
    assert counted.load.duration_s is None
    assert scenario.with_load(rate=10).load.rate == 10
    with pytest.raises(ScenarioError, match="command line: load.concurrency"):
        scenario.with_load(concurrency=0)
