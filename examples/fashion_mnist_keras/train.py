"""Train the Fashion-MNIST Keras trial from a script, as Determined's native examples did.

python train.py --local --test                       # seconds: train, validate, checkpoint, reload
python train.py --config adaptive.yaml --local       # the whole search on the embedded master
python train.py --config adaptive.yaml --master URL  # submit it to a running master

A search run with ``--local`` (or ``--master ... --wait``) ends by printing the best
checkpoint and the two lines of Python that load it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

import detlite as det

from model_def import FashionMNISTTrial

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="const.yaml", help="experiment config (YAML)")
    parser.add_argument("--local", action="store_true", help="run here instead of on a master")
    parser.add_argument("--test", action="store_true", help="a quick test run, not training")
    parser.add_argument("--master", help="the master's address (default: DETLITE_MASTER)")
    parser.add_argument("--wait", action="store_true", help="with --master: wait for the end")
    args = parser.parse_args()
    config_path = Path(args.config)
    if not config_path.is_file():
        config_path = HERE / args.config  # a name of one of this example's configs
    config = yaml.safe_load(config_path.read_text())
    result = det.experimental.create(
        trial_def=FashionMNISTTrial,
        config=config,
        local=args.local,
        test=args.test,
        context_dir=str(HERE),
        master_url=args.master,
    )
    if isinstance(result, det.experimental.ExperimentReference) and not args.test:
        if args.wait and not args.local:  # with --local, create() has waited already
            result.wait(interval=1)
        if args.local or args.wait:
            show_best(result)


def show_best(experiment: Any) -> None:
    """Print the best checkpoint of ``experiment`` and how to load it."""
    best = experiment.top_checkpoint()
    metric = best.experiment_config["searcher"]["metric"]
    value = best.searcher_metric
    shown = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(
        f"Best checkpoint: {best.uuid}\n"
        f"  trial {best.trial_id}, {metric} {shown} after {best.batch_number} batches"
    )
    path = local_path(best)
    print("Load it with:")
    if path is not None:
        print("  from detlite.experimental import Checkpoint")
        print(f'  model = Checkpoint.load_from_path("{path}")')
    else:
        print("  from detlite.experimental import Determined")
        print(f'  model = Determined().get_checkpoint("{best.uuid}").load()')


def local_path(checkpoint: Any) -> Path | None:
    """Where a shared_fs checkpoint lies on this machine, if it does."""
    storage = checkpoint.experiment_config.get("checkpoint_storage") or {}
    if storage.get("type") != "shared_fs":
        return None
    path = Path(storage["host_path"]) / (storage.get("storage_path") or "") / checkpoint.uuid
    return path if (path / "metadata.json").is_file() else None


if __name__ == "__main__":
    main()
