"""Deploy stage: from searched architectures to served models.

``retrain`` (Optuna + ASHA tuning through Ray Tune, then Ray Train from scratch),
``export`` (TorchScript and ONNX with onnxruntime parity), ``registry`` (MLflow
model registry, champion promotion), ``predict``, ``schedule`` (cron, lock,
resume), ``stage`` (the stage as one resumable step of a run) and ``cli``
(the ``promote``/``predict`` parsers, handlers imported on use). Import the
modules themselves: this package imports nothing, so light commands stay light.
"""
