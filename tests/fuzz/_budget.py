"""The fuzz budget (hypothesis profiles picked by the environment) and the figures it reports.

CI runs every fuzz target with a small, fixed budget: :data:`CI_EXAMPLES` examples each,
derandomized so a run is repeatable. ``make fuzz`` sets ``BGWS_FUZZ_EXAMPLES`` (2000 by
default) and gets the ``bgws-fuzz`` profile instead: that many examples per target, random
seeds, and hypothesis's example database, so a failure found once is tried first next time.
At the end of the session the suite prints, per target, the cases run, crashes, handler calls
with invalid data and how many cases ended with the outbox intact.
"""

from __future__ import annotations

import dataclasses
import os

from hypothesis import HealthCheck, settings

__all__ = ["CI_EXAMPLES", "EXAMPLES", "FIGURES", "FUZZ", "Figures", "figures"]

CI_EXAMPLES = 60
"""Examples per target in CI (each target's share of the < 60 s budget)."""

_ASKED = os.environ.get("BGWS_FUZZ_EXAMPLES", "").strip()
EXAMPLES = int(_ASKED) if _ASKED.isdigit() and int(_ASKED) > 0 else CI_EXAMPLES
"""Examples per target in this run."""

settings.register_profile(
    "bgws-ci",
    max_examples=CI_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "bgws-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ = settings.get_profile("bgws-fuzz" if _ASKED else "bgws-ci")
"""The settings every fuzz target runs under (a decorator)."""


@dataclasses.dataclass
class Figures:
    """What one fuzz target saw over the session."""

    cases: int = 0
    accepted: int = 0
    """Config targets: the cases whose input was valid (a config was built)."""
    crashes: int = 0
    invalid_handler_calls: int = 0
    outbox_checked: int = 0
    outbox_intact: int = 0

    def line(self, name: str) -> str:
        """One line of the end-of-session report."""
        text = f"{name}: {self.cases} cases, {self.crashes} crashes"
        if self.accepted:
            text += f", {self.accepted} accepted as valid"
        if self.outbox_checked:
            text += (
                f", {self.invalid_handler_calls} handler calls with invalid data"
                f", outbox intact after {self.outbox_intact}/{self.outbox_checked} cases"
            )
        return text


FIGURES: dict[str, Figures] = {}
"""Every target's figures, by target name, in the order they first ran."""


def figures(name: str) -> Figures:
    """The figures of target ``name`` (created on first use)."""
    return FIGURES.setdefault(name, Figures())
