"""What several samples share: the offline scripted model, the tool ledger and the tool agents' runner."""
