"""SIP for the SCAIP receiver: transports, digest authentication, transactions, answers."""
