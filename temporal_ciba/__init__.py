"""temporal-ciba: durable human approval for Temporal workflows through OpenID Connect CIBA."""
