"""Slim wheels for a lent GPU machine, and check a bundle's size (used by device_bundle.sh).

    python scripts/wheel_slim.py slim WHEEL OUT_DIR        # drop what curlrl never loads
    python scripts/wheel_slim.py size BUNDLE_DIR [MAX_MIB] # total size; exit 1 above MAX_MIB

A slimmed wheel keeps its name and version; its RECORD is rewritten (sha256 and size of
every kept file, RECORD itself unhashed), so ``pip install --no-index`` accepts it.
Standard library only: it also runs under a bare Python.
"""
from __future__ import annotations

import base64
import csv
import fnmatch
import hashlib
import io
import sys
import zipfile
from pathlib import Path

# Per distribution (wheel name prefix): path patterns (fnmatch, '*' crosses '/') of files
# that neither `import dm_control.suite` nor loading and rendering the six PlaNet tasks
# (cartpole, finger, walker, cheetah, reacher, ball_in_cup) reads.
DROP: dict[str, tuple[str, ...]] = {
    "dm_control": (
        "dm_control/locomotion/*",       # soccer, CMU humanoid, rodent walkers: composer tasks, not the suite
        "dm_control/suite/dog_assets/*",  # meshes of the dog domain (read only by suite.load('dog', ...))
        "dm_control/suite/all_domains.png",
        "dm_control/mujoco/testing/*",   # test assets and benchmarks
        "dm_control/mjcf/test_assets/*",
        "dm_control/blender/*",          # a Blender exporter
        "dm_control/third_party/kinova/*",  # manipulation arm meshes
        "*_test.py",
    ),
    "mujoco": (
        "mujoco/experimental/*",         # MuJoCo Studio, Dear ImGui, ImPlot (an interactive app)
        "mujoco/_render_filament*.so",   # the Filament renderer; dm_control renders with the classic one
        "mujoco/rendering/filament/*",
        "mujoco/_simulate*.so",          # the interactive viewer (needs a display)
        "mujoco/viewer.py",
        "mujoco/include/*",              # C headers
        "mujoco/testdata/*",
        "mujoco/sysid/*",
        "*_test.py",
    ),
    "pandas": ("pandas/tests/*",),
}


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def distribution(wheel: Path) -> str:
    """``dm_control-1.0.50-py3-none-any.whl`` -> ``dm_control``."""
    return wheel.name.split("-", 1)[0]


def slim_wheel(wheel: Path, out_dir: Path, drop: tuple[str, ...] | None = None) -> Path:
    """Copy ``wheel`` into ``out_dir`` without the files matching ``drop`` (default: DROP
    for its distribution, nothing for others) and with a matching RECORD."""
    drop = DROP.get(distribution(wheel), ()) if drop is None else drop
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / wheel.name
    if target.resolve() == wheel.resolve():
        raise SystemExit(f"wheel_slim: {wheel} would overwrite itself: choose another OUT_DIR")
    with zipfile.ZipFile(wheel) as src:
        names = src.namelist()
        records = [n for n in names if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
        if len(records) != 1:
            raise SystemExit(f"wheel_slim: {wheel.name} has {len(records)} RECORD files, expected 1")
        record_name = records[0]
        kept = [i for i in src.infolist()
                if i.filename != record_name and not i.is_dir()
                and not any(fnmatch.fnmatch(i.filename, p) for p in drop)]
        rows = io.StringIO()
        writer = csv.writer(rows, lineterminator="\n")
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for info in kept:
                data = src.read(info)
                out = zipfile.ZipInfo(info.filename, info.date_time)
                out.external_attr = info.external_attr  # keep the executable bits of the .so files
                out.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(out, data, compresslevel=9)
                writer.writerow([info.filename, _record_hash(data), len(data)])
            writer.writerow([record_name, "", ""])
            dst.writestr(zipfile.ZipInfo(record_name, src.getinfo(record_name).date_time), rows.getvalue())
    verify_wheel(target)
    return target


def verify_wheel(wheel: Path) -> None:
    """Check that RECORD lists every file of ``wheel`` with its true hash and size."""
    with zipfile.ZipFile(wheel) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = {r[0]: r for r in csv.reader(io.StringIO(zf.read(record_name).decode())) if r}
        files = [n for n in zf.namelist() if not n.endswith("/")]
        for name in files:
            if name == record_name:
                continue
            row = rows.get(name)
            data = zf.read(name)
            if row is None or row[1] != _record_hash(data) or int(row[2]) != len(data):
                raise SystemExit(f"wheel_slim: {wheel.name}: RECORD does not match {name}")
        missing = set(rows) - set(files)
        if missing:
            raise SystemExit(f"wheel_slim: {wheel.name}: RECORD lists missing files, e.g. {sorted(missing)[0]}")


def bundle_bytes(bundle: Path) -> int:
    """Bytes of every file under ``bundle`` (the wheels and the GL .debs travel together)."""
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def check_size(bundle: Path, max_mib: float) -> tuple[bool, str]:
    """(within the limit, one line saying the size)."""
    size = bundle_bytes(bundle)
    line = f"bundle {bundle}: {size / 2**20:.1f} MiB in all (limit {max_mib:g} MiB)"
    return size <= max_mib * 2**20, line


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "slim":
        print(slim_wheel(Path(argv[1]), Path(argv[2])))
        return 0
    if len(argv) in (2, 3) and argv[0] == "size":
        ok, line = check_size(Path(argv[1]), float(argv[2]) if len(argv) == 3 else 40.0)
        print(line if ok else f"error: {line}: over the limit", file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
