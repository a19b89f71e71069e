"""Escalations (excessive renewals, stalls) and the handoff's every field."""

from __future__ import annotations

from datetime import timedelta

from corekit import Bench, at, make_task

from tenure.core import (
    RECOVERED_MARKER,
    LeaseFlag,
    Policy,
    build_handoff,
    create,
    handoff_comment,
    is_visible,
    render_instructions,
    with_late_report,
)

# Escalation ---------------------------------------------------------------------------------


def test_excessive_renewals_escalate_once_per_lease() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    for step in range(1, 10):
        bench.set(step * 10)
        bench.report(progress=step * 5)
    assert "lease.escalated" not in bench.event_types()
    bench.set(100)
    bench.report(progress=50)  # the 10th renewal
    lease = bench.live()
    assert lease is not None and LeaseFlag.ESCALATED in lease.flags
    bench.set(110)
    bench.report(progress=55)
    assert bench.event_types().count("lease.escalated") == 1
    assert [kind for kind, _ in bench.hooks] == ["escalated"]
    assert sum("[tenure:escalated]" in comment for comment in bench.comments) == 1
    assert bench.counters["escalations"] == 1
    escalated = next(e for e in bench.events if str(e.type) == "lease.escalated")
    assert escalated.data["reason"] == "max_renewals"


def test_five_renewals_without_progress_mean_stalled_once() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(10)
    bench.report(progress=20)
    for step in range(2, 6):
        bench.set(step * 10)
        bench.report(progress=20)
    lease = bench.live()
    assert lease is not None and LeaseFlag.STALLED not in lease.flags
    bench.set(60)
    bench.report(progress=20)  # the 5th renewal without progress
    lease = bench.live()
    assert lease is not None and {LeaseFlag.STALLED, LeaseFlag.ESCALATED} <= lease.flags
    bench.set(70)
    bench.report(progress=20)
    assert bench.event_types().count("lease.stalled") == 1
    assert bench.event_types().count("lease.escalated") == 1


def test_twenty_minutes_of_signals_without_progress_mean_stalled() -> None:
    bench = Bench()
    bench.add()
    bench.claim()
    bench.set(60)
    bench.report(progress=30)
    for minute in range(2, 21):
        bench.set(minute * 60)
        bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and LeaseFlag.STALLED not in lease.flags
    bench.set(21 * 60)  # 20 min since progress moved at 60 s
    bench.touch_all("a1")
    lease = bench.live()
    assert lease is not None and LeaseFlag.STALLED in lease.flags
    stalled = next(e for e in bench.events if str(e.type) == "lease.stalled")
    assert stalled.data["since"] == at(60).isoformat()


def test_progress_moving_again_clears_the_stalled_flag() -> None:
    bench = Bench(policy=Policy(stuck_threshold_renewals=2))
    bench.add()
    bench.claim()
    for step in (10, 20, 30):
        bench.set(step)
        bench.report(progress=0)
    lease = bench.live()
    assert lease is not None and LeaseFlag.STALLED in lease.flags
    bench.set(40)
    bench.report(progress=5)
    lease = bench.live()
    assert lease is not None and LeaseFlag.STALLED not in lease.flags
    assert LeaseFlag.ESCALATED in lease.flags  # escalation stays: once per lease


# Handoff -------------------------------------------------------------------------------------


def recovered(message: str = "", branch: str | None = None) -> Bench:
    bench = Bench()
    bench.add()
    bench.claim("a1")
    bench.set(90)
    bench.report("a1", progress=65, message=message, branch=branch, head_sha="abc1234")
    bench.recover_now()
    return bench


