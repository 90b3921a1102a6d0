"""`protocol.FairAdmission`: the shared scenarios (protocol/vectors/admission.json, which the
Worker's JavaScript twin runs too) plus the cases only Python can get wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protocol import AdmissionStatistics, FairAdmission

VECTORS = Path(__file__).resolve().parents[2] / "protocol" / "vectors" / "admission.json"
SCENARIOS = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


class Ticket:
    """A caller's ticket: compared by identity, like the relays' waiters."""

    def __init__(self, name: str) -> None:
        self.name = name


def run_scenario(vector: dict[str, Any]) -> None:
    admission: FairAdmission[Ticket] = FairAdmission(max_waiting=vector["max_waiting"])
    numbers: dict[str, int] = {}
    tickets: dict[str, Ticket] = {}
    for step in vector["steps"]:
        if "offer" in step:
            key = step["offer"]
            for _ in range(step.get("count", 1)):
                numbers[key] = numbers.get(key, 0) + 1
                ticket = tickets.setdefault(f"{key}{numbers[key]}", Ticket(f"{key}{numbers[key]}"))
                assert admission.offer(key, ticket, limit=step["limit"]) == step["result"], step
        elif "grant" in step:
            granted = admission.grant(step["grant"])
            assert [t.name for _, t in granted] == step["result"], step
            assert all(t.name.startswith(key) for key, t in granted)
        elif "withdraw" in step:
            name = step["withdraw"]
            ticket = tickets.get(name, Ticket(name))
            assert admission.withdraw(name.rstrip("0123456789"), ticket) is step["result"], step
        elif "release" in step:
            admission.release(step["release"])
        else:
            assert admission.statistics() == AdmissionStatistics(**step["statistics"]), step
        assert admission.admitted_total() == admission.statistics().admitted, step


@pytest.mark.parametrize("vector", SCENARIOS, ids=[v["name"] for v in SCENARIOS])
def test_shared_scenario(vector: dict[str, Any]) -> None:
    run_scenario(vector)


def test_flood_never_delays_a_newcomer_past_the_next_free_slot() -> None:
    """Whatever one identity queued, each other identity's waiter is granted at the next slot."""
    admission: FairAdmission[Ticket] = FairAdmission(max_waiting=10_000)
    flood = [Ticket(f"f{i}") for i in range(300)]
    for ticket in flood:
        assert admission.offer("flooder", ticket, limit=300) is None
    assert len(admission.grant(4)) == 4  # the tunnel's 4 slots
    for victim in range(3):
        ticket = Ticket(f"v{victim}")
        assert admission.offer(f"victim{victim}", ticket, limit=300) is None
    for victim in range(3):
        admission.release("flooder")
        ((key, _),) = admission.grant(1)
        assert key == f"victim{victim}"
    assert admission.admitted("flooder") == 1
    assert admission.waiting("flooder") == 296
    assert admission.waiting() == 296


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="max_waiting"):
        FairAdmission[Ticket](max_waiting=-1)
    admission: FairAdmission[Ticket] = FairAdmission(max_waiting=1)
    with pytest.raises(ValueError, match="release"):
        admission.release("nobody")
    assert admission.grant(3) == []
    assert admission.offer("a", Ticket("a1"), limit=0) == "identity"
