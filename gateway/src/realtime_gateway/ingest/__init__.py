"""Backend events in and out: the Kafka bridge, ``POST /api/events``, chat, job offers and typing.

Kafka records and HTTP events share one envelope (:mod:`.envelope`) and one dispatcher
(:mod:`.dispatch`), so embedded mode (no Kafka) drives the very same handlers.
"""
