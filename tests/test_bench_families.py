"""The per-family INT8 table: every arch gets torch / ORT fp32 / INT8 rows, ratios from the same run."""

from __future__ import annotations

from pipeline.bench_families import family_table


def test_family_table_rows_and_ratios():
    text, rows = family_table(("resnet8",), runs=2, warmup=0, size=16, batch_sizes=(1, 2))
    (r,) = rows
    assert (r["family"], r["recipe"]) == ("resnet_cifar", "resnet_cifar") and r[
        "fp32_nodes"
    ] == 0  # 3-channel stem: K = 27
    for b in ("b1", "b2"):
        lat = r["latency"]
        assert r["int8_vs_fp32"][b]["ort_int8"] == lat["ort_fp32"][b]["p50_ms"] / lat["ort_int8"][b]["p50_ms"]
        assert lat["torch_fp32"][b]["runs"] == 2
    assert text.count("| resnet8 | resnet_cifar | resnet_cifar |") == 2  # one row per batch size
    assert "p50 of 2 timed runs" in text and r["size_ratio"] < 1


def test_bench_families_alone_needs_no_prepared_data(tmp_path, monkeypatch):
    # a fresh clone has no data/prepared and no models: `make bench-families` must still write its table
    from typer.testing import CliRunner

    from stages import app, load_all

    load_all()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("base: {seed: 0}\ndata: {source: synthetic}\n")
    args = ["bench", "--families", "--no-main", "--family-archs", "resnet8", "--family-runs", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "| resnet8 | resnet_cifar |" in (tmp_path / "b" / "results_int8_families.md").read_text()
    assert not (tmp_path / "b" / "results.md").exists()  # the main benchmark did not run
