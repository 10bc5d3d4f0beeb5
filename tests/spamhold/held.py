"""HeldMessage rows made directly, for query, scoping and validation tests.

Rows created by ingestion from a real node are the ingestion tests' business; these tests
only need rows with known values. ``node`` stays None (no node to reach) unless given.
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any

from spamhold.models import HeldMessage, Reason, Status
from tenants.models import Customer

_counter = itertools.count(1)
T0 = datetime.datetime(2022, 10, 11, 19, 31, 6, 609000, tzinfo=datetime.UTC)  # 1665516666.609


def make_held(customer: Customer | None, **fields: Any) -> HeldMessage:
    n = next(_counter)
    sender = fields.pop("sender", "rackcorptest345@gmail.com")
    recipient = fields.pop("recipient", "salestest@rackcorp.com")
    values: dict[str, Any] = {
        "node_name": "smtp1",
        "queue_id": f"4Q{n:08X}",
        "customer": customer,
        "customer_path": customer.path if customer else "/",
        "received_at": T0,
        "sender": sender,
        "sender_domain": sender.rsplit("@", 1)[-1].lower() if "@" in sender else "",
        "recipients": [recipient.lower()],
        "recipient": recipient,
        "recipient_domain": recipient.rsplit("@", 1)[-1].lower(),
        "subject": "This is a test email",
        "size": 1234,
        "reason": Reason.SPAM,
        "status": Status.ONHOLD,
        "expires_at": datetime.datetime.fromtimestamp(1665519800, tz=datetime.UTC),
    }
    values.update(fields)
    return HeldMessage.objects.create(**values)
