"""What third-party libraries may say on the user's terminal: errors only, unless ``--verbose``.

Ray logs its start-up (``Started a local Ray instance``, the token-authentication
notice) at INFO/WARNING; MLflow, Optuna and alembic log set-up chatter; torch,
MLflow and Ray emit deprecation and future warnings about their own APIs. None of
it is something the user can act on, and it buries the run's own output. With
``--verbose`` all of it is shown (Python's ``default`` warning filter: each once).

``import ray`` sets the ``ray`` logger to INFO and ``ray.init`` to its
``logging_level``, whose default is read from ``RAY_LOGGER_LEVEL`` when Ray is
imported; the CLI imports Ray later, so that variable is what keeps Ray quiet
(a value the user set is kept; Ray's own processes inherit it).

The raylet's "N PYTHON worker processes have been started ... 4x the maximum
expected startup concurrency" notice is not a log record: the driver's error
listener prints it to stdout whatever ``log_to_driver`` says. On 2 cores every
generation starts more than 8 short-lived workers (trial functions, Train
controllers and workers), so it would appear in every run. Ray's
``RAY_DEDUP_LOGS_SKIP_REGEX`` (read when Ray is imported) drops those lines.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["THIRD_PARTY_LOGGERS", "quiet_third_party"]

THIRD_PARTY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "urllib3", "onnxscript")
_THIRD_PARTY_MODULES = r"(ray|mlflow|torch|optuna|onnx|onnxscript|onnxruntime|sqlalchemy|alembic|pydantic)(\.|$)"
_NOTICES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_RAY_LEVEL, _QUIET_RAY = "RAY_LOGGER_LEVEL", "error"
_RAY_SKIP, _WORKER_POOL_NOTICE = "RAY_DEDUP_LOGS_SKIP_REGEX", "worker processes have been started on node"


def quiet_third_party(verbose: bool) -> None:
    """Silence third-party warnings and logs below ERROR; with ``verbose`` show every warning once instead."""
    if verbose:
        warnings.simplefilter("default")
        for variable, quiet in ((_RAY_LEVEL, _QUIET_RAY), (_RAY_SKIP, _WORKER_POOL_NOTICE)):
            if os.environ.get(variable) == quiet:
                del os.environ[variable]
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET if name != "ray" else logging.INFO)
        return
    for category in _NOTICES:
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", module=_THIRD_PARTY_MODULES)
    os.environ.setdefault(_RAY_LEVEL, _QUIET_RAY)
    os.environ.setdefault(_RAY_SKIP, _WORKER_POOL_NOTICE)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)

