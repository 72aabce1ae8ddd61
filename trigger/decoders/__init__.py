"""Decoders from every wire format trigger receives into `trigger.events.Event`.

One module per source (`oss`, `kafka`, `cron`, `webhook`), plus `detect`, which recognises
an event file by its shape for `trigger match`. Every decoder raises
`trigger.errors.DecodeError` naming what is wrong and where, and refuses bodies larger than
its `max_bytes` argument (default `MAX_BYTES`, 10 MiB).
"""

from trigger.decoders._common import MAX_BYTES
from trigger.decoders.cron import cron_tick, decode_cron_file
from trigger.decoders.detect import ACCEPTED_SHAPES, decode_document, decode_file
from trigger.decoders.kafka import FORMATS, Format, decode_kafka_file, decode_kafka_record, view
from trigger.decoders.oss import (
    decode_eventbridge,
    decode_mns,
    decode_mns_document,
    decode_mns_message,
    decode_oss_record,
)
from trigger.decoders.webhook import decode_body, decode_webhook, decode_webhook_file

__all__ = [
    "ACCEPTED_SHAPES",
    "FORMATS",
    "MAX_BYTES",
    "Format",
    "cron_tick",
    "decode_body",
    "decode_cron_file",
    "decode_document",
    "decode_eventbridge",
    "decode_file",
    "decode_kafka_file",
    "decode_kafka_record",
    "decode_mns",
    "decode_mns_document",
    "decode_mns_message",
    "decode_oss_record",
    "decode_webhook",
    "decode_webhook_file",
    "view",
]
