"""Streamed data three times larger than Ray's object store, read by a process that stays small."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support.scripts import run_for_result

#: Writes 250 MB of float32 columns (350 MB as uncompressed Parquet), starts Ray with an 80 MB
#: object store, fits the data in one pass and streams the training split through Ray Data
#: tasks into a fresh process, which reports rows and how far its memory rose meanwhile.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq, ray

    folder = Path(sys.argv[1])
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part in range(6):  # 6 files x 163,840 rows x 64 float32 columns = 252 MB
        x = rng.random((163_840, 64), dtype=np.float32)
        table = pa.table({**{f"f{i}": x[:, i] for i in range(64)},
                          "label": rng.integers(0, 4, 163_840)})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=20_480,
                       compression="none")
        del x, table
    stored = sum(p.stat().st_size for p in folder.iterdir())

    ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False,
             logging_level="ERROR")
    from pipelines.data.streaming import fit_stream, iter_split, list_fragments

    fit = fit_stream(list_fragments(str(folder)), label="label")

    @ray.remote(num_cpus=1)
    class Reader:  # a fresh process, as a trial is: its memory is the stream's alone
        def read(self, fit):
            def rss_mb(field):
                status = Path("/proc/self/status").read_text().splitlines()
                return int(next(l for l in status if l.startswith(field)).split()[1]) / 1024
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the stream's peak
            start = rss_mb("VmRSS:")
            rows, total = 0, 0.0
            for batch in iter_split(fit, "train", batch_size=512):
                rows, total = rows + len(batch["y"]), total + float(batch["x"].sum())
            return rows, rss_mb("VmHWM:") - start  # sum() read every page, as training does

    rows, growth = ray.get(Reader.remote().read.remote(fit))
    print("RESULT " + json.dumps({
        "stored_mb": stored / 2**20, "store_mb": 80, "rows": rows, "num_train": fit.num_train,
        "total": fit.listing.rows, "growth_mb": growth,
    }))
    ray.shutdown()
    """
)


@pytest.mark.slow  # writes 240 MB and streams it through Ray Data: about half a minute
def test_data_three_times_the_object_store_streams_every_row_in_bounded_memory(
    tmp_path: Path,
) -> None:
    outcome = run_for_result(SCRIPT, str(tmp_path / "data"))
    assert outcome["stored_mb"] > 3 * outcome["store_mb"], outcome
    assert outcome["total"] == 6 * 163_840
    assert outcome["rows"] == outcome["num_train"] > 0.7 * outcome["total"]  # every row, once
    # The reader's memory rose by what it touched of Ray's shared memory (which recycles the
    # capped store's pages) and a few row groups: bounded by the store, not the 200 MB split.
    # (Measured: 94 MB; the same reader keeping the batches rose by 235 MB.)
    assert outcome["growth_mb"] < outcome["store_mb"] + 40, outcome
