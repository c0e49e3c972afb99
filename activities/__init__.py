"""Everything that touches the network or does cryptography; `activities.ciba` is the protocol."""
