"""The operator and municipality pages, served by alarmhub itself (no CDN)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from alarmhub.app import AlarmHub


def mount_pages(app: FastAPI, hub: AlarmHub) -> None:
    del app, hub  # filled in by the web page work (issue 4)
