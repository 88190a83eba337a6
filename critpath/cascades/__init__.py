"""Compound strategies over the model protocol (to come): cascades of tiers with
confidence scorers and hedged escalation, parallel votes with early quorum, and
fast-then-refine streams of draft, revision and final events.
"""

__all__: list[str] = []
