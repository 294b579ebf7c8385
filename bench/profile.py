"""Summarise a py-spy `--format raw` profile (collapsed stacks) into where the time goes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _name(frame: str) -> str:
    # py-spy frames look like "function (module/path.py:123)": keep function and file.
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "alarmhub/", "lib/python3"):
        if marker in path:
            path = path[path.index(marker) :]
            break
    return f"{func} ({path})"


def top(
    stacks: list[tuple[list[str], int]], n: int = 15
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    total = sum(c for _, c in stacks)
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[_name(frames[-1])] += count
        for name in {_name(f) for f in frames if "alarmhub/" in f or "aiosqlite/" in f}:
            inclusive[name] += count
    return total, own.most_common(n), inclusive.most_common(n)


def summary(path: Path, n: int = 15) -> str:
    total, own, inclusive = top(parse(path.read_text(errors="replace")), n)
    if not total:
        return "   (empty profile)"
    lines = [f"   profile: {total} samples in {path}", "   self time:"]
    lines += [f"     {c / total * 100:5.1f} %  {name}" for name, c in own]
    lines.append("   inclusive (alarmhub and aiosqlite frames):")
    lines += [f"     {c / total * 100:5.1f} %  {name}" for name, c in inclusive]
    return "\n".join(lines)
