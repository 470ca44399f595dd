"""The pure parts of the delivery kit: ack and reply shapes, feeds, id ledger, ack gate."""

from __future__ import annotations

import pytest

import bgws
from bgws.testing import AckReply, ConnectionReport, Feed, Reply
from bgws.testing._delivery import AckGate, IdLedger, SeqLog


def test_ack_reply_shapes() -> None:
    """An ack carries the id alone, or a list when batching; every field name is configurable."""
    assert AckReply().message(["a"]) == {"type": "ack", "id": "a"}
    custom = AckReply(message_type="got", id_field="ids", type_field="kind", batch=3)
    assert custom.message(["a"]) == {"kind": "got", "ids": ["a"]}
    assert custom.message(["a", "b"]) == {"kind": "got", "ids": ["a", "b"]}
    assert AckReply().message(["a", "b"]) == {"type": "ack", "id": ["a", "b"]}


def test_ack_reply_is_understood_by_the_engine_policy() -> None:
    """The engine's AckPolicy finds the acked ids in the acks AckReply builds."""
    policy = bgws.AckPolicy(message_type="ack", id_field="id")
    single = bgws.Message("ack", AckReply().message([7]))
    batched = bgws.Message("ack", AckReply(batch=2).message([7, 8]))
    assert policy.acked_ids(single) == [7]
    assert policy.acked_ids(batched) == [7, 8]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"message_type": ""},
        {"id_field": ""},
        {"batch": 0},
        {"batch_delay": -1.0},
        {"fraction": 1.5},
        {"fraction": -0.1},
    ],
)
def test_ack_reply_rejects_bad_options(kwargs: dict[str, object]) -> None:
    """AckReply refuses empty names, an empty batch, a negative delay, a fraction out of 0-1."""
    with pytest.raises(ValueError, match="AckReply"):
        AckReply(**kwargs)  # type: ignore[arg-type]


def test_reply_answers_with_the_request_id() -> None:
    """A reply carries the request's id and the body's fields; the body cannot change the id."""
    reply = Reply(request_type="double", body=lambda r: {"value": r["x"] * 2, "id": "forged"})
    assert reply.answer({"type": "double", "x": 2}, 9) == {"type": "reply", "value": 4, "id": 9}
    assert reply.answer({"type": "other", "x": 2}, 9) is None
    assert Reply(id_field="in_reply_to").answer({}, 1) == {"type": "reply", "in_reply_to": 1}
    assert Reply(body=lambda r: None).answer({"x": 1}, 1) is None


def test_reply_rejects_bad_options() -> None:
    """Reply refuses an empty request type and a body that is not callable."""
    with pytest.raises(ValueError, match="request_type"):
        Reply(request_type="")
    with pytest.raises(ValueError, match="callable"):
        Reply(body="nope")  # type: ignore[arg-type]


def test_feed_recognises_resume_requests() -> None:
    """Only a message of the request type with an integer position is a resume request."""
    feed = Feed()
    assert feed.resume_position({"type": "resume", "after": 3}) == 3
    assert feed.resume_position({"type": "resume", "after": "3"}) is None
    assert feed.resume_position({"type": "resume", "after": True}) is None
    assert feed.resume_position({"type": "other", "after": 3}) is None
    assert feed.resume_position(["resume"]) is None
    assert Feed(request_type=None).resume_position({"type": "resume", "after": 3}) is None


def test_feed_matches_the_engine_resume_policy() -> None:
    """The request the engine's ResumePolicy sends is recognised by a Feed with the same names."""
    policy = bgws.ResumePolicy(seq_field="s", request_type="replay", position_field="from")
    feed = Feed(seq_field="s", request_type="replay", position_field="from", type_field="kind")
    assert feed.resume_position(policy.resume_message(5, "kind")) == 5
    assert Feed().resume_position(bgws.ResumePolicy().resume_message(5, "type")) == 5


