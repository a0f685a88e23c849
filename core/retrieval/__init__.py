"""Retrieval: hybrid search over the three tiers, fusion, diversity and token-budgeted context assembly."""
