"""create(local=False) against a live master on SQLite and PostgreSQL: the context is packed
(.detignore honoured), the config submitted with its entrypoint and command, and the call
returns an ExperimentReference bound to the master."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import pytest

from detlite.experimental import Determined, ExperimentReference, create
from detlite.testing import LinearTrial, linear_config
from tests.master.conftest import LiveMaster


def test_submit_to_master(
    master: LiveMaster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "pkg").mkdir(parents=True)
    (ctx / "train.py").write_text("print('train')\n")
    (ctx / "pkg" / "util.py").write_text("X = 1\n")
    (ctx / "big.bin").write_bytes(b"\0" * 1000)
    (ctx / ".detignore").write_text("*.bin\n")
    raw = linear_config()
    raw["description"] = "submitted by create()"

    ref = create(
        LinearTrial,
        raw,
        context_dir=str(ctx),
        command=["train.py", "--fast"],
        master_url=master.url,
    )
    assert isinstance(ref, ExperimentReference)
    assert f"Created experiment {ref.id}\n" in capsys.readouterr().out
    # The reference is bound to the master, and so is a Determined() on the same address.
    config = ref.get_config()
    assert config["entrypoint"] == "detlite.testing.fake:LinearTrial"
    assert config["internal"]["native"]["command"] == ["train.py", "--fast"]
    assert config["description"] == "submitted by create()"
    with Determined(master.url) as d:
        exp = d._session.get(f"/api/v1/experiments/{ref.id}")["experiment"]
        assert exp["username"] == "determined" and exp["archived"] is False
        b64 = d._session.get(f"/api/v1/experiments/{ref.id}/model_def")["b64Tgz"]
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64)), mode="r:gz") as tar:
        names = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    assert names == {"train.py", "pkg/util.py"}
    ref.kill()

    # A bad config is refused here, listing the problem, before anything is sent.
    before = len(Determined(master.url).get_experiments())
    from detlite.errors import InvalidExperimentConfig

    bad = linear_config()
    bad["searcher"]["max_length"] = {"batches": -1}
    with pytest.raises(InvalidExperimentConfig, match="max_length"):
        create(LinearTrial, bad, context_dir=str(ctx), master_url=master.url)
    assert len(Determined(master.url).get_experiments()) == before
