"""The payment agent on PydanticAI: the payment tool gated by a CIBA approval."""
