"""`python -m alarmhub.cli`, which the tests and the bench use to run the daemon.

A separate file rather than an `if __name__ == "__main__"` block in cli/main.py:
running that module as `__main__` would load a second copy of it, and commands
in other modules raise the first copy's `CommandError`, which the second copy's
`except CommandError` would not catch (a traceback instead of "alarmhub: …").
"""

from alarmhub.cli import main

raise SystemExit(main())
