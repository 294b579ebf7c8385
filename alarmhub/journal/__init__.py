"""Journal export: delivery of answered alarms to the residents' journals (issue 17)."""