def test_feed_rejects_bad_options() -> None:
    """Feed refuses empty names and a history below one."""
    with pytest.raises(ValueError, match="seq_field"):
        Feed(seq_field="")
    with pytest.raises(ValueError, match="history"):
        Feed(history=0)


def test_id_ledger_counts_repeats() -> None:
    """Repeats are listed once per repeat; ids differ as in JSON (1 is not "1")."""
    ledger = IdLedger()
    assert [ledger.add(i) for i in (1, "1", 1, [1], 1, [1])] == [
        False,
        False,
        True,
        False,
        True,
        True,
    ]
    assert ledger.unique() == [1, "1", [1]]
    assert ledger.unique_count == 3
    assert ledger.duplicates == [1, 1, [1]]
    assert ledger.ids == [1, "1", 1, [1], 1, [1]]
    assert (ledger.count(1), ledger.count("1"), ledger.count(2)) == (3, 1, 0)


def test_seq_log_numbers_and_bounds_history() -> None:
    """Published messages get increasing seqs; only the newest `history` are kept."""
    log = SeqLog(Feed(history=3))
    assert log.last_seq is None
    source = {"type": "tick"}
    assert [log.append(source)[0] for _ in range(5)] == [1, 2, 3, 4, 5]
    assert source == {"type": "tick"}  # the caller's mapping is not changed
    assert [m["seq"] for m in log.messages()] == [3, 4, 5]
    assert [seq for seq, _ in log.after(3)] == [4, 5]
    assert log.after(5) == []
    assert (log.last_seq, log.next_seq, log.published) == (5, 6, 5)
    with pytest.raises(TypeError, match="mapping"):
        log.append("text")  # type: ignore[arg-type]


def test_seq_log_reconfigure() -> None:
    """A new feed cuts the history to its size and keeps numbering; start applies before use."""
    log = SeqLog(Feed())
    log.configure(Feed(start=10))
    assert log.append({})[0] == 10
    log.append({})
    log.configure(Feed(history=1, start=1))
    assert [seq for seq, _ in log.after(0)] == [11]
    assert log.append({})[0] == 12


def test_ack_gate_fraction_is_even_and_exact() -> None:
    """A fraction acks exactly that share, spread evenly, starting with the first."""
    gate = AckGate()
    assert [gate.decide(0.5) for _ in range(4)] == ["ack", "skip", "ack", "skip"]
    gate = AckGate()
    decisions = [gate.decide(0.29) for _ in range(100)]
    assert decisions.count("ack") == 29
    assert decisions[0] == "ack"
    assert AckGate().decide(0.0) == "skip"


def test_ack_gate_skip_pause_hold() -> None:
    """Skips count down before the fraction; a pause skips or holds until resumed."""
    gate = AckGate()
    gate.skip(2)
    gate.skip(1)
    assert gate.skipping == 3
    assert [gate.decide() for _ in range(4)] == ["skip", "skip", "skip", "ack"]
    gate.pause(hold=True)
    assert gate.decide() == "hold"
    gate.pause(hold=False)
    assert gate.decide() == "skip"
    gate.resume()
    assert gate.decide() == "ack"
    with pytest.raises(ValueError, match=">= 0"):
        gate.skip(-1)


def test_connection_report_prints_and_converts() -> None:
    """A report reads as one line and converts to plain data with lists."""
    report = ConnectionReport(
        connection_id=2,
        target="/ws",
        messages=3,
        ids=("a", "b", "a"),
        duplicates=("a",),
        acked=("a", "b"),
        not_acked=("a",),
        acks_sent=2,
        resumes=(4,),
        replayed=(5, 6),
        published=(7,),
        replies_sent=0,
        closed=True,
        close_code=None,
    )
    line = str(report)
    assert line.startswith("connection 2 /ws: 3 messages, 3 ids (1 duplicates)")
    assert "2 acked in 2 acks" in line
    assert "1 resumes, 2 replayed" in line
    assert line.endswith("closed without a CLOSE frame")
    data = report.to_dict()
    assert data["ids"] == ["a", "b", "a"]
    assert data["close_code"] is None
    assert data["connection_id"] == 2
