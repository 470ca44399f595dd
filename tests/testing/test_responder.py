"""The server side of delivery, against a real client: acks, duplicates, feeds, replies, report."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bgws.testing import AckReply, Feed, Reply, Server

from ._client import connect

# -- acks ------------------------------------------------------------------------------------


async def test_acks_have_the_configured_shape_and_ids() -> None:
    """Each message with an id gets one ack carrying that id; messages without one get none."""
    ack = AckReply(message_type="got", id_field="ref", type_field="kind")
    async with Server(ack=ack) as server, connect(server.url) as client:
        client.send_json({"id": "a"}, {"no": "id"}, {"id": 2}, "not json")
        client.send_text("plain text")
        await server.wait_for_messages(4)
        acks = await client.wait_json(2)
        assert acks == [{"kind": "got", "ref": "a"}, {"kind": "got", "ref": 2}]
        (report,) = server.report()
        assert report.acked == ("a", 2)
        assert report.acks_sent == 2


async def test_ack_id_field_of_received_messages_is_configurable() -> None:
    """The id is read from Server.id_field; with None no id is read and nothing is acked."""
    async with Server(ack=AckReply(), id_field="msg_id") as server, connect(server.url) as client:
        client.send_json({"msg_id": 5, "id": "other"})
        assert await client.wait_json(1) == [{"type": "ack", "id": 5}]
        await server.wait_for_messages(1)
        server.id_field = None
        client.send_json({"msg_id": 6}, {"msg_id": 7})
        await server.wait_for_messages(3)
        server.id_field = "msg_id"
        client.send_json({"msg_id": 8})
        assert await client.wait_json(2) == [{"type": "ack", "id": 5}, {"type": "ack", "id": 8}]


async def test_skipped_acks() -> None:
    """skip_acks(n) sends no ack for the next n ids, which the report lists as not acked."""
    async with Server(ack=AckReply()) as server, connect(server.url) as client:
        server.skip_acks(2)
        client.send_json(*({"id": i} for i in range(4)))
        acks = await client.wait_json(2)
        await server.wait_for_messages(4)
        assert [a["id"] for a in acks] == [2, 3]
        (report,) = server.report()
        assert report.not_acked == (0, 1)
        assert report.acked == (2, 3)


async def test_ack_fraction() -> None:
    """fraction=0.5 acks every other message, starting with the first."""
    async with Server(ack=AckReply(fraction=0.5)) as server, connect(server.url) as client:
        client.send_json(*({"id": i} for i in range(6)))
        await server.wait_for_messages(6)
        client.send_json({"id": 6})
        acks = await client.wait_json(4)
        assert [a["id"] for a in acks] == [0, 2, 4, 6]


async def test_paused_acks_are_skipped_or_held() -> None:
    """pause_acks() drops acks; pause_acks(hold=True) keeps them for resume_acks()."""
    async with Server(ack=AckReply()) as server, connect(server.url) as client:
        server.pause_acks()
        client.send_json({"id": "lost"})
        await server.wait_for_messages(1)
        server.pause_acks(hold=True)
        client.send_json({"id": "held"})
        await server.wait_for_messages(2)
        assert client.received_json() == []
        assert server.resume_acks() == 1
        client.send_json({"id": "live"})
        acks = await client.wait_json(2)
        assert [a["id"] for a in acks] == ["held", "live"]
        assert server.report()[0].not_acked == ("lost",)


async def test_held_acks_of_a_closed_connection_are_not_sent() -> None:
    """A held ack whose connection has gone is not released."""
    async with Server(ack=AckReply()) as server:
        server.pause_acks(hold=True)
        async with connect(server.url) as client:
            client.send_json({"id": 1})
            await server.wait_for_messages(1)
        await server.wait_for_disconnects(1)
        assert server.resume_acks() == 0
        assert server.report()[0].not_acked == (1,)


async def test_batched_acks() -> None:
    """With batch=3 ids are acked three at a time; flush_acks() sends a partial batch."""
    async with Server(ack=AckReply(batch=3)) as server, connect(server.url) as client:
        client.send_json(*({"id": i} for i in range(4)))
        assert await client.wait_json(1) == [{"type": "ack", "id": [0, 1, 2]}]
        await server.wait_for_messages(4)
        assert server.flush_acks() == 1
        assert server.flush_acks() == 0
        acks = await client.wait_json(2)
        assert acks[1] == {"type": "ack", "id": [3]}
        assert server.report()[0].acks_sent == 2


async def test_batch_delay_sends_a_partial_batch() -> None:
    """A partial batch goes out after batch_delay without a flush."""
    async with (
        Server(ack=AckReply(batch=10, batch_delay=0.01)) as server,
        connect(server.url) as client,
    ):
        client.send_json({"id": 1}, {"id": 2})
        assert await client.wait_json(1) == [{"type": "ack", "id": [1, 2]}]


async def test_unsent_batch_is_lost_with_its_connection() -> None:
    """Ids waiting in a batch when the connection goes are reported as not acked."""
    async with Server(ack=AckReply(batch=5, batch_delay=60)) as server:
        async with connect(server.url) as client:
            client.send_json({"id": 1})
            await server.wait_for_messages(1)
        await server.wait_for_disconnects(1)
        (report,) = server.report()
        assert (report.acked, report.not_acked) == ((), (1,))


async def test_ack_function() -> None:
    """A function form gets each decoded message and returns the ack to send, or None."""

    def ack(data: Any) -> dict[str, Any] | None:
        return {"op": "ok", "ref": data["n"]} if data.get("n", 0) % 2 else None

    async with Server(ack=ack) as server, connect(server.url) as client:
        client.send_json({"n": 1, "id": "x"}, {"n": 2}, {"n": 3})
        acks = await client.wait_json(2)
        assert acks == [{"op": "ok", "ref": 1}, {"op": "ok", "ref": 3}]
        await server.wait_for_messages(3)
        (report,) = server.report()
        assert (report.acks_sent, report.acked) == (2, ("x",))


async def test_ack_function_errors_are_recorded() -> None:
    """An ack function that raises, or returns what cannot be sent, is recorded as an error."""

    def ack(data: Any) -> Any:
        if data["n"] == 1:
            raise RuntimeError("boom")
        return object()

    async def run() -> None:
        async with Server(ack=ack) as server, connect(server.url) as client:
            client.send_json({"n": 1}, {"n": 2})
            await server.wait_until(lambda: len(server.errors) == 2)

    with pytest.raises(ExceptionGroup) as caught:
        await run()
    assert isinstance(caught.value.exceptions[0], RuntimeError)
    assert isinstance(caught.value.exceptions[1], TypeError)


async def test_acks_go_through_the_ordered_outbox() -> None:
    """An ack waits behind a delayed push and leaves after it, not before."""
    async with Server(ack=AckReply(), delay=0.05) as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.push({"type": "first"})
        client.send_json({"id": 1})
        assert await client.wait_json(2) == [{"type": "first"}, {"type": "ack", "id": 1}]


async def test_acks_wait_while_stalled() -> None:
    """A stalled connection acks nothing until unstalled; then the ack arrives."""
    async with Server(ack=AckReply()) as server, connect(server.url) as client:
        (connection,) = await server.wait_for_connections(1)
        connection.stall()
        client.send_json({"id": 1})
        assert connection.unstall()
        assert await client.wait_json(1) == [{"type": "ack", "id": 1}]


# -- duplicates ------------------------------------------------------------------------------


async def test_duplicates_across_connections_and_restarts() -> None:
    """Ids are tracked for the server's lifetime: across connections, stops and restarts."""
    async with Server() as server:
        async with connect(server.url) as client:
            client.send_json({"id": "a"}, {"id": "b"}, {"id": "a"})
            await server.wait_for_messages(3)
        async with connect(server.url) as client:
            client.send_json({"id": "b"})
            await server.wait_for_messages(4)
        await server.restart()
        async with connect(server.url) as client:
            client.send_json({"id": "c"}, {"id": "a"}, {"no": "id"})
            assert await server.wait_for_ids(3) == ["a", "b", "c"]
            await server.wait_for_messages(7)
        assert server.duplicates == ["a", "b", "a"]
        assert server.unique_ids() == ["a", "b", "c"]
        assert server.received_ids() == ["a", "b", "a", "b", "c", "a"]
        assert [r.duplicates for r in server.report()] == [("a",), ("b",), ("a",)]


