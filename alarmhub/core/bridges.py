"""Which Zigbee2MQTT bridge may speak for a Zigbee device (issue 13 item 9).

A Zigbee device has no MQTT account of its own: its bridge publishes for it, under
the bridge's base topic `zigbee2mqtt/<bridge>/<device>`, and the broker's ACL lets
each bridge account write only under its own name. So the bridge level of the topic
is authenticated and the device level is only what that bridge claims. Any bridge
can claim any device id; the registry records the one bridge that may.

A device with no bridge recorded is refused too, not let through from any bridge:
"accept anything until told otherwise" would reopen the hole for every newly
registered device, in every municipality, until someone remembered to set it.
"""

from __future__ import annotations

import re

from alarmhub.core.model import Device, Rejected, RejectReason

__all__ = ["BRIDGE_ID_PATTERN", "check_bridge", "valid_bridge"]

# A bridge id is the bridge's MQTT username and a level of its base topic: the ACL's
# `%u` is refused for a name holding `+`, `#` or `/`, and a level must not be empty.
BRIDGE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_BRIDGE_ID = re.compile(BRIDGE_ID_PATTERN)


def valid_bridge(value: str) -> bool:
    return _BRIDGE_ID.fullmatch(value) is not None


def check_bridge(device: Device, via: str | None) -> Rejected | None:
    """None when `device` may report through bridge `via`, else why not.

    `via` is None for a topic that names no bridge (native, OwnTracks): those are
    authenticated by the device's own account, and there is nothing to check.
    """
    if via is None or device.bridge == via:
        return None
    if device.bridge is None:
        return Rejected(
            RejectReason.WRONG_BRIDGE,
            f"device has no bridge recorded and came through bridge {via!r}: "
            "register the bridge it is paired with (--bridge, or the `bridge` field/column)",
            device.id,
        )
    return Rejected(
        RejectReason.WRONG_BRIDGE,
        f"device is registered to bridge {device.bridge!r} but came through bridge {via!r}",
        device.id,
    )
