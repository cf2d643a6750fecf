import json

import matplotlib.pyplot as plt
import pytest

from adaptrt.errors import InputError
from adaptrt.report.run import RunFolder


def _write_run(path, **kw):
    with RunFolder(path, command="test", config={"a": 1}, seed=3, **kw) as run:
        run.write_csv("results/t.csv", [{"x": 1, "y": 2.5}, {"x": 2, "z": "q"}])
        run.write_json("results/r.json", {"ok": True})
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        png = run.save_figure(fig, "line")
        run.report.section("S").text("hello <b>").table([{"x": 1}]).figure(png, caption="c")
    return path


def test_run_folder_contents(tmp_path):
    out = _write_run(tmp_path / "run")
    assert json.loads((out / "config.json").read_text()) == {"a": 1}
    info = json.loads((out / "run.json").read_text())
    assert info["seed"] == 3 and info["command"] == "test" and "adaptrt_version" in info
    assert (out / "results/t.csv").read_text().splitlines()[0] == "x,y,z"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "hello &lt;b&gt;" in html
    assert (out / "figures/line.png").read_bytes()[:4] == b"\x89PNG"
    # nothing left behind but the run folder
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_run_folder_not_overwritten(tmp_path):
    out = _write_run(tmp_path / "run")
    with pytest.raises(InputError, match="already exists"):
        RunFolder(out, command="x", config={}, seed=0)
    _write_run(out, overwrite=True)
    assert (out / "report.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_run_writes_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError, match="boom"),
        RunFolder(tmp_path / "run", command="x", config={}, seed=0) as run,
    ):
        run.write_json("results/partial.json", {"x": 1})
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_run(tmp_path):
    out = _write_run(tmp_path / "run")
    before = (out / "run.json").read_text()
    with (
        pytest.raises(RuntimeError, match="boom"),
        RunFolder(out, command="x", config={}, seed=0, overwrite=True),
    ):
        raise RuntimeError("boom")
    assert (out / "run.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_outputs_get_normal_permissions(tmp_path):
    import os
    import stat

    from adaptrt.io.atomic import atomic_file

    with atomic_file(tmp_path / "a.txt") as p:
        p.write_text("x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    out = _write_run(tmp_path / "run")
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask


def test_run_json_counts_from_the_given_start(tmp_path):
    import datetime as dt

    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)
    with RunFolder(tmp_path / "run", command="x", config={}, seed=0, started=started):
        pass
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["duration_s"] >= 90
