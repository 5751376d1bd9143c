"""Damaged files, really damaged: truncated and bit-flipped copies of files the code wrote.

A damaged cache entry (ours) is detected by its digests, logged and rebuilt; a damaged user
file (theirs) is one DataError naming the file and the fix (exit 2 from the CLI); a full disk
during a cache write is one clear error and leaves no staging folder. No test writes made-up
bytes where a real file would be: every damage is done to a real file, at a real place in its
structure (the zip's member data, its central directory, its end record).
"""

from __future__ import annotations

import io
import json
import logging
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import DataConfig
from pipelines.data import cache, load_raw, prepare_arrays
from pipelines.errors import DataError, UserInputError

ROWS = 60


def _csv_config(tmp_path: Path) -> DataConfig:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, 3))
    lines = ["a,b,c,label", *(f"{r[0]},{r[1]},{r[2]},{int(r[0] > 0)}" for r in x)]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")
    return DataConfig(dataset="csv", path=path)


# --- where in a real zip (an .npz) a flip lands --------------------------------------------


def _end_record(data: bytes) -> int:
    """Offset of the zip's end-of-central-directory record (no archive comment here)."""
    offset = len(data) - 22
    assert data[offset : offset + 4] == b"PK\x05\x06"
    return offset


def _central_directory(data: bytes) -> int:
    (offset,) = struct.unpack("<I", data[_end_record(data) + 16 : _end_record(data) + 20])
    assert data[offset : offset + 4] == b"PK\x01\x02"
    return int(offset)


