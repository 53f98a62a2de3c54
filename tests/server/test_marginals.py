"""The coordinator's marginals: every site asked once, its reply checked, the tables summed exactly,
a site that releases nothing recorded as a failure, and a repeated request costs no site anything."""

from __future__ import annotations

import json
from uuid import uuid4

import numpy as np
import pytest
from flwr.app import Context, Error, Message, RecordDict

from fedsynth.client.app import _sites, handle_query
from fedsynth.data.io import write_table
from fedsynth.data.schema import Schema
from fedsynth.marginals.tables import MarginalSpec, tables_from_json
from fedsynth.server.marginals import MARGINALS_FILE, request_marginals
from fedsynth.server.run import RunDirectory

pytestmark = pytest.mark.usefixtures("server_identity")

SHARES = {"a": 0.25, "b": 0.1, "c": 0.0}


class SiteGrid:
    """Flower's Grid as far as the coordinator uses it: each node is a site directory answered in-process."""

    def __init__(self, site_dirs: dict[int, object]) -> None:
        self.site_dirs = site_dirs

    def get_node_ids(self) -> list[int]:
        return list(self.site_dirs)

    def send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # as a real grid does on sending
            node = message.metadata.dst_node_id
            context = Context(run_id=1, node_id=node, node_config={"site-dir": str(self.site_dirs[node])},
                              state=RecordDict(), run_config={})  # fmt: skip
            try:
                replies.append(handle_query(message, context))
            except Exception as exc:  # Flower turns a raised exception into an error reply
                replies.append(Message(Error(code=0, reason=str(exc)), reply_to=message))
        return replies


@pytest.fixture()
def grid(whas500, tmp_path):
    frame, schema = whas500
    dirs = {}
    for node, (name, share) in enumerate(SHARES.items(), start=1):
        site_dir = tmp_path / f"site-{name}"
        site_dir.mkdir()
        write_table(frame.iloc[160 * (node - 1) : 160 * node], site_dir / "data.csv")
        (site_dir / "schema.toml").write_text(schema.to_toml())
        (site_dir / "site.toml").write_text(
            f'[site]\nname = "{name}"\ndata = "data.csv"\nschema = "schema.toml"\n'
            f"[privacy]\ntarget_epsilon = 2.0\nmarginals_share = {share}\n"
        )
        dirs[node] = site_dir
    yield SiteGrid(dirs)
    _sites.clear()


def _request(grid: SiteGrid, run: RunDirectory, schema: Schema) -> dict:
    return request_marginals(grid, run, "r", 3, schema, timeout=60, expected_sites=3, numeric_bins=8, time_bins=4)


def test_sites_tables_are_summed_and_a_site_that_releases_nothing_is_a_failure(whas500, grid, tmp_path) -> None:
    schema = whas500[1]
    run = RunDirectory(tmp_path / "run")
    run.initialise("r", schema, {})
    document = _request(grid, run, schema)
    assert json.loads((run.path / MARGINALS_FILE).read_text()) == document
    assert [s["site"] for s in document["sites"]] == ["a", "b"]
    # More share, less noise; each figure the site's own.
    a, b = document["sites"]
    assert a["noise_multiplier"] < b["noise_multiplier"] and a["epsilon_step"] > b["epsilon_step"]
    (failure,) = document["failures"]
    assert failure["node_id"] == 3 and "marginals_share = 0" in failure["reason"]
    assert document["complete"] is False  # the sum covers sites a and b only
    spec = MarginalSpec.from_schema(schema, numeric_bins=8, time_bins=4)
    stored = [
        tables_from_json(json.loads((grid.site_dirs[n] / "state/runs/r/marginals.json").read_text())["tables"])
        for n in (1, 2)
    ]
    for t in spec.tables:
        assert np.allclose(np.asarray(document["noisy_tables"][t.name]), stored[0][t.name] + stored[1][t.name])
        assert np.min(document["consistent_tables"][t.name]) >= 0
    lines = run.budget_records()
    assert [(r["round"], r["mechanism"], r["status"]) for r in lines] == [
        (0, "marginals", "ok"), (0, "marginals", "ok"), (0, "marginals", "error")
    ]  # fmt: skip
    assert [r["epsilon"] for r in lines[:2]] == [a["epsilon"], b["epsilon"]]

    # Asked again (e.g. a coordinator restarted before writing marginals.json): the same tables, no spend.
    ledgers = [len(_sites[grid.site_dirs[n].resolve()].ledger.entries()) for n in (1, 2)]
    (run.path / MARGINALS_FILE).unlink()
    again = _request(grid, run, schema)
    assert again["noisy_tables"] == document["noisy_tables"]
    assert [len(_sites[grid.site_dirs[n].resolve()].ledger.entries()) for n in (1, 2)] == ledgers == [1, 1]
