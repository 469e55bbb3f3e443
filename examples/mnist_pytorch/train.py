"""Train the MNIST trial from a script, as Determined's native examples did.

python train.py --local --test     # a seconds-long check: train, validate, checkpoint, reload
python train.py --config adaptive.yaml --local --test
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

import detlite as det

from model_def import MNistTrial

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="const.yaml", help="experiment config (YAML)")
    parser.add_argument("--local", action="store_true", help="run here instead of on a master")
    parser.add_argument("--test", action="store_true", help="a quick test run, not training")
    args = parser.parse_args()
    config = yaml.safe_load((HERE / args.config).read_text())
    # Test mode reports each stage as it goes and returns the metrics and checkpoint path.
    det.experimental.create(
        trial_def=MNistTrial,
        config=config,
        local=args.local,
        test=args.test,
        context_dir=str(HERE),
    )


if __name__ == "__main__":
    main()
