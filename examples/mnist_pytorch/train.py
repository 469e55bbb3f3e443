"""Train the MNIST trial from a script, as Determined's native examples did.

python train.py --local --test                       # seconds: train, validate, checkpoint, reload
python train.py --config adaptive.yaml --local       # the whole search on the embedded master
python train.py --config adaptive.yaml --master URL  # submit it to a running master

A search run with ``--local`` (or ``--master ... --wait``) ends by printing the best
checkpoint and the two lines of Python that load it.
"""

from __future__ import annotations

from detlite.experimental.script import train_main

from model_def import MNistTrial

if __name__ == "__main__":
    train_main(MNistTrial, __file__, __doc__)