def test_the_handoff_carries_every_field() -> None:
    bench = recovered("parser done\ntests next", branch="feature/parser")
    handoff = bench.task().handoff
    assert handoff is not None
    assert handoff.recovered_at == bench.now
    assert handoff.recovered_from_agent == "a1"
    assert handoff.previous_progress == 65
    assert handoff.time_spent_minutes == (bench.now - at(0)) / timedelta(minutes=1)
    assert handoff.recovery_reason == "lease_expired"
    assert handoff.previous_agent_branch == "feature/parser"
    assert handoff.head_sha == "abc1234"
    assert handoff.last_progress_message == "parser done\ntests next"
    assert handoff.late_notes == ()
    assert handoff.expires_at == bench.now + timedelta(hours=24)
    assert handoff.epoch == 1
    assert set(handoff.to_dict()) >= {
        "recovered_at",
        "recovered_from_agent",
        "previous_progress",
        "time_spent_minutes",
        "recovery_reason",
        "previous_agent_branch",
        "head_sha",
        "last_progress_message",
        "late_notes",
        "expires_at",
        "instructions",
    }


def test_the_instructions_say_merge_first_read_the_log_and_continue() -> None:
    bench = recovered("parser done\n\ntests next", branch="feature/parser")
    handoff = bench.task().handoff
    assert handoff is not None
    text = handoff.instructions
    assert "`feature/parser`" in text
    assert "git merge feature/parser --no-edit" in text
    assert "git log feature/parser" in text
    assert "65%" in text and "do not restart" in text
    assert "> parser done\n>\n> tests next" in text
    assert "git diff main" not in text
    assert text.index("git merge") < text.index("git log")


def test_without_a_note_the_instructions_point_at_the_diff() -> None:
    bench = recovered()
    handoff = bench.task().handoff
    assert handoff is not None
    assert handoff.previous_agent_branch == "tenure/a1"  # the template
    assert "git diff main tenure/a1" in handoff.instructions
    assert "do not re-implement" in handoff.instructions


def test_the_branch_template_is_a_setting() -> None:
    policy = Policy(branch_template="agents/{agent_id}/work")
    lease = create(make_task(), "a9", at(0), policy).lease
    assert lease is not None
    handoff = build_handoff(make_task(), lease, at(60), policy, "released")
    assert handoff.previous_agent_branch == "agents/a9/work"


def test_the_recovery_comment_carries_the_marker_and_the_instructions() -> None:
    bench = recovered("note")
    handoff = bench.task().handoff
    assert handoff is not None
    comment = handoff_comment(handoff, recovered=True)
    assert comment.startswith(RECOVERED_MARKER) and handoff.instructions in comment
    assert RECOVERED_MARKER not in handoff_comment(handoff, recovered=False)


def test_a_handoff_is_shown_for_24_hours() -> None:
    bench = recovered()
    handoff = bench.task().handoff
    assert is_visible(handoff, bench.now + timedelta(hours=23))
    assert not is_visible(handoff, bench.now + timedelta(hours=24))
    assert not is_visible(None, bench.now)


def test_late_notes_join_and_progress_never_goes_down() -> None:
    bench = recovered()
    handoff = bench.task().handoff
    assert handoff is not None
    later = with_late_report(handoff, "a1", bench.now, 30, "still here")
    assert later.previous_progress == 65 and len(later.late_notes) == 1
    assert "> a1 at" in later.instructions
    same = with_late_report(later, "a1", bench.now, None, "   ")
    assert same.late_notes == later.late_notes
    many = later
    for index in range(30):
        many = with_late_report(many, "a1", bench.now, 90, f"note {index}")
    assert len(many.late_notes) == 20 and many.late_notes[-1].endswith("note 29")
    assert many.previous_progress == 90


def test_a_second_holders_handoff_keeps_the_first_holders_progress() -> None:
    bench = recovered()
    bench.claim("a2")
    bench.advance(10)
    bench.report("a2", progress=10)
    bench.recover_now()
    handoff = bench.task().handoff
    assert handoff is not None and handoff.recovered_from_agent == "a2"
    assert handoff.previous_progress == 65


def test_render_instructions_mentions_the_last_commit() -> None:
    text = render_instructions(
        agent_id="a1", branch="b", progress=10, reason="released", message="", head_sha="beef"
    )
    assert "`beef`" in text
