"""The demo: the whole system on this machine, and the demo OP that plays the approver's phone."""