def _member_data(data: bytes, name: str) -> tuple[int, int]:
    """Offset and size of a member's stored (maybe compressed) bytes."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    header = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[header + 26 : header + 30])
    return header + 30 + name_len + extra_len, info.compress_size


def _flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


Damage = Callable[[Path], None]


def _in_member_data(name: str) -> Damage:
    def damage(path: Path) -> None:
        start, size = _member_data(path.read_bytes(), name)
        _flip(path, start + size // 2)

    return damage


ZIP_DAMAGE: dict[str, Damage] = {
    "truncated to half": lambda p: _cut(p, p.stat().st_size // 2),
    "last 10 bytes dropped": lambda p: _cut(p, p.stat().st_size - 10),
    "flip in member data": _in_member_data("x_train.npy"),
    "flip in the central directory's signature": lambda p: _flip(
        p, _central_directory(p.read_bytes())
    ),
    "flip in the central directory's CRC": lambda p: _flip(
        p, _central_directory(p.read_bytes()) + 16
    ),
    # The first member's name in the directory: x_train.npy no longer names it.
    "flip in the central directory's file name": lambda p: _flip(
        p, _central_directory(p.read_bytes()) + 46, 0x01
    ),
    "flip in the end record's directory offset": lambda p: _flip(
        p, _end_record(p.read_bytes()) + 16, 0x01
    ),
}


# --- the cache: ours, so rebuilt ------------------------------------------------------------


def _entry(config: DataConfig) -> Path:
    return cache.cache_root() / cache.cache_key(config)


@pytest.mark.parametrize("damage", list(ZIP_DAMAGE))
def test_a_damaged_cache_archive_is_logged_and_rebuilt(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _csv_config(tmp_path)
    first, _ = prepare_arrays(config)
    ZIP_DAMAGE[damage](_entry(config) / "arrays.npz")

    with caplog.at_level(logging.WARNING, logger="pipelines.data.cache"):
        rebuilt, hit = prepare_arrays(config)

    assert hit is False
    assert rebuilt.fingerprint() == first.fingerprint()
    assert "damaged" in caplog.text and _entry(config).name in caplog.text
    assert len(cache.builds(_entry(config).name)) == 2
    assert prepare_arrays(config)[1] is True  # the rebuilt entry is trusted again


@pytest.mark.parametrize(
    "damage",
    [
        "meta.json: a digit changed (still valid JSON)",
        "meta.json truncated",
        "digests.json truncated",
        "digests.json missing (an entry of an older tunepipe)",
    ],
)
def test_damaged_cache_metadata_is_rebuilt(damage: str, tmp_path: Path) -> None:
    config = _csv_config(tmp_path)
    first, _ = prepare_arrays(config)
    entry = _entry(config)
    meta = entry / "meta.json"
    if damage.startswith("meta.json: a digit"):
        text = meta.read_text()
        spot = text.index('"num_classes": ') + len('"num_classes": ')
        meta.write_text(text[:spot] + "7" + text[spot + 1 :])
        json.loads(meta.read_text())  # still parses: only the digest can tell
    elif damage == "meta.json truncated":
        _cut(meta, meta.stat().st_size // 2)
    elif damage == "digests.json truncated":
        _cut(entry / "digests.json", 10)
    else:
        (entry / "digests.json").unlink()

    rebuilt, hit = prepare_arrays(config)
    assert hit is False
    assert rebuilt.num_classes == first.num_classes == 2
    assert rebuilt.fingerprint() == first.fingerprint()


def test_an_entry_whose_digests_match_but_does_not_decode_is_rebuilt(tmp_path: Path) -> None:
    """The decode errors are caught as well, should damage ever pass the digests."""
    config = _csv_config(tmp_path)
    prepare_arrays(config)
    entry = _entry(config)
    _cut(entry / "arrays.npz", (entry / "arrays.npz").stat().st_size // 2)
    digests = {name: cache._file_hash(entry / name) for name in ("arrays.npz", "meta.json")}
    (entry / "digests.json").write_text(json.dumps(digests))

    assert cache.load(entry.name) is None
    assert prepare_arrays(config)[1] is False


def test_a_truncated_build_log_line_is_skipped(tmp_path: Path) -> None:
    config = _csv_config(tmp_path)
    prepare_arrays(config)
    log = cache.cache_root() / "builds.jsonl"
    with log.open("a") as handle:  # an append cut short by a crash
        handle.write('{"key": "abc", "data')
    assert len(cache.builds()) == 1


# --- a full disk ----------------------------------------------------------------------------

# A real ENOSPC from the kernel: /dev/full fails every write with it. Making one file of the
# staging folder a link to /dev/full is the only change; numpy, json and the cache code write
# as always. (A real small filesystem would need root to mount.)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("full_file", ["arrays.npz", "meta.json", "digests.json"])
def test_a_full_disk_is_one_clear_error_and_leaves_no_staging_folder(
    full_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _csv_config(tmp_path)
    real_mkdtemp = tempfile.mkdtemp

    def staging_on_a_full_disk(*args: object, **kwargs: object) -> str:
        folder = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        if Path(str(kwargs.get("dir"))) == cache.cache_root():
            Path(folder, full_file).symlink_to("/dev/full")
        return str(folder)

    with monkeypatch.context() as patch, pytest.raises(DataError) as caught:
        patch.setattr(tempfile, "mkdtemp", staging_on_a_full_disk)  # what the cache calls
        prepare_arrays(config)

    message = caught.value.one_line()
    assert "No space left on device" in message
    assert str(cache.cache_root()) in message
    assert caught.value.key == "data.cache" and "data.cache: false" in caught.value.fix
    assert sorted(p.name for p in cache.cache_root().iterdir()) == []  # no staging, no entry
    assert prepare_arrays(config)[1] is False  # with space again, it is written as usual


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_for_the_build_log_is_one_clear_error(tmp_path: Path) -> None:
    config = _csv_config(tmp_path)
    cache.cache_root().mkdir(parents=True)
    (cache.cache_root() / "builds.jsonl").symlink_to("/dev/full")
    with pytest.raises(DataError, match="No space left on device") as caught:
        cache.record_build("abc", config, 1.0)
    assert caught.value.key == "data.cache"


# --- user files: theirs, so one clear error -------------------------------------------------


def _user_npz(tmp_path: Path, *, compressed: bool) -> Path:
    rng = np.random.default_rng(1)
    path = tmp_path / "data.npz"
    save = np.savez_compressed if compressed else np.savez
    save(path, x=rng.random((40, 3)).astype(np.float32), y=np.arange(40) % 2)
    return path


USER_ZIP_DAMAGE = {
    **{k: v for k, v in ZIP_DAMAGE.items() if k != "flip in member data"},
    "flip in member data": _in_member_data("x.npy"),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
@pytest.mark.parametrize("damage", list(USER_ZIP_DAMAGE))
def test_a_damaged_user_npz_is_one_data_error_naming_the_file(
    damage: str, compressed: bool, tmp_path: Path
) -> None:
    path = _user_npz(tmp_path, compressed=compressed)
    USER_ZIP_DAMAGE[damage](path)
    with pytest.raises(DataError) as caught:
        prepare_arrays(DataConfig(dataset="npz", path=path))
    assert str(path) in caught.value.one_line()
    assert caught.value.key == "data.path"
    assert "\n" not in caught.value.one_line()


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_every_byte_flip_of_a_user_npz_loads_intact_or_is_a_data_error(
    compressed: bool, tmp_path: Path
) -> None:
    """Flip each byte of a real file in turn: never another exception, never wrong data."""
    path = _user_npz(tmp_path, compressed=compressed)
    original = path.read_bytes()
    expected = load_raw(DataConfig(dataset="npz", path=path))
    refused = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            raw = load_raw(DataConfig(dataset="npz", path=path))
        except DataError:
            refused += 1
            continue
        # Unprotected zip fields (times, version) may change; the arrays may not (CRC).
        np.testing.assert_array_equal(raw.x, expected.x)
        np.testing.assert_array_equal(raw.y, expected.y)
    assert refused > len(original) // 2


def test_every_byte_flip_of_a_user_image_decodes_or_is_a_data_error(tmp_path: Path) -> None:
    root = tmp_path / "images"
    rng = np.random.default_rng(2)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            pixels = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    victim = root / "dog" / "1.png"
    original = victim.read_bytes()
    refused = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        victim.write_bytes(bytes(damaged))
        try:
            load_raw(DataConfig(dataset="image_folder", path=root))
        except DataError as exc:
            assert str(victim) in exc.one_line()
            refused += 1
    assert refused > len(original) // 2


def test_every_third_byte_flip_of_a_user_parquet_file_reads_or_is_a_data_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "table.parquet"
    rng = np.random.default_rng(3)
    pq.write_table(pa.table({"a": rng.random(30), "label": np.arange(30) % 2}), path)
    original = path.read_bytes()
    refused = 0
    for offset in range(0, len(original), 3):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            load_raw(DataConfig(dataset="parquet", path=path))
        except DataError as exc:
            assert str(path) in exc.one_line()
            refused += 1
    assert refused > 0


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_user_parquet_file_is_a_data_error(cut: float, tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table({"a": np.arange(50.0), "label": np.arange(50) % 2}), path)
    _cut(path, int(path.stat().st_size * cut))
    with pytest.raises(DataError, match=r"table\.parquet"):
        load_raw(DataConfig(dataset="parquet", path=path))


def test_a_csv_that_is_not_utf8_is_a_data_error_not_bytes_as_labels(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes("a,text,label\n1,caf\xe9,oui\n2,th\xe9,non\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8") as caught:
        load_raw(DataConfig(dataset="csv", path=path, text_column="text"))
    assert "row 1" in caught.value.one_line()


def test_a_binary_file_named_csv_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(np.random.default_rng(4).bytes(3000))
    with pytest.raises(DataError, match=r"table\.csv"):
        load_raw(DataConfig(dataset="csv", path=path))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.arange(5.0), np.arange(5), "shape"),
        (np.array(3.0), np.array(1), "shape"),
        (np.array([["a", "b"], ["c", "d"]]), np.arange(2), "not numeric"),
        (np.ones((4, 2)), np.ones((4, 2)), "shape"),
        (np.ones((1, 2)), np.arange(1), "1 row"),
    ],
    ids=["1-d x", "0-d arrays", "string x", "2-d y", "one row"],
)
def test_unusable_npz_arrays_are_a_data_error(
    x: np.ndarray, y: np.ndarray, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=y)
    with pytest.raises(DataError, match=message):
        prepare_arrays(DataConfig(dataset="npz", path=path))


def test_the_cli_prints_a_damaged_npz_as_one_line_and_exits_2(tmp_path: Path) -> None:
    data = _user_npz(tmp_path, compressed=False)
    _cut(data, data.stat().st_size // 2)
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1}\n")
    config = tmp_path / "experiment.yaml"
    config.write_text(
        "name: damaged\nmetric: val_loss\nmode: min\n"
        f"data: {{dataset: npz, path: {data}}}\n"
        f"trainable: {{model: mlp, search_space: {space}, params: {{epochs: 1, batch_size: 8}}}}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message
    assert "data.npz" in message and "Fix:" in message
    assert issubclass(DataError, UserInputError)  # what the CLI maps to exit 2
