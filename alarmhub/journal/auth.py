"""How a journal request is authorised: one per municipality (HelseID + DPoP in production)."""
from __future__ import annotations
from typing import Protocol

class RequestAuth(Protocol):
    async def headers(self, method: str, url: str) -> dict[str, str]:
        """The Authorization and DPoP headers for one request (a fresh proof each call)."""
        ...
    def observe(self, status: int, headers: dict[str, str]) -> bool:
        """Learn from a response (a DPoP-Nonce, an invalid token); True: retry the request once now."""
        ...

class NoAuth:
    async def headers(self, method: str, url: str) -> dict[str, str]:
        return {}
    def observe(self, status: int, headers: dict[str, str]) -> bool:
        return False
