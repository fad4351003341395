"""The study's levers, one module each, registered here like the run kinds (`datawall.study.jobs.KINDS`).

Spec, plan, analysis and report iterate LEVERS in this order: the `[levers]` spec model is built from it, each
enabled lever adds its jobs to the plan and its points to the report. Adding a lever = a module with its spec
section, jobs, points and labels (see scale.py for the smallest one) + one line below, taking its name out of
RESERVED. See docs/study.md, "Adding a lever".
"""

from __future__ import annotations

from datawall.study.levers import preference, repetition, rl, scale, synthetic, test_time
from datawall.study.levers.base import Lever

LEVERS: dict[str, Lever] = {lever.name: lever for lever in (scale.LEVER, repetition.LEVER, test_time.LEVER,
                                                              synthetic.LEVER, preference.LEVER, rl.LEVER)}
# levers a spec may name but datawall cannot run yet: accepted only with enabled = false
RESERVED: tuple[str, ...] = ()

__all__ = ["LEVERS", "RESERVED", "Lever"]
