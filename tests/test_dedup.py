"""Deduplication by (device, boot, seq): in order, out of order, reboots, staleness."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.ingest.dedup import Deduplicator


def test_in_order_then_resend() -> None:
    d = Deduplicator()
    assert [d.mark("a", 0, s) for s in range(3)] == ["new", "new", "new"]
    assert d.mark("a", 0, 1) == "duplicate"
    assert d.mark("b", 0, 1) == "new"  # another device


def test_out_of_order_within_the_window() -> None:
    d = Deduplicator(window=8)
    assert d.mark("a", 0, 5) == "new"
    assert d.mark("a", 0, 2) == "new"
    assert d.mark("a", 0, 2) == "duplicate"
    assert d.mark("a", 0, 4) == "new"
    assert d.mark("a", 0, 5) == "duplicate"
    assert d.mark("a", 0, 13) == "new"  # moves the window: 5 is now 8 behind
    assert d.mark("a", 0, 5) == "stale"
    assert d.mark("a", 0, 6) == "new"


def test_reboot_restarts_sequence_and_old_boot_can_still_flush() -> None:
    d = Deduplicator(boots=2)
    assert d.mark("a", 0, 10) == "new"
    assert d.mark("a", 1, 0) == "new"  # rebooted: seq restarts
    assert d.mark("a", 0, 11) == "new"  # store-and-forward of the previous boot
    assert d.mark("a", 0, 10) == "duplicate"
    assert d.mark("a", 2, 0) == "new"  # a third boot pushes boot 0 out
    assert d.mark("a", 0, 12) == "stale"
    assert d.mark("a", 1, 0) == "duplicate"


def test_state_round_trip() -> None:
    d = Deduplicator(window=16)
    for s in (0, 1, 5, 3):
        d.mark("a", 7, s)
    e = Deduplicator(window=16)
    e.load(d.state())
    assert [e.check("a", 7, s) for s in range(7)] == [
        "duplicate", "duplicate", "new", "duplicate", "new", "duplicate", "new",
    ]  # fmt: skip


def test_state_with_wide_bitmaps_packs_into_a_checkpoint() -> None:
    import msgpack

    d = Deduplicator(window=1024)
    for s in range(0, 3000, 3):
        d.mark("a", 2, s)
    blob = msgpack.packb(d.state(), use_bin_type=True)  # bitmaps far wider than 64 bits
    e = Deduplicator(window=1024)
    e.load({k: [tuple(b) for b in v] for k, v in msgpack.unpackb(blob).items()})
    assert [e.check("a", 2, s) for s in range(2990, 2999)] == [
        "new",
        "duplicate",
        "new",
        "new",
        "duplicate",
        "new",
        "new",
        "duplicate",
        "new",
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), max_size=400), st.integers(1, 64))
def test_matches_a_set_within_the_window(seqs: list[int], window: int) -> None:
    d = Deduplicator(window=window)
    seen: set[int] = set()
    hwm = -1
    for s in seqs:
        verdict = d.mark("a", 0, s)
        if s <= hwm - window:
            assert verdict == "stale"
        elif s in seen:
            assert verdict == "duplicate"
        else:
            assert verdict == "new"
            seen.add(s)
            hwm = max(hwm, s)


def test_shuffled_resends_apply_each_uplink_once() -> None:
    rng = random.Random(3)
    sends = [s for s in range(500) for _ in range(rng.randint(1, 3))]
    # Local shuffles only (a device does not fall 1000 uplinks behind itself).
    for i in range(0, len(sends), 20):
        chunk = sends[i : i + 20]
        rng.shuffle(chunk)
        sends[i : i + 20] = chunk
    d = Deduplicator()
    applied = [s for s in sends if d.mark("a", 0, s) == "new"]
    assert sorted(applied) == list(range(500))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 5), st.integers(0, 40)), max_size=200),
    st.integers(1, 16),
    st.integers(1, 3),
)
def test_mark_says_what_check_said_and_remembers_it(
    uplinks: list[tuple[str, int, int]], window: int, boots: int
) -> None:
    d = Deduplicator(window=window, boots=boots)
    for device, boot, seq in uplinks:
        verdict = d.check(device, boot, seq)
        assert d.mark(device, boot, seq) == verdict
        assert d.check(device, boot, seq) != "new"
