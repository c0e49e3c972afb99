"""This project's activities (an example of a user's own Temporal project)."""
