"""Development helpers, not the daemon: a private Mosquitto for tests and the bench,
and the demo that `make demo` runs. They ship in the wheel but nothing in the
runtime imports them.
"""
