"""The device simulator: a pure traffic model and a thin MQTT publisher.

`homes` says who lives with which devices, `traffic` turns that into a plan of
``(time, topic, payload)`` from a seeded random generator and a start time (no
I/O, so tests check it as data), `wire` renders each message in the format a
real device of that make sends, and `publisher` paces the plan onto a broker.
"""