async def test_wait_for_ids_times_out() -> None:
    """wait_for_ids fails with a clear message when too few distinct ids arrive."""
    async with Server() as server, connect(server.url) as client:
        client.send_json({"id": 1}, {"id": 1})
        await server.wait_for_messages(2)
        with pytest.raises(TimeoutError, match="2 distinct ids"):
            await server.wait_for_ids(2, timeout=0.05)


# -- the feed --------------------------------------------------------------------------------


async def test_publish_numbers_sends_and_keeps_a_bounded_history() -> None:
    """publish() adds increasing seqs, reaches open connections and keeps the newest few."""
    async with Server(feed=Feed(history=2)) as server:
        assert server.publish({"type": "tick"}) == 1  # nobody connected: still kept
        async with connect(server.url) as client:
            await server.wait_for_connections(1)
            assert server.publish({"type": "tick", "seq": 99}) == 2
            assert server.publish({"type": "tock"}, fragments=2) == 3
            first, *parts = await client.wait_data(3)
            assert msgspec.json.decode(first.payload) == {"type": "tick", "seq": 2}
            assert [part.fin for part in parts] == [False, True]
            joined = b"".join(part.payload for part in parts)
            assert msgspec.json.decode(joined) == {"type": "tock", "seq": 3}
        assert server.published == [{"type": "tick", "seq": 2}, {"type": "tock", "seq": 3}]
        assert server.report()[0].published == (2, 3)


