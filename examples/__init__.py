"""Samples for temporal-ciba, one folder each: the demo, the payment agent with its payment API,
a PydanticAI gated tool, the OpenAI Agents SDK maintenance bot and support assistant, and the
policy and quorum examples. They use only the public names of `temporal_ciba`."""
