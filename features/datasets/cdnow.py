"""CDNOW: the bundled real history (Fader & Hardie's CDNOW transaction log).

23,570 customers who first bought at CDNOW in Q1 1997 and all their purchases to 1998-06-30.
Provenance and licence notes are in README.md ("Bundled data"); `from_master_txt` is how the bundled
file was made from the original `CDNOW_master.txt`.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import yaml

BUNDLED = Path(__file__).with_name("cdnow_transactions.csv.gz")
AS_OF = "1998-06-30"
SOURCE_SHA256 = "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"  # CDNOW_master.txt
DATASET_YAML = {
    "name": "cdnow",
    "description": "CDNOW transaction log (Fader & Hardie), 23,570 customers, 1997-01-01 to 1998-06-30",
    "as_of": AS_OF,
    "churn": "non_contractual",
}


def write(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write CDNOW as a history folder: transactions.csv.gz and dataset.yaml, atomically."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite to replace it)")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(BUNDLED, tmp / "transactions.csv.gz")
    (tmp / "dataset.yaml").write_text(yaml.safe_dump(DATASET_YAML, sort_keys=False), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def from_master_txt(source: str | Path, out: str | Path) -> int:
    """Convert the original whitespace-separated CDNOW_master.txt (id, YYYYMMDD, CDs, dollars) to
    contract CSV. Each source line keeps its number as `order_id`: CDNOW has 255 rows identical to an
    earlier one (same customer, day, CDs and dollars) that are separate purchases, not duplicates."""
    lines = Path(source).read_text(encoding="ascii").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0] == "customer_id":
            continue
        customer, day, cds, dollars = fields
        rows.append(f"{customer},{day[:4]}-{day[4:6]}-{day[6:]},{dollars},{cds},L{number:05d}\n")
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
        fh.write("customer_id,timestamp,amount,quantity,order_id\n")
        fh.writelines(rows)
    return len(rows)