async def test_publish_refuses_what_it_cannot_send() -> None:
    """A non-mapping, an unencodable message or bad fragments raise and take no seq."""
    async with Server() as server:
        with pytest.raises(TypeError, match="mapping"):
            server.publish("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            server.publish({"x": object()})
        with pytest.raises(ValueError, match="fragments"):
            server.publish({}, fragments=0)
        assert server.publish({}) == 1


async def test_resume_replays_exactly_what_follows_the_position() -> None:
    """A resume request gets every kept message after its position, in order, then live ones."""
    async with Server() as server:
        for n in range(5):
            server.publish({"type": "tick", "n": n})
        async with connect(server.url) as client:
            client.send_json({"type": "resume", "after": 2})
            replayed = await client.wait_json(3)
            assert replayed == [
                {"type": "tick", "n": 2, "seq": 3},
                {"type": "tick", "n": 3, "seq": 4},
                {"type": "tick", "n": 4, "seq": 5},
            ]
            server.publish({"type": "tick", "n": 5})  # live
            client.send_json({"type": "resume", "after": 5}, {"type": "resume", "after": 99})
            await server.wait_for_messages(3)
            assert [m["seq"] for m in await client.wait_json(5)] == [3, 4, 5, 6, 6]
        (report,) = server.report()
        assert report.resumes == (2, 5, 99)
        assert report.replayed == (3, 4, 5, 6)
        assert report.published == (6,)


async def test_resume_with_custom_field_names() -> None:
    """Custom seq, type, request and position names are honoured; resumes can be turned off."""
    feed = Feed(seq_field="s", request_type="replay", position_field="from", type_field="op")
    async with Server(feed=feed) as server:
        server.publish({"op": "tick"})
        server.publish({"op": "tick"})
        async with connect(server.url) as client:
            client.send_json({"type": "resume", "after": 0}, {"op": "replay", "from": 1})
            assert await client.wait_json(1) == [{"op": "tick", "s": 2}]
            server.feed = Feed(request_type=None)
            client.send_json({"type": "resume", "after": 0}, {"id": "marker"})
            await server.wait_for_ids(1)
            assert server.report()[0].resumes == (1,)
            assert client.received_json() == [{"op": "tick", "s": 2}]


async def test_resume_replays_through_the_outbox_after_queued_frames() -> None:
    """A replay is queued after frames already waiting on the connection, keeping order."""
    async with Server(delay=0.05) as server, connect(server.url) as client:
        await server.wait_for_connections(1)
        server.publish({"type": "tick"})
        client.send_json({"type": "resume", "after": 0})
        assert [m["seq"] for m in await client.wait_json(2)] == [1, 1]


# -- replies ---------------------------------------------------------------------------------


async def test_reply_answers_requests_with_their_id() -> None:
    """Requests of the given type get a reply with their id and the body's fields."""
    reply = Reply(request_type="double", body=lambda request: {"value": request["x"] * 2})
    async with Server(reply=reply) as server, connect(server.url) as client:
        client.send_json(
            {"type": "double", "id": "r1", "x": 2},
            {"type": "double", "x": 5},  # no id: cannot be answered
            {"type": "other", "id": "r2"},
            {"type": "double", "id": "r3", "x": 10},
        )
        replies = await client.wait_json(2)
        assert replies == [
            {"type": "reply", "value": 4, "id": "r1"},
            {"type": "reply", "value": 20, "id": "r3"},
        ]
        await server.wait_for_messages(4)
        assert server.report()[0].replies_sent == 2


async def test_reply_body_errors_are_recorded() -> None:
    """A reply body that raises is recorded as a hook error; the connection stays up."""

    async def run() -> None:
        server = Server(reply=Reply(body=lambda request: request["missing"]))
        async with server, connect(server.url) as client:
            client.send_json({"id": 1})
            await server.wait_until(lambda: bool(server.errors))
            assert server.open_connections

    with pytest.raises(KeyError, match="missing"):
        await run()


# -- the report ------------------------------------------------------------------------------


async def test_report_per_connection() -> None:
    """The report lists, per connection, messages, ids, duplicates, acks, replays and close."""
    async with Server(ack=AckReply()) as server:
        server.publish({"type": "tick"})
        async with connect(server.url + "first") as client:
            client.send_json({"id": 1}, {"id": 2}, {"type": "resume", "after": 0})
            await client.wait_json(3)
            client.transport.send_close(4000)
            await server.wait_for_disconnects(1)
        async with connect(server.url) as client:
            client.send_json({"id": 2}, "x")
            await client.wait_json(1)
            await server.wait_for_messages(5)
            first, second = server.report()
            assert (first.connection_id, first.target, first.messages) == (1, "/first", 3)
            assert (first.ids, first.duplicates, first.acked) == ((1, 2), (), (1, 2))
            assert (first.resumes, first.replayed, first.acks_sent) == ((0,), (1,), 2)
            assert (first.closed, first.close_code) == (True, 4000)
            assert (second.ids, second.duplicates, second.acked) == ((2,), (2,), (2,))
            assert (second.messages, second.closed, second.close_code) == (2, False, None)
            assert str(second).endswith(", open")
