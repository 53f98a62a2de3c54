"""Cut a table into site directories for the rehearsals (deploy/rehearse.sh, deploy/container/rehearse.sh).

    python3 deploy/split_sites.py TABLE.csv SCHEMA.toml SITES PRIVACY_LINES

Site ``i`` gets every SITES-th row from row ``i`` as ``site-i/data.csv``, the schema, and a
``site.toml`` named ``site-i`` whose ``[privacy]`` table holds PRIVACY_LINES (TOML lines) and
whose ``[training]`` runs one local epoch. Standard library only: it runs on the host.
"""

import csv
import sys
from pathlib import Path


def main(table: str, schema: str, sites: int, privacy: str) -> None:
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i in range(sites):
        site = Path(f"site-{i}")
        site.mkdir(exist_ok=True)
        with open(site / "data.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows[i::sites])
        (site / "schema.toml").write_text(Path(schema).read_text())
        (site / "site.toml").write_text(
            f'[site]\nname = "site-{i}"\ndata = "data.csv"\nschema = "schema.toml"\n\n'
            f"[privacy]\n{privacy.strip()}\n\n[training]\nlocal_epochs = 1\n"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
