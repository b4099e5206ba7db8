"""``python -m benchmarks decode`` runs the server's own parse and render functions on every batch shape."""

from __future__ import annotations

from pathlib import Path

from benchmarks.decode import measure


def test_every_batch_shape_is_decoded_validated_and_rendered(exported: Path) -> None:
    results = measure(exported.parent, n_rows=40, repeat=3)
    assert set(results["shapes"]) == {
        "/predict JSON objects",
        "/predict JSON columns",
        "V2 JSON tensor",
        "V2 binary tensor",
        "V2 binary tensor, binary output",
    }
    binary = results["shapes"]["V2 binary tensor"]
    assert binary["body_bytes"] > 40 * 5 * 4  # the JSON header, then 40 rows x 5 float32 features
    for figures in results["shapes"].values():
        assert figures["decode_us"] > 0 and figures["render_us"] > 0
        assert 0 < figures["ceiling"] < 1
