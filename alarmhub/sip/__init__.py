"""SIP: the transport SCAIP devices speak (listener, digest authentication, answers)."""
