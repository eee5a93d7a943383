"""The per-family INT8 table: every arch gets torch / ORT fp32 / INT8 rows, ratios from the same run."""

from __future__ import annotations

from pipeline.bench import cpu_model
from pipeline.bench_families import family_markdown, family_table, int8_isa


def test_family_table_rows_and_ratios():
    rows = family_table(("resnet8",), runs=2, warmup=0, size=16, batch_sizes=(1, 2))
    text = family_markdown(rows)
    (r,) = rows
    # 3-channel stem: K = 27
    assert (r["family"], r["recipe"]) == ("resnet_cifar", "resnet_cifar") and r["fp32_nodes"] == 0
    for b in ("b1", "b2"):
        lat = r["latency"]
        assert r["int8_vs_fp32"][b]["ort_int8"] == lat["ort_fp32"][b]["p50_ms"] / lat["ort_int8"][b]["p50_ms"]
        assert lat["torch_fp32"][b]["runs"] == 2
    assert text.count("| resnet8 | resnet_cifar | resnet_cifar |") == 2  # one row per batch size
    assert "p50 of 2 timed runs" in text and "16x16 RGB" in text and r["size_ratio"] < 1


def _row(arch: str, fp32_ms: float, int8_ms: float) -> dict:
    lat = {rt: {"b32": {"p50_ms": ms}} for rt, ms in (("torch_fp32", 9.0), ("ort_fp32", fp32_ms))}
    lat |= {"ort_int8": {"b32": {"p50_ms": int8_ms}}, "ort_int8_floor": {"b32": {"p50_ms": fp32_ms}}}
    ratio = {"b32": {"ort_int8": fp32_ms / int8_ms, "ort_int8_floor": 1.0}}
    env = {"cpu": "Test CPU", "versions": {}, "int8_isa": "AVX2, no VNNI"}
    return {"arch": arch, "family": "f", "recipe": "f", "latency": lat, "int8_vs_fp32": ratio, "env": env}


def test_family_markdown_floor_verdicts():
    # floors at batch 32: mobilenet_v2 2.3x (10 / 4 ms = 2.5x: met), resnet18 3.4x (10 / 3.125 ms = 3.2x:
    # below); regnet_y_400mf has no floor (empty cell)
    text = family_markdown(
        [_row("mobilenet_v2", 10.0, 4.0), _row("resnet18", 10.0, 3.125), _row("regnet_y_400mf", 10.0, 5.0)]
    )
    assert "| 2.50x | 1.00x | 2.30x, met |" in text and "| 3.20x | 1.00x | 3.40x, below |" in text
    assert "| 2.00x | 1.00x |  |" in text and "Test CPU (AVX2, no VNNI)" in text


def test_int8_isa_names_vnni_or_its_absence(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("model name\t: X\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8 amx_tile\n")
    assert int8_isa(f) == "AVX512-VNNI, AMX"
    f.write_text("flags\t\t: fpu sse avx avx2 fma\n")
    assert int8_isa(f) == "AVX2, no VNNI"
    assert int8_isa(tmp_path / "absent") == ""


def test_cpu_model_carries_the_int8_instructions(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_vnni avx_vnni\n")
    assert cpu_model(f) == "AMD EPYC (AVX512-VNNI, AVX-VNNI)"
    f.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
    assert cpu_model(f) == "AMD EPYC (AVX2, no VNNI)"
    rows = [
        {
            "arch": "a",
            "family": "f",
            "recipe": "r",
            "latency": {"ort_fp32": {}},
            "int8_vs_fp32": {},
            "env": {"cpu": cpu_model(f), "int8_isa": "AVX2, no VNNI", "versions": {}},
        }
    ]
    assert "AMD EPYC (AVX2, no VNNI)," in family_markdown(rows)  # named once, not twice


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
