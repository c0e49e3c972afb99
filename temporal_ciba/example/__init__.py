"""The payment agent a user copies from: its workflow, activity, resource server and demo."""
