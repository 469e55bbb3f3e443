"""Wire schemas (the JSON bodies), one module per resource.

Every schema derives from ``WireModel``: fields are snake_case in Python and lowerCamelCase
on the wire, as gRPC-gateway wrote them; requests accept either spelling.
"""

from __future__ import annotations

from detlite.master.schemas.base import WireModel

__all__ = ["WireModel"]
