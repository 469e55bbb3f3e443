"""``det.tensorboard.metric_writers``: writers a trial uses for TensorBoard data of its own.

``pytorch.TorchWriter`` is Determined's writer for PyTorch trials. Importing this package
imports no framework; ``detlite.tensorboard.metric_writers.pytorch`` imports torch.
"""
