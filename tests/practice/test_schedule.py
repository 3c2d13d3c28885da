"""Spaced repetition: Leitner boxes from scores, due dates, counts, profiles."""

from __future__ import annotations

import pytest

from ingest.bank import Entry, Point
from practice.grade import Grade, PointGrade
from practice.schedule import DAY, INTERVALS_DAYS, PracticeStore, PracticeStoreError, filter_entries, next_slot


def E(i: int, guide: str = "a.md") -> Entry:
    return Entry(id=f"q{i}", question=f"Q{i}?", guide=guide, section=f"G › S{i % 2}", question_lines=(1, 1),
                 answer_lines=(2, 2), reference="r", points=[Point("p", (2, 2), "item")])


class Scored(Grade):
    def __init__(self, e, score):
        super().__init__(e, "answer")
        self._s = score

    @property
    def score(self):
        return self._s


def test_boxes_move_with_the_score():
    s = next_slot(None, "q", 0.9, 0.0)
    assert (s.box, s.due) == (1, INTERVALS_DAYS[0] * DAY)          # a first good answer: box 1
    s = next_slot(s, "q", 0.9, 10.0)
    assert s.box == 2 and s.due == 10.0 + INTERVALS_DAYS[1] * DAY and s.attempts == 2
    assert next_slot(s, "q", 0.6, 0.0).box == 2                    # middling: stays
    assert next_slot(s, "q", 0.2, 0.0).box == 1                    # poor: back to the start
    top = s
    for _ in range(10):
        top = next_slot(top, "q", 1.0, 0.0)
    assert top.box == len(INTERVALS_DAYS)


def test_store_records_attempts_and_counts_due_new_mastered(tmp_path):
    bank = [E(i) for i in range(4)] + [E(9, "b.md")]
    st = PracticeStore(tmp_path / "p.sqlite")
    st.record("me", Scored(bank[0], 1.0), now=0.0)
    st.record("me", Scored(bank[1], 0.1), now=0.0)
    st.record("other", Scored(bank[2], 1.0), now=0.0)
    c = st.counts("me", bank, now=0.5 * DAY)
    assert c == {"questions": 5, "seen": 2, "new": 3, "due": 0, "mastered": 0}
    assert st.counts("me", bank, now=1.5 * DAY)["due"] == 2
    assert [e.id for e in st.due("me", bank, now=1.5 * DAY)] == ["q0", "q1", "q2", "q3", "q9"]
    assert [e.id for e in st.due("me", bank, now=0.5 * DAY)] == ["q2", "q3", "q9"]     # the profile's own
    assert [h["id"] for h in st.history("me")] == ["q0", "q1"] and st.profiles() == ["me", "other"]
    st.close()
    again = PracticeStore(tmp_path / "p.sqlite")                                       # survives a restart
    assert again.slots("me")["q0"].box == 1
    assert [e.id for e in filter_entries(bank, guide="b.md")] == ["q9"]
    assert [e.id for e in filter_entries(bank, section="S1")] == ["q1", "q3", "q9"]


def test_a_damaged_database_says_how_to_recover(tmp_path):
    p = tmp_path / "p.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PracticeStoreError, match="Move it aside"):
        PracticeStore(p)
