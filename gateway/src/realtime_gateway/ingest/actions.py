"""Socket-side effects of the Kafka bridge: chat send, job offer answers, typing, location samples.

Each action reads top to bottom like a socket handler: parse the payload (VALIDATION on failure),
ask one authorization rule, do one effect through a store, the producer or the fan-out, and
return the contract's ack. Nothing here raises into python-socketio; unexpected failures become
an ``INTERNAL`` ack.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Final, Protocol

from realtime_gateway.auth import authz
from realtime_gateway.ingest import envelope as ev
from realtime_gateway.ingest.dispatch import CHAT_TYPING, JOB_OFFER_CLOSED, Dispatcher
from realtime_gateway.ingest.ports import Emitter, EventSink, OfferDecision, OfferOutcome, OfferStore
from realtime_gateway.observability.logs import current_correlation_id
from realtime_gateway.state.base import OrderAccessStore
from realtime_gateway.tasks import Background
from realtime_gateway.transport.acks import Ack, ErrorCode, err, ok
from realtime_gateway.transport.handlers import Conn
from realtime_gateway.transport.payloads import ChatMessageSend, OfferAccept, OfferReject, OrderRef, parse

log = logging.getLogger(__name__)

SAMPLE_EVERY: Final = 10


class ChatState(Protocol):
    async def claim_client_message(
        self, sender_id: str, client_message_id: str, message_id: str
    ) -> str | None: ...
    async def release_client_message(self, sender_id: str, client_message_id: str) -> None: ...
    async def typing_allowed(self, user_id: str) -> bool: ...
    async def count_location(self, porter_id: str) -> int: ...


class IngestActions:
    def __init__(
        self,
        *,
        emitter: Emitter,
        access: OrderAccessStore,
        offers: OfferStore,
        chat: ChatState,
        dispatcher: Dispatcher,
        sink: EventSink | None,
        sample_every: int = SAMPLE_EVERY,
    ) -> None:
        self._emitter = emitter
        self._access = access
        self._offers = offers
        self._chat = chat
        self._dispatcher = dispatcher
        # None in embedded mode: no Kafka, chat goes straight to the dispatcher.
        self._sink = sink
        self._sample_every = sample_every
        self._background = Background("kafka send")
        self.samples_sent = 0

    # --- chat ---------------------------------------------------------------------------------

    async def chat_send(self, conn: Conn, data: Any) -> Ack:
        payload = parse(ChatMessageSend, data)
        claims = conn.claims
        decision = authz.can_chat(claims, await self._access.get(payload.orderId))
        if not decision.allowed:
            return err(decision.code, decision.message)
        # Derived from the sender's clientMessageId: a retry after a failed send (whose record may
        # still reach the broker late) carries the same messageId, and the order room's history
        # drops the second copy (recovery/history.py), so a message is never delivered twice.
        message_key = f"rtg-chat:{claims.user_id}:{payload.clientMessageId}"
        message_id = str(uuid.uuid5(uuid.NAMESPACE_URL, message_key))
        earlier = await self._chat.claim_client_message(claims.user_id, payload.clientMessageId, message_id)
        if earlier is not None:
            # A retry of a message already accepted: the same answer, no second message.
            return ok(messageId=earlier, duplicate=True)
        sent_at = ev.now_iso()
        envelope = ev.build_envelope(
            "chat.message.sent",
            {
                "orderId": payload.orderId,
                "messageId": message_id,
                "senderId": claims.user_id,
                "senderRole": claims.role,
                "text": payload.text,
                "sentAt": sent_at,
                "clientMessageId": payload.clientMessageId,
            },
            # The socket event's id, so its logs and the consumers' share one correlation id.
            correlation_id=current_correlation_id(),
            # Same eventId on a retry: if the failed attempt's record still reaches the broker,
            # the consumers' eventId dedup drops whichever copy comes second.
            event_id=message_id,
        )
        try:
            if self._sink is not None:
                # Acked only once the broker has it; every instance's consumer fans it out.
                await self._sink.send("chatEvents", payload.orderId, envelope)
            else:
                await self._dispatcher.handle(ev.parse_event(envelope))
        except Exception as exc:
            await self._chat.release_client_message(claims.user_id, payload.clientMessageId)
            log.warning("chat message %s for order %s not sent: %s", message_id, payload.orderId, exc)
            return err(
                ErrorCode.INTERNAL, "chat is temporarily unavailable; retry with the same clientMessageId"
            )
        return ok(messageId=message_id, sentAt=sent_at)

    async def typing(self, conn: Conn, data: Any) -> Ack:
        payload = parse(OrderRef, data)
        claims = conn.claims
        decision = authz.can_chat(claims, await self._access.get(payload.orderId))
        if not decision.allowed:
            return err(decision.code, decision.message)
        if not await self._chat.typing_allowed(claims.user_id):
            # Typing is a hint: a throttled one is dropped quietly rather than reported as an error.
            return ok(relayed=False)
        await self._emitter.to_order(
            payload.orderId,
            CHAT_TYPING,
            {"orderId": payload.orderId, "userId": claims.user_id, "role": claims.role},
            skip_sid=conn.sid,
        )
        return ok(relayed=True)

    # --- job offers -----------------------------------------------------------------------

    async def offer_accept(self, conn: Conn, data: Any) -> Ack:
        payload = parse(OfferAccept, data)
        return await self._answer(conn, payload.offerId, OfferDecision.ACCEPT, None)

    async def offer_reject(self, conn: Conn, data: Any) -> Ack:
        payload = parse(OfferReject, data)
        return await self._answer(conn, payload.offerId, OfferDecision.REJECT, payload.reason)

    async def _answer(self, conn: Conn, offer_id: str, decision: OfferDecision, reason: str | None) -> Ack:
        porter_id = conn.claims.user_id
        if conn.claims.role != "porter":
            return err(ErrorCode.FORBIDDEN, "only porters answer offers")
        # The script is the authorization: only an offered porter, only before expiry, only once.
        result = await self._offers.decide(offer_id, porter_id, decision)
        if result.outcome is not OfferOutcome.OK:
            return err(result.outcome.value, _OFFER_MESSAGES[result.outcome])
        assert result.order_id is not None
        accepted = decision is OfferDecision.ACCEPT
        record: dict[str, Any] = {"offerId": offer_id, "orderId": result.order_id, "porterId": porter_id}
        if reason:
            record["reason"] = reason
        if self._sink is not None:
            envelope = ev.build_envelope("job.offer.accepted" if accepted else "job.offer.rejected", record)
            # Redis already decided the race; the record must follow even if the broker is slow.
            self._background.spawn(self._send_until_acked("porterEvents", porter_id, envelope))
        closed = {"offerId": offer_id, "reason": "accepted" if accepted else "rejected"}
        await self._emitter.to_user(porter_id, JOB_OFFER_CLOSED, closed, skip_sid=conn.sid)
        if accepted:
            for other in result.porter_ids:
                if other != porter_id:
                    await self._emitter.to_user(
                        other, JOB_OFFER_CLOSED, {"offerId": offer_id, "reason": "taken"}
                    )
        return ok(offerId=offer_id, orderId=result.order_id)

    # --- location sampling ------------------------------------------------------------------

    async def on_location_stored(self, porter_id: str, location: dict[str, Any], order_ids: set[str]) -> None:
        """The location pipeline's hook: every ``sample_every``-th update per porter goes to Kafka."""
        if self._sink is None:
            return
        count = await self._chat.count_location(porter_id)
        if count % self._sample_every != 0:
            return
        payload = {
            "porterId": porter_id,
            "lat": location["lat"],
            "lng": location["lng"],
            "heading": location.get("heading"),
            "speed": location.get("speed"),
            "accuracy": location.get("accuracy"),
            "timestamp": int(location["timestamp"]),
            "orderIds": sorted(order_ids),
        }
        envelope = ev.build_envelope(
            "porter.location.sampled", {k: v for k, v in payload.items() if v is not None}
        )
        self._background.spawn(self._send_until_acked("porterEvents", porter_id, envelope))

    # --- background sends -------------------------------------------------------------------

    async def _send_until_acked(
        self, topic_key: str, key: str, envelope: dict[str, Any], attempts: int = 10
    ) -> None:
        assert self._sink is not None
        delay = 0.2
        for attempt in range(1, attempts + 1):
            try:
                await self._sink.send(topic_key, key, envelope)
                if envelope["type"] == "porter.location.sampled":
                    self.samples_sent += 1
                return
            except Exception as exc:
                log.warning("sending %s (attempt %d) failed: %s", envelope["type"], attempt, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.error("gave up sending %s %s", envelope["type"], envelope["eventId"])

    async def drain(self, within: float = 10.0) -> None:
        """Wait for background sends (at shutdown, before the producer stops)."""
        await self._background.wait(within)


_OFFER_MESSAGES: Final = {
    OfferOutcome.NOT_FOUND: "unknown offer",
    OfferOutcome.FORBIDDEN: "offer made to another porter",
    OfferOutcome.CONFLICT: "offer already answered",
    OfferOutcome.EXPIRED: "offer expired",
}
