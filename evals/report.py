"""Side-by-side report of evaluated systems: a Markdown table and PNG plots.

``obliviate report DIR... --out OUT`` reads one folder per system, as ``obliviate eval`` writes
them (``run.json`` and any of ``TOFU_EVAL.json``/``TOFU_SUMMARY.json``, ``MUSE_SUMMARY.json``,
``ATTACKS.json``, ``THROUGHPUT.json``), and writes ``OUT/REPORT.md`` with

- the TOFU table (forget quality, model utility, forget/retain ROUGE, forget Prob and truth
  ratio, privleak, extraction strength, exact memorization, tokens/s),
- the attack table (leak rate per attack),
- the MUSE-News table when present,
- how each system generated and was scored (verbatim from ``run.json``),

and the plots ``fq_vs_mu.png``, ``rouge.png``, ``leak_rates.png``, ``throughput.png``. A metric a
system does not have (it cannot score, it refused every item, the split was not run) is ``n/a``,
never a number.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]

# (column, where it comes from, format)
TOFU_COLUMNS: list[tuple[str, str, str]] = [
    ("forget quality", "forget_quality", "sci"),
    ("model utility", "model_utility", "f3"),
    ("forget ROUGE", "forget_Q_A_ROUGE", "f3"),
    ("retain ROUGE", "retain_Q_A_ROUGE", "f3"),
    ("forget Prob", "forget_Q_A_Prob", "f3"),
    ("forget TR", "forget_truth_ratio", "f3"),
    ("privleak", "privleak", "f1"),
    ("extraction", "extraction_strength", "f3"),
    ("exact mem.", "exact_memorization", "f3"),
]
MUSE_COLUMNS: list[tuple[str, str, str]] = [
    ("KnowMem forget", "forget_knowmem_ROUGE", "f3"),
    ("KnowMem retain", "retain_knowmem_ROUGE", "f3"),
    ("VerbMem forget", "forget_verbmem_ROUGE", "f3"),
    ("PrivLeak", "privleak", "f1"),
]
NA = "n/a"


@dataclass
class SystemResult:
    """Everything one system's evaluation folder holds."""

    folder: Path
    name: str
    run: dict[str, Any] = field(default_factory=dict)
    tofu: dict[str, Any] = field(default_factory=dict)  # metric -> aggregate value (None: n/a)
    muse: dict[str, Any] = field(default_factory=dict)
    attacks: dict[str, Any] = field(default_factory=dict)  # attack -> leak rate
    throughput: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        return _number(self.throughput.get("tokens_per_s"))

    @property
    def forget_tokens_per_s(self) -> float | None:
        return _number(self.throughput.get("forget_tokens_per_s"))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(float(value)) else float(value)


def _aggregates(eval_log: dict[str, Any] | None, summary: dict[str, Any] | None) -> dict[str, float | None]:
    """metric -> aggregate from the summary, filled in from the EVAL log's ``agg_value`` entries."""
    out: dict[str, float | None] = {}
    for name, entry in (eval_log or {}).items():
        if isinstance(entry, dict) and "agg_value" in entry:
            out[name] = _number(entry["agg_value"])
    for name, value in (summary or {}).items():
        out[name] = _number(value)
    return out


def _leak_rates(attacks: dict[str, Any] | None) -> dict[str, float | None]:
    """attack -> leak rate from ATTACKS.json (``{"attacks": {name: {"leak_rate": r, ...}}}``)."""
    per_attack = (attacks or {}).get("attacks") or {}
    return {name: _number(v.get("leak_rate") if isinstance(v, dict) else v) for name, v in per_attack.items()}


def load_system(folder: PathLike) -> SystemResult:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such evaluation folder")
    run = _read_json(path / "run.json") or {}
    name = str(run.get("system", {}).get("name") or run.get("name") or path.name)
    result = SystemResult(
        folder=path,
        name=name,
        run=run,
        tofu=_aggregates(_read_json(path / "TOFU_EVAL.json"), _read_json(path / "TOFU_SUMMARY.json")),
        muse=_aggregates(_read_json(path / "MUSE_EVAL.json"), _read_json(path / "MUSE_SUMMARY.json")),
        attacks=_leak_rates(_read_json(path / "ATTACKS.json")),
        throughput=_read_json(path / "THROUGHPUT.json") or {},
    )
    if not (result.tofu or result.muse or result.attacks or result.throughput):
        raise ValueError(f"{path}: holds no evaluation results (TOFU_*.json, MUSE_*.json, ATTACKS.json)")
    return result


