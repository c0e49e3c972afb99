"""This project's workflows (an example of a user's own Temporal project)."""
