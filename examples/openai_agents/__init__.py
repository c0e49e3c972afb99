"""The OpenAI Agents SDK tool agents: a maintenance bot and a support assistant."""