def fmt(value: float | None, style: str) -> str:
    if value is None:
        return NA
    if style == "sci":
        return f"{value:.2e}"
    if style == "f1":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def tofu_table(systems: Sequence[SystemResult]) -> list[str]:
    rows = [
        [
            s.name,
            *(fmt(s.tofu.get(key), style) for _, key, style in TOFU_COLUMNS),
            fmt(s.tokens_per_s, "f1"),
            fmt(s.forget_tokens_per_s, "f1"),
        ]
        for s in systems
        if s.tofu
    ]
    header = ["system", *(c for c, _, _ in TOFU_COLUMNS), "tokens/s", "tokens/s (forget Qs)"]
    return _table(header, rows) if rows else []


def muse_table(systems: Sequence[SystemResult]) -> list[str]:
    rows = [[s.name, *(fmt(s.muse.get(key), style) for _, key, style in MUSE_COLUMNS)] for s in systems if s.muse]
    return _table(["system", *(c for c, _, _ in MUSE_COLUMNS)], rows) if rows else []


def attack_names(systems: Sequence[SystemResult]) -> list[str]:
    names: list[str] = []
    for s in systems:
        names += [n for n in s.attacks if n not in names]
    return names


def attack_table(systems: Sequence[SystemResult]) -> list[str]:
    names = attack_names(systems)
    rows = [[s.name, *(fmt(s.attacks.get(n), "f3") for n in names)] for s in systems if s.attacks]
    return _table(["system", *names], rows) if rows else []


def how_scored(systems: Sequence[SystemResult]) -> list[str]:
    lines: list[str] = []
    for s in systems:
        about = s.run.get("system", {}).get("describe") or s.run.get("describe") or {}
        lines.append(f"- **{s.name}**" + (f" ({s.run['split']})" if s.run.get("split") else ""))
        for key, value in about.items():
            lines.append(f"  - {key}: {value}")
        not_applicable = s.run.get("not_applicable") or []
        if not_applicable:
            lines.append(f"  - not applicable: {', '.join(map(str, not_applicable))}")
        if s.throughput.get("how"):
            lines.append(f"  - tokens/s: {s.throughput['how']}")
    return lines


