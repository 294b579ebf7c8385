"""MQTT ingest: the paho client that takes device messages in, and its packet buffer.

Kept apart from the pipeline so a second ingest (another transport) is a sibling
package, not a change here.
"""
