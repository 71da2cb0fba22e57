"""bridges/run_source.py: the time before py-spy's first sample is shared by the entities the
bridge counted on a thread since before it, in proportion to their first samples, when the
first samples find that thread running."""
from __future__ import annotations

from types import SimpleNamespace

from gyroscope.bridges.events import Entity, EntityKind, Event, EventKind, Observation
from gyroscope.bridges.run_source import RunSource

LOOP = Entity(EntityKind.LOOP, "/app/prog.py", "spin", 10)
OTHER = Entity(EntityKind.LOOP, "/app/prog.py", "other", 20)
MS = 1_000_000


def sampler(first_ns: int) -> SimpleNamespace:
    return SimpleNamespace(record=SimpleNamespace(first_sample_ns=first_ns), interval_ns=10 * MS)


def source_with_hits(*events: Event) -> RunSource:
    src = RunSource(None, 1234, lambda f: True, sampling=False)
    src._note_first_hits(Observation(0, 0, events=list(events)))
    return src


def run_event(ent: Entity, tid: int, t_ns: int, role: str = "run") -> Event:
    return Event(ent, role, EventKind.SAMPLE_RUN, tid, t_ns, 3, 30 * MS)


def test_running_entity_gets_the_time_before_the_first_sample():
    src = source_with_hits(Event(LOOP, "iter", EventKind.LOOP_ITER, 7, 100 * MS, 320, 0))
    sampled = Observation(0, 0, events=[run_event(LOOP, 7, 118 * MS)])
    src._credit_start(sampled, sampler(118 * MS))
    start = [e for e in sampled.events if e.role == "start"]
    assert len(start) == 1 and start[0].entity == LOOP and start[0].duration_ns == 18 * MS
    # once: later samples of the session credit nothing
    later = Observation(0, 0, events=[run_event(LOOP, 7, 600 * MS)])
    src._credit_start(later, sampler(118 * MS))
    assert not [e for e in later.events if e.role == "start"]


def test_no_credit_when_the_first_sample_is_elsewhere_or_late():
    src = source_with_hits(Event(LOOP, "iter", EventKind.LOOP_ITER, 7, 100 * MS, 320, 0))
    sampled = Observation(0, 0, events=[run_event(OTHER, 7, 118 * MS)])     # not the counted loop
    src._credit_start(sampled, sampler(118 * MS))
    assert not [e for e in sampled.events if e.role == "start"]
    src = source_with_hits(Event(LOOP, "iter", EventKind.LOOP_ITER, 7, 100 * MS, 320, 0))
    sampled = Observation(0, 0, events=[run_event(LOOP, 7, 400 * MS)])      # first seen long after
    src._credit_start(sampled, sampler(118 * MS))
    assert not [e for e in sampled.events if e.role == "start"]


def test_two_counted_loops_share_the_start_by_their_samples():
    src = source_with_hits(Event(LOOP, "iter", EventKind.LOOP_ITER, 7, 100 * MS, 320, 0),
                           Event(OTHER, "iter", EventKind.LOOP_ITER, 7, 104 * MS, 320, 0))
    sampled = Observation(0, 0, events=[Event(LOOP, "run", EventKind.SAMPLE_RUN, 7, 118 * MS, 3, 30 * MS),
                                        Event(OTHER, "run", EventKind.SAMPLE_RUN, 7, 121 * MS, 1, 10 * MS)])
    src._credit_start(sampled, sampler(118 * MS))
    start = {e.entity: e.duration_ns for e in sampled.events if e.role == "start"}
    # 18 ms from the earliest first hit, 3:1 as sampled (the first sample being LOOP's does not
    # give it all)
    assert start == {LOOP: 13_500_000, OTHER: 4_500_000}


def test_threads_that_share_the_interpreter_lock_share_the_start():
    """Four pool workers counted from 100 ms, first sampled at 118 ms: together they ran at most
    18 ms (one at a time), not 4 x 18."""
    hits = [Event(LOOP, "iter", EventKind.LOOP_ITER, tid, 100 * MS, 320, 0) for tid in (7, 8, 9, 10)]
    src = source_with_hits(*hits)
    sampled = Observation(0, 0, events=[run_event(LOOP, tid, 118 * MS) for tid in (7, 8, 9, 10)])
    src._credit_start(sampled, sampler(118 * MS))
    start = [e.duration_ns for e in sampled.events if e.role == "start"]
    assert len(start) == 4 and abs(sum(start) - 18 * MS) <= 4


def test_timed_gaps_leave_out_the_other_callbacks_dispatch():
    """A loop drawing from a generator has the generator's callbacks in each timed gap: the bridge
    leaves out their durations, the channel their dispatch (halfway between near and far)."""
    from gyroscope.bridges.channel import ChannelServer
    me = SimpleNamespace(dispatch_ns=None)
    own = (40.0, 60.0)
    alone = ChannelServer._duration(me, 65 * 300, 321, 0, own, 256)
    assert alone == (300 - 40) * 320
    drawn = ChannelServer._duration(me, 65 * 300, 321, 0, own, 256, others=3 * 65)
    assert drawn == (300 - 40 - 3 * 50) * 320
