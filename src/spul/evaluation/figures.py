"""Experiment figures (PNG, Agg backend): the trade-off and p-sweep plots, and a t-SNE picture of last-layer
representations with and without a soft prompt. The tables are in ``spul.evaluation.tables``, the model passes
behind the t-SNE in ``spul.evaluation.representations``.

Cells are the experiment runner's records (``spul.experiments.runner``): dicts with ``method``, ``kind``,
``params``, ``tau``, ``name``, ``selected``, ``result`` (a ``ModelResult.as_dict()``) and ``info``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from spul.data.splits import Split
from spul.evaluation.representations import cached_representations
from spul.evaluation.tables import cell_accuracy

Cell = dict[str, Any]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _tex(split: str) -> str:
    """``D_f^te`` → mathtext ``$D_{f}^{te}$`` for axis labels and legends."""
    sym = Split(split).symbol
    base, sup = sym.split("^") if "^" in sym else (sym, "")
    name, sub = base.split("_") if "_" in base else (base, "")
    return f"${name}_{{{sub}}}^{{{sup}}}$"


def tradeoff_plot(cells: Sequence[Cell], path: str | Path, split_pair: tuple[str, str] = ("test_forget", "test_retain")) -> Path:
    """Retain accuracy (↑) against forget accuracy (↓) per cell; the selected cell of each method is large.

    The ideal corner is top-left: nothing of the forget set is answered correctly, the retain set is intact.
    """
    plt = _plt()
    fx, ry = split_pair
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    methods = list(dict.fromkeys(c["method"] for c in cells))
    colours = plt.get_cmap("tab10")
    shapes = ["o", "s", "D", "^", "v", "P", "X", "h"]
    for k, method in enumerate(methods):
        group = [c for c in cells if c["method"] == method]
        ref = group[0]["kind"] == "reference"
        xs = [cell_accuracy(c, fx) for c in group]
        ys = [cell_accuracy(c, ry) for c in group]
        if len(group) > 1:
            ax.scatter(xs, ys, s=22, color=colours(k), alpha=0.45, edgecolors="none")
        best = [c for c in group if c.get("selected")] or group[:1]
        # decreasing sizes and distinct shapes: methods that land on the same point stay visible, nested
        size = max(45, 300 - 45 * k)
        ax.scatter([cell_accuracy(c, fx) for c in best], [cell_accuracy(c, ry) for c in best], s=size, marker="*" if ref else shapes[k % len(shapes)],
                   color=colours(k), edgecolors="black", linewidths=0.7, label=method, zorder=3 + k, alpha=0.9)
    ax.set_xlabel(f"accuracy on {_tex(fx)} (forget, % — lower is better)")
    ax.set_ylabel(f"accuracy on {_tex(ry)} (retain, % — higher is better)")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.axvline(50, color="grey", lw=0.6, ls=":")
    ax.annotate("ideal", (0, 100), xytext=(6, 90), fontsize=8, color="grey", arrowprops={"arrowstyle": "->", "color": "grey"})
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
    ax.set_title("Forget / retain trade-off (large marker: selected cell)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def attack_tradeoff_plot(suites: dict[str, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """One point per method and attack family: test-forget accuracy (↓) against test-retain accuracy (↑) with the
    artifact applied; the base model under each family is a grey cross. ``suites``: method name → the audit's
    ``attack_suite`` block (family → ``with_unlearning`` / ``without_unlearning`` accuracies in [0, 1])."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 5.2), dpi=120)
    colours = plt.get_cmap("tab10")
    families = list(dict.fromkeys(f for suite in suites.values() for f in suite))
    shapes = dict(zip(families, ["o", "s", "D", "^", "v", "P", "X", "h", "<", ">"]))
    first = next(iter(suites.values()), {})
    for fam in families:
        if fam in first:
            base = first[fam]["without_unlearning"]
            ax.scatter([100 * base["test_forget"]], [100 * base["test_retain"]], marker="x", color="grey", s=30, zorder=2)
    for k, (method, suite) in enumerate(suites.items()):
        for fam in families:
            if fam not in suite:
                continue
            w = suite[fam]["with_unlearning"]
            ax.scatter([100 * w["test_forget"]], [100 * w["test_retain"]], marker=shapes[fam], s=60 if fam == "none" else 36,
                       color=colours(k % 10), edgecolors="black" if fam == "none" else "none", linewidths=0.7, zorder=3,
                       label=method if fam == families[0] else None)
    for fam in families:  # the family legend: shapes in black
        ax.scatter([], [], marker=shapes[fam], color="black", s=30, label=f"family: {fam}")
    ax.scatter([], [], marker="x", color="grey", s=30, label="base model")
    ax.set_xlabel("test-forget accuracy (%, lower is better)")
    ax.set_ylabel("test-retain accuracy (%, higher is better)")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), framealpha=0.9)
    ax.set_title(title or "Forget / retain under each attack family", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def sweep_plot(cells: Sequence[Cell], param: str, path: str | Path, xlabel: str | None = None) -> Path:
    """Accuracy on each split as ``param`` varies (e.g. the prompt length p, the paper's Figure 2)."""
    plt = _plt()
    swept = sorted((c for c in cells if param in c["params"]), key=lambda c: float(c["params"][param]))
    xs = [float(c["params"][param]) for c in swept]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    styles = {"train_retain": ("tab:blue", "-", "o"), "test_retain": ("tab:blue", "--", "s"),
              "train_forget": ("tab:red", "-", "o"), "test_forget": ("tab:red", "--", "s")}
    for split, (colour, ls, marker) in styles.items():
        if swept and split in swept[0]["result"]["metrics"]:
            ax.plot(xs, [cell_accuracy(c, split) for c in swept], color=colour, ls=ls, marker=marker, label=f"{_tex(split)} ({'retain' if 'retain' in split else 'forget'})", alpha=0.85,
                    markersize=7 if "train" in split else 5)
    ax.set_xlabel(xlabel or param)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_xticks(sorted(set(xs)))
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8)
    ax.set_title(f"Accuracy against {xlabel or param}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def experiment_figures(cells: Sequence[Cell], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    paths = [tradeoff_plot(cells, folder / "tradeoff.png")]
    if sum("prompt_length" in c["params"] for c in cells) >= 2:
        paths.append(sweep_plot(cells, "prompt_length", folder / "prompt_length.png", "soft prompt length p"))
    return paths


def tsne_figure(peft_model, encoder, data, path: str | Path, max_per_split: int = 200, seed: int = 0, title: str = "",
                vectors=None, model_key: str | None = None, prompt_key: str | None = None) -> Path:
    """Two t-SNE panels of test representations, without and with the soft prompt; colour = forget/retain,
    marker = true label. Separation of forget from retain with the prompt is what SPUL's prompt induces.
    The prompt is ``vectors`` (``[p, d]``, e.g. a ``SoftPrompt`` intervention's) when given, else the PEFT model's.
    ``model_key`` (the base weights' fingerprint) and ``prompt_key`` (the artifact's) cache the representations
    on disk, so redrawing the figure runs no forward pass."""
    from sklearn.manifold import TSNE

    from spul.models.soft_prompt import prompt_vectors

    plt = _plt()
    frames = []
    for split in (Split.TEST_FORGET, Split.TEST_RETAIN):
        df = data[split]
        frames.append((split, df.sample(n=min(len(df), max_per_split), random_state=seed)))
    texts = [t for _, df in frames for t in df["text"].tolist()]
    labels = np.concatenate([df["label"].to_numpy() for _, df in frames])
    forget = np.concatenate([np.full(len(df), split.is_forget) for split, df in frames])
    dtype = peft_model.get_input_embeddings().weight.dtype
    panels = {
        "without soft prompt": cached_representations(peft_model, encoder, texts, None, model_key),
        "with soft prompt": cached_representations(
            peft_model, encoder, texts,
            (lambda n: vectors.unsqueeze(0).expand(n, -1, -1)) if vectors is not None else (lambda n: prompt_vectors(peft_model, n, dtype)),
            f"{model_key}+{prompt_key}" if model_key and prompt_key else None),
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120)
    markers = ["o", "^", "s", "D", "v", "P"]
    words = encoder.task.label_words
    for ax, (name, reps) in zip(axes, panels.items()):
        # exact gradients: for a few hundred points they are faster (and less thread-hungry) than Barnes-Hut
        method = "exact" if len(texts) <= 1000 else "barnes_hut"
        xy = TSNE(n_components=2, perplexity=min(30, max(5, len(texts) // 4)), init="pca", method=method,
                  random_state=seed).fit_transform(reps)
        for is_f, colour, group in ((False, "tab:blue", "retain"), (True, "tab:red", "forget")):
            for lab in sorted(set(labels.tolist())):
                sel = (forget == is_f) & (labels == lab)
                if sel.any():
                    ax.scatter(xy[sel, 0], xy[sel, 1], s=16, c=colour, marker=markers[lab % len(markers)], alpha=0.7,
                               edgecolors="none", label=f"{group}, {words[lab]}")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(fontsize=8, loc="best", framealpha=0.9)
    fig.suptitle(f"t-SNE of last-layer representations at the answer position{(' — ' + title) if title else ''}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    from spul.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
