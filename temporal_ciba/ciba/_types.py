"""Types shared by the protocol modules."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import PlainSerializer, SecretStr

# A token or secret: masked in repr() and str(), written in clear only when a model is
# serialized to JSON, which happens only inside an encrypted Temporal payload.
Secret = Annotated[
    SecretStr,
    PlainSerializer(lambda value: value.get_secret_value(), return_type=str, when_used="json"),
]

# RFC 9396 §2: a list of JSON objects, each with a string `type`.
AuthorizationDetails = list[dict[str, Any]]
