"""Showing `stkc bench` results: what each codec ran with, the table, one sentence per comparison,
and the optional PSNR-vs-bpp plot (matplotlib, the `plot` extra).

Everything here reads the JSON-ready report of `bench.run_bench`, so a saved `--json` output can
be shown or plotted again without rerunning the codecs.
"""

from __future__ import annotations

import io
from pathlib import Path

from rich.table import Table

from .bench_codecs import LABELS
from .errors import StkcError


def _label(codec: str) -> str:
    return LABELS.get(codec, codec)


def settings_lines(report: dict) -> list[str]:
    """One line per codec: the library and options it ran with, or why it did not run."""
    lines = []
    for codec, entry in report["codecs"].items():
        if entry["available"]:
            library = f"{entry['library']}; " if entry.get("library") else ""
            lines.append(f"{_label(codec)}: {library}{entry['settings']}")
        else:
            lines.append(f"{_label(codec)}: not available, skipped: {entry['reason']}")
    return lines


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def results_table(report: dict) -> Table:
    """A rich table: one row per codec and setting, means over the images; speed in megapixels per
    second (the JSON also has milliseconds per image)."""
    table = Table(title=f"{report['name']}: means over {report['images']} images", title_justify="left")
    for heading in ("codec", "setting", "bpp", "bytes", "PSNR dB", "MS-SSIM", "enc MP/s", "dec MP/s"):
        table.add_column(heading, justify="left" if heading in ("codec", "setting") else "right")
    for codec, entry in report["codecs"].items():
        results = entry["results"]
        for index, quality in enumerate(results["quality"]):
            setting = f"q={quality}" if quality is not None else "model"
            table.add_row(_label(codec) if index == 0 else "", setting, _number(results["bpp"][index], 3),
                          _number(results["bytes"][index], 0), _number(results["psnr-rgb"][index], 2),
                          _number(results["ms-ssim-rgb"][index], 4), _number(results["encoding_mpx_per_s"][index], 2),
                          _number(results["decoding_mpx_per_s"][index], 2),
                          end_section=index == len(results["quality"]) - 1)
    return table


def summary_lines(report: dict) -> list[str]:
    """Sentences comparing stkc with each codec at equal PSNR, with the source files, and BD-rates."""
    lines = []
    for codec, versus in report.get("stkc_vs", {}).items():
        if codec == "source":
            continue
        name = _label(codec)
        outside = (f"stkc's PSNR below {name}'s lowest setting on {versus['excluded_below']}, "
                   f"above its highest on {versus['excluded_above']}")
        if versus["images"] == 0:
            lines.append(f"at equal PSNR: no image where stkc's PSNR lies within {name}'s sweep ({outside})")
            continue
        excluded = f"; {versus['excluded']} excluded: {outside}" if versus["excluded"] else ""
        lines.append(f"at equal PSNR stkc needs {versus['mean_ratio']:.2f}× the bytes of {name} "
                     f"(mean over {versus['images']} images{excluded})")
        levels = versus.get("levels", [])
        if len(levels) > 1:
            lines.append(f"  by level vs {name}: " + ", ".join(
                f"{row['level']}: {row['mean_ratio']:.2f}× at {row['mean_psnr']:.1f} dB ({row['images']})"
                if row["mean_ratio"] is not None else f"{row['level']}: – ({row['images']})" for row in levels))
    source = report.get("stkc_vs", {}).get("source")
    if source and source["mean_ratio"] is not None:
        lines.append(f"stkc files are {source['mean_ratio']:.3f}× the size of the source files "
                     f"({'/'.join(source['formats'])}, mean {source['mean_source_bytes']:,.0f} B, "
                     f"over {source['images']} images)")
    order = list(report["codecs"])
    for anchor_index, anchor in enumerate(order):
        for test in order[anchor_index + 1 :]:
            value = report["bd_rate"].get(test, {}).get(anchor)
            if value is not None:
                lines.append(f"BD-rate (PSNR) of {_label(test)} against {_label(anchor)}: {value:+.1f}% "
                             "(negative: fewer bits at equal PSNR)")
    return lines


def require_matplotlib() -> None:
    """Fail early, before a long run, when --plot cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise StkcError("a plot needs matplotlib: pip install 'stkc[plot]'") from None


def plot_rd(report: dict, path: str | Path) -> None:
    """Write a PNG of PSNR against bpp: one curve per classic codec, stkc's operating point as a star."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, NullFormatter

    from .outputs import atomic_write

    # Figure + Agg canvas instead of pyplot: no global state, no GUI backend picked up from the environment.
    figure = Figure(figsize=(7, 5), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for codec, entry in report["codecs"].items():
        points = sorted((b, p) for b, p in zip(entry["results"]["bpp"], entry["results"]["psnr-rgb"])
                        if b is not None and p is not None)
        if not points:
            continue
        bpp, psnr = zip(*points)
        if codec == "stkc" and len(points) == 1:
            axes.plot(bpp, psnr, "*", markersize=14, color="crimson", label="stkc", zorder=3)
        elif codec == "stkc":  # its quality levels
            axes.plot(bpp, psnr, "*-", markersize=10, color="crimson", label="stkc (levels)", zorder=3)
        else:
            axes.plot(bpp, psnr, "o-", markersize=4, label=_label(codec))
    axes.set_xscale("log")  # stkc sits near 0.2 bpp, the classic sweeps reach several bpp
    low, high = axes.get_xlim()
    axes.set_xticks([t for t in (0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20) if low <= t <= high])
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels collide at this width
    axes.set_xlabel("bits per pixel (file bytes, headers included)")
    axes.set_ylabel("PSNR-RGB (dB)")
    axes.set_title(f"{report['name']} ({report['images']} images, means per setting)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write(Path(path), buffer.getvalue(), force=True)
