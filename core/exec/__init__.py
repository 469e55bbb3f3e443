"""The trial worker that a master launches: ``python -m detlite.exec.trial``.

- ``detlite.exec.trial``: the worker's main (its environment, the operation loop, restore
  and stop), and ``in_trial_worker()`` / ``hand_over(trial_def)``, which ``create()`` uses to
  give its trial class to a worker running the user's script.
- ``detlite.exec.reporter``: ``MasterReporter``, the ``Reporter`` that sends metrics and
  checkpoints to the master.
- ``detlite.exec.logship``: ``LogShipper``, which sends the worker's log lines to the master.

Nothing is imported here, so that ``create()`` can ask ``in_trial_worker()`` cheaply.
"""

from __future__ import annotations
