"""Bone detection on a chest radiograph: YOLOv9 (ultralytics) trained from scratch on
the dataset's YOLO boxes, one box per catalog bone.

- ``detector``: :class:`Detection`, :class:`Detector` (shipped weights, SHA-256 checked),
  :func:`build_model` (architecture from the yaml inside the ultralytics package).
- ``train``: training, export of the shipped weights, test-split mAP
  (``python -m X2BRLib.detect.train``).
- ``checkpoint``: ultralytics training checkpoints read without running pickled code.
- ``commands``: ``x2br detect`` and ``x2br train-detector``.

ultralytics and torch are imported lazily; nothing here ever downloads anything, writes to
the user's home or prints on stdout (``YOLO_OFFLINE`` and ``YOLO_CONFIG_DIR`` are set before
ultralytics is first imported, its logger is sent to stderr: see ``detector.ultralytics``).
"""
