"""detlite.ray: trial workers placed on a Ray cluster the user already runs.

The ``ray`` resource manager (``detlite.ray.manager.RayResourceManager``) is chosen in the
master's settings (``resource_manager: {type: ray, address: ...}``, or ``detlite master
--resource-manager ray --ray-address ...``). Importing this package never imports ray: the
plugin registers the manager by import path, and only its driver loads ray -- in a child
process of ``detlite master`` (``_driver``, reached through ``_link``), or in the process
that built the manager (``driver: inline``).
"""

from __future__ import annotations

__all__: list[str] = []
