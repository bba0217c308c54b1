"""`lmboard speed --plot`: each line drawn against a value axis from zero, so two batch
sizes are not drawn as the same diagonal (one panel with a second autoscaled axis did)."""

import pytest

pytest.importorskip("matplotlib")


def _row(batch, tput, ttft):
    return {"batch_size": batch, "decode_tokens_per_s": tput, "ttft_s": {"median": ttft}}


def test_throughput_and_ttft_lines_differ_and_start_at_zero(tmp_path):
    from lmboard.report.speed import figure, plot

    rows = [_row(1, 30.0, 0.05), _row(4, 100.0, 0.12)]
    fig = figure(rows, "batch_size", "smollm2")
    tput_ax, ttft_ax = fig.axes
    assert tput_ax.get_ylim()[0] == 0 and ttft_ax.get_ylim()[0] == 0
    (tput_line,), (ttft_line,) = tput_ax.get_lines(), ttft_ax.get_lines()
    assert list(tput_line.get_ydata()) == [30.0, 100.0] and list(ttft_line.get_ydata()) == [50.0, 120.0]
    # where the points land in each panel (axes fraction): a 30 -> 100 rise and a 50 -> 120 one differ
    def heights(ax, line):
        return [ax.transLimits.transform((x, y))[1] for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)]
    assert heights(tput_ax, tput_line) != pytest.approx(heights(ttft_ax, ttft_line), abs=0.02)
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"30", "100", "50", "120"} <= texts  # every point says its value
    plot(rows, tmp_path / "p.png", "batch_size", "smollm2")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
