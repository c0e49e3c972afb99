"""Approval by policy: the amount policy with its two-person quorum, and a service account."""
