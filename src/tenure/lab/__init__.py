"""The failure-detection lab: agent traces, a fleet simulator, and replay through
the real engine with scores for false recoveries and detection latency.

    from tenure.lab import simulate, replay
    trace = simulate(agents=10, tasks=200, seed=1, profile="seed")
    print(replay(trace, "spec").to_dict())

See docs/lab.md for the trace format, the model of agent behaviour and the scores.
"""

from __future__ import annotations

from tenure.lab.policies import lab_policy, policy_names, register_policy
from tenure.lab.replay import ReplayOptions, TraceEvidence, replay, replay_async
from tenure.lab.scores import Scores, StintOutcome, score, scores_table
from tenure.lab.simulate import PROFILES, Profile, profile_names, simulate
from tenure.lab.trace import (
    Stint,
    TraceEvent,
    TraceType,
    dump_trace,
    load_trace,
    parse_trace,
    stints,
)

__all__ = [
    "PROFILES",
    "Profile",
    "ReplayOptions",
    "Scores",
    "Stint",
    "StintOutcome",
    "TraceEvent",
    "TraceEvidence",
    "TraceType",
    "dump_trace",
    "lab_policy",
    "load_trace",
    "parse_trace",
    "policy_names",
    "profile_names",
    "register_policy",
    "replay",
    "replay_async",
    "score",
    "scores_table",
    "simulate",
    "stints",
]