# plots -------------------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scatter(
    systems: Sequence[SystemResult],
    x_key: str,
    y_key: str,
    xlabel: str,
    ylabel: str,
    title: str,
    out: Path,
    *,
    log_y: bool = False,
) -> Path | None:
    points = [(s.name, s.tofu.get(x_key), s.tofu.get(y_key)) for s in systems]
    points = [(n, x, y) for n, x, y in points if x is not None and y is not None and (not log_y or y > 0)]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    colours = plt.get_cmap("tab10" if len(points) <= 10 else "tab20").colors  # a colour per system
    for k, (_name, x, y) in enumerate(points):
        ax.scatter([x], [y], s=40, color=colours[k % len(colours)])
    if log_y:
        ax.set_yscale("log")
    label_points(ax, points)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_leak_rates(systems: Sequence[SystemResult], out: Path) -> Path | None:
    names = attack_names(systems)
    with_attacks = [s for s in systems if s.attacks]
    if not names or not with_attacks:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(names) * max(1, len(with_attacks)) / 3), 4.8))
    width = 0.8 / len(with_attacks)
    for i, s in enumerate(with_attacks):
        xs = [j + i * width for j in range(len(names))]
        ax.bar(xs, [s.attacks.get(n) or 0.0 for n in names], width=width, label=s.name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylabel("leak rate")
    ax.set_ylim(0, 1)
    ax.set_title("Leak rate per attack")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_throughput(systems: Sequence[SystemResult], out: Path) -> Path | None:
    shown = [s for s in systems if s.tokens_per_s is not None or s.forget_tokens_per_s is not None]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, max(4.8, 0.45 * len(shown))))
    ys = list(range(len(shown)))
    ax.barh([y - 0.2 for y in ys], [s.tokens_per_s or 0.0 for s in shown], height=0.4, label="retain questions")
    ax.barh([y + 0.2 for y in ys], [s.forget_tokens_per_s or 0.0 for s in shown], height=0.4, label="forget questions")
    ax.set_yticks(ys, [s.name for s in shown])
    ax.invert_yaxis()
    ax.set_xlabel("generated tokens/s")
    ax.set_title("Decoding throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_all(systems: Sequence[SystemResult], out_dir: Path) -> list[Path]:
    plots = [
        _scatter(
            systems,
            "model_utility",
            "forget_quality",
            "model utility",
            "forget quality (log)",
            "Forget quality vs model utility",
            out_dir / "fq_vs_mu.png",
            log_y=True,
        ),
        _scatter(
            systems,
            "retain_Q_A_ROUGE",
            "forget_Q_A_ROUGE",
            "retain ROUGE-L recall",
            "forget ROUGE-L recall",
            "Forget vs retain ROUGE",
            out_dir / "rouge.png",
        ),
        plot_leak_rates(systems, out_dir / "leak_rates.png"),
        plot_throughput(systems, out_dir / "throughput.png"),
    ]
    return [p for p in plots if p is not None]


# the report --------------------------------------------------------------------------------------
def render(
    systems: Sequence[SystemResult],
    plots: Sequence[Path],
    *,
    title: str = "Obliviate evaluation report",
    preamble: Sequence[str] = (),
) -> str:
    lines = [f"# {title}", "", *preamble]
    if preamble:
        lines.append("")
    sections = [
        ("TOFU", tofu_table(systems)),
        ("Attack suite (leak rate)", attack_table(systems)),
        ("MUSE-News", muse_table(systems)),
    ]
    for heading, table in sections:
        if table:
            lines += [f"## {heading}", "", *table, ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["## How each system was run and scored", "", *how_scored(systems), ""]
    lines += [
        f"`{NA}`: the system has no such value (it cannot score, refused every item, or the metric was not run).",
        "",
    ]
    return "\n".join(lines)


def label_points(ax: Any, points: Sequence[tuple[str, float, float]], *, merge_px: float = 4.0) -> list[Any]:
    """Name each point without overlapping labels: systems whose markers coincide on the drawn axes
    (within ``merge_px`` pixels) share one label ("target, proxy-pass"), and adjustText moves
    labels off each other and off the markers, with a leader line where one moved far."""
    from adjustText import adjust_text

    ax.margins(x=0.1, y=0.12)  # room for labels beside the outermost points
    ax.figure.canvas.draw()  # fixes the limits and scales the pixel positions depend on
    groups: list[tuple[list[str], float, float, Any]] = []
    for name, x, y in points:
        pixel = ax.transData.transform((x, y))
        for names, _, _, anchor in groups:
            if abs(pixel[0] - anchor[0]) <= merge_px and abs(pixel[1] - anchor[1]) <= merge_px:
                names.append(name)
                break
        else:
            groups.append(([name], x, y, pixel))
    texts = [ax.text(x, y, ", ".join(names), fontsize=8) for names, x, y, _ in groups]
    if len(texts) > 1:
        xs, ys = [x for _, x, _ in points], [y for _, _, y in points]
        adjust_text(
            texts,
            x=xs,
            y=ys,
            ax=ax,
            expand=(1.2, 1.5),
            force_static=(0.3, 0.5),
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5},
        )
    return texts


def write_report(
    folders: Sequence[PathLike],
    out_dir: PathLike,
    *,
    title: str = "Obliviate evaluation report",
    preamble: Sequence[str] = (),
) -> Path:
    if not folders:
        raise ValueError("no evaluation folders given")
    systems = [load_system(f) for f in folders]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(systems, out)
    path = out / "REPORT.md"
    path.write_text(render(systems, plots, title=title, preamble=preamble), encoding="utf-8")
    return path
