"""Metrics, gauges and structured logging: what the daemon says about itself.

One place for every metric and log set-up, so a renamed metric or log field is
one change that the deploy tests catch.
"""
