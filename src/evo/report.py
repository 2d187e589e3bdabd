"""`evo report`: one self-contained HTML file (PNG plots inlined) about a lineage root.

Sections: every eval across generations, validation-loss curves per generation, the lineage as a
tree (rejected children drawn as side branches), the per-pattern healing table, general ability
(eval.general), sweeps, and the targeted-vs-random experiment where one was run.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path

from evo.atomic import atomic_write_text, read_json
from evo.config import ConfigError
from evo.experiment import Experiment, show_interval
from evo.lineage.ledger import Ledger
from evo.lineage.registry import Registry
from evo.model.artifacts import ModelStore
from evo.numbers import parse, show
from evo.storage import open_root


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def evals_plot(rows: list[dict]) -> str:
    import matplotlib.pyplot as plt

    gens = [r["GEN_ID"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for key, label in (("eval_recall", "recall"), ("eval_generalization", "generalization")):
        axes[0].plot(gens, [parse(r[key]) for r in rows], marker="o", label=label)
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_title("accuracy (exact match)")
    axes[0].legend()
    axes[1].plot(gens, [parse(r["eval_style_drift"]) for r in rows], marker="o", color="tab:red")
    axes[1].set_title("style drift (probes with a banned phrase)")
    axes[2].plot(gens, [parse(r["eval_perplexity"]) for r in rows], marker="o", color="tab:green")
    axes[2].set_title("validation perplexity")
    for ax in axes:
        ax.tick_params(axis="x", rotation=45)
    return _png(fig)


def loss_plot(root: Path, rows: list[dict]) -> str:
    import matplotlib.pyplot as plt

    store = ModelStore(root)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for r in rows:
        if r["child_sha"] and store.exists(r["child_sha"]):
            curve = store.meta(r["child_sha"]).get("val_curve") or []
            if curve:
                ax.plot([c[0] for c in curve], [c[1] for c in curve], marker=".", label=f"{r['GEN_ID']} ({r['decision']})")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    return _png(fig)


def tree_plot(root: Path) -> str:
    """Each model a node at x = its generation; promoted ones on the main line, the others off it."""
    import matplotlib.pyplot as plt

    models = Registry(root).load()["models"]
    gen_no = {s: int(m["gen_id"].split("-")[-1]) for s, m in models.items()}
    lanes: dict[str, int] = {}
    side = 0
    for sha in sorted(models, key=lambda s: (gen_no[s], models[s].get("created", 0))):
        if models[sha]["status"] in ("base", "promoted"):
            lanes[sha] = 0
        else:
            side += 1
            lanes[sha] = side
    colors = {"base": "tab:blue", "promoted": "tab:green", "rejected": "tab:red", "stopped": "tab:orange",
              "candidate": "tab:gray"}
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * (max(gen_no.values(), default=0) + 1)), 1.2 + 0.6 * (side + 1)))
    for sha, m in models.items():
        x, y = gen_no[sha], -lanes[sha]
        if m["parent_sha"] in models:
            p = m["parent_sha"]
            ax.plot([gen_no[p], x], [-lanes[p], y], color="lightgray", zorder=1)
        ax.scatter([x], [y], s=220, color=colors.get(m["status"], "black"), zorder=2)
        ax.annotate(f"{m['gen_id']}\n{sha[:8]}\n{m['status']}", (x, y), textcoords="offset points", xytext=(0, 12),
                    ha="center", fontsize=7)
    ax.set_axis_off()
    ax.margins(0.25, 0.6)
    return _png(fig)


def child_and_parent(root: Path, rows: list[dict], key: str) -> dict[str, tuple[dict, dict]]:
    """Per generation with an eval report: (child's, parent's) value of `key` in evals/<gen>.json."""
    out = {}
    for r in rows:
        path = root / "evals" / f"{r['GEN_ID']}.json"
        if path.exists():
            ev = read_json(path)
            out[r["GEN_ID"]] = (ev["child"].get(key) or {}, (ev.get("parent") or {}).get(key) or {})
    return out


def healing_table(root: Path, rows: list[dict]) -> str:
    """Violations / items per pattern for every generation that was asked (child), and its parent."""
    per_gen = {g: {"child": c, "parent": p} for g, (c, p) in child_and_parent(root, rows, "healing").items() if c}
    if not per_gen:
        return "<p>No corrections recorded yet (<code>evo correct</code>).</p>"
    patterns = sorted({p for g in per_gen.values() for p in g["child"]})
    head = "".join(f"<th>{html.escape(g)}</th>" for g in per_gen)
    body = []
    for p in patterns:
        cells = []
        for g in per_gen.values():
            c, par = g["child"].get(p), g["parent"].get(p)
            if c is None:
                cells.append("<td></td>")
                continue
            ok = c["violations"] == 0
            before = f" (parent {par['violations']}/{par['total']})" if par else ""
            cells.append(f'<td class="{"ok" if ok else "bad"}">{c["violations"]}/{c["total"]}{before}</td>')
        body.append(f"<tr><td>{html.escape(p)}</td>{''.join(cells)}</tr>")
    return (f"<table><tr><th>pattern: violations / items asked</th>{head}</tr>{''.join(body)}</table>"
            "<p>0 violations: healed. Recurred patterns are also listed in the ledger (<code>patterns_recurred</code>).</p>")


def quality_table(root: Path, rows: list[dict]) -> str:
    """Exact match per record category for every generation (child), with its parent's in brackets."""
    per_gen = child_and_parent(root, rows, "quality_by_category")
    cats = sorted({c for child, _ in per_gen.values() for c in child})
    if not cats:
        return "<p>No categorized QA items.</p>"
    head = "".join(f"<th>{html.escape(g)}</th>" for g in per_gen)
    body = []
    for c in cats:
        cells = []
        for child, parent in per_gen.values():
            q, p = child.get(c), parent.get(c)
            if q is None:
                cells.append("<td></td>")
                continue
            worse = p is not None and q["accuracy"] < p["accuracy"]
            before = f" ({p['accuracy']:.2f})" if p else ""
            cells.append(f'<td class="{"bad" if worse else "ok"}">{q["accuracy"]:.2f} of {q["total"]}{before}</td>')
        body.append(f"<tr><td>{html.escape(c)}</td>{''.join(cells)}</tr>")
    return (f"<table><tr><th>category: exact match (parent)</th>{head}</tr>{''.join(body)}</table>"
            "<p>Over every QA item asked: the generation's test part and each earlier generation's.</p>")


def general_table(root: Path, rows: list[dict]) -> str:
    """eval.general per generation: child (parent), with a few lost questions and fake words."""
    per_gen = {g: (c, p) for g, (c, p) in child_and_parent(root, rows, "general").items() if c}
    if not per_gen:
        return "<p>Off (<code>eval.general</code> in the config: for real pretrained bases).</p>"
    metrics = [("accuracy", "general questions kept", ".2f", 1), ("kl_to_base", "KL from the base (nats/token)", ".3f", -1),
               ("fake_word_share", "fake-word share", ".3f", -1), ("distinct1", "distinct-1", ".3f", 1),
               ("distinct2", "distinct-2", ".3f", 1), ("repetition", "repetition rate", ".3f", -1)]
    head = "".join(f"<th>{html.escape(g)}</th>" for g in per_gen)
    body = []
    for key, label, spec, better in metrics:
        cells = []
        for c, p in per_gen.values():
            x, y = c.get(key), p.get(key) if p else None
            worse = x is not None and y is not None and (x - y) * better < -1e-9
            cells.append(f'<td class="{"bad" if worse else "ok"}">{show(x, spec)}'
                         f'{f" ({show(y, spec)})" if p else ""}</td>')
        body.append(f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>")
    notes = []
    for g, (c, _) in per_gen.items():
        for lost in c.get("lost", [])[:2]:
            notes.append(f"<li>{html.escape(g)} lost: {html.escape(lost['prompt'])} base: "
                         f"<i>{html.escape(lost['base'][:80])}</i>, now: <i>{html.escape(lost['got'][:80])}</i></li>")
        if c.get("fake_words"):
            notes.append(f"<li>{html.escape(g)} fake words: {html.escape(', '.join(c['fake_words']))}</li>")
    some = next(iter(per_gen.values()))[0]
    return (f"<table><tr><th>child (parent)</th>{head}</tr>{''.join(body)}</table>"
            f"<p>General questions: only the {some.get('counted')} of {some.get('asked')} the base answers correctly count "
            "(so the base scores 1.00 there by construction). KL: mean per token, of the base's next-token distribution "
            "against this model's, along the base's answers. Fake words: words of those answers and of the open replies "
            "in no dictionary (wordfreq) "
            "and in none of the lineage's data. Distinct-n and repetition: over greedy replies to open prompts. "
            "None of these sets is trained on or used to choose a checkpoint.</p>"
            + (f"<ul>{''.join(notes)}</ul>" if notes else ""))


def sweeps_section(root: Path) -> str:
    files = sorted((root / "trials").glob("*.csv")) if (root / "trials").exists() else []
    if not files:
        return "<p>No sweeps (<code>evo sweep</code>).</p>"
    import csv

    parts = []
    for f in files:
        with open(f, newline="") as fh:
            trials = list(csv.DictReader(fh))
        cols = ["trial_id", "lr", "steps", "replay_k", "status", "best_val_loss", "eval_generalization", "gate", "chosen"]
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(t.get(c, ''))}</td>" for c in cols) + "</tr>" for t in trials)
        parts.append(f"<h3>{html.escape(f.stem)}</h3><table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{rows}</table>")
    return "".join(parts)


def experiment_section(root: Path) -> str:
    """`evo experiment`: accuracy on the fixed weak areas by round, both lines, every seed; and each
    round's lead of targeted over random with its interval over seeds."""

    path = root / "experiments" / "targeted_vs_random.json"
    if not path.exists():
        return "<p>Not run yet (<code>evo experiment</code>).</p>"
    raw = read_json(path)
    if "replications" not in raw:
        return "<p>An experiment by an older evo (one seed, areas per arm); rerun <code>evo experiment --fresh</code>.</p>"
    exp = Experiment.from_json(raw)
    notes = "".join(f"<li>seed {r.seed}: {html.escape(r.note)}</li>" for r in exp.replications if r.note)
    notes = f"<ul>{notes}</ul>" if notes else ""
    if not exp.summary:
        return f"<p>No finished round.</p>{notes}"
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for ax, subset, title in ((axes[0], "areas", "accuracy on the fixed weak areas"),
                              (axes[1], "overall", "accuracy on the whole evaluation set")):
        for rep in exp.replications:
            xs = [0] + [x.round for x in rep.rounds]
            for arm, color in (("targeted", "tab:green"), ("random", "tab:gray")):
                ax.plot(xs, [rep.start[subset].accuracy] + [getattr(x, arm).after[subset].accuracy for x in rep.rounds],
                        marker="o", color=color, alpha=0.7, label=arm if rep is exp.replications[0] else None)
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.legend()
    cols = ["round", "seeds", "records per line", "lead: fixed-area accuracy", "lead: overall accuracy",
            "lead: fixed-area loss drop"]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
        r.round, r.seeds, f"{r.records:.0f}", show_interval(r.lead["areas"]["accuracy"]),
        show_interval(r.lead["overall"]["accuracy"]), show_interval(r.lead["areas"]["loss"]))) + "</tr>"
        for r in exp.summary)
    st = exp.settings
    return (f"<p>From {html.escape(st['start'][:12])}: {len(exp.replications)} seed(s); evaluation set "
            f"{html.escape(str(st['eval']))}, probe set {html.escape(str(st['probe']))}; {st['steps']} steps per child. "
            f"The weak areas compared are the start model's on the probe set, fixed before round 1 and the same for "
            f"both lines; no training record of either line is a near-copy of an evaluation prompt. Lead: "
            f"targeted minus random, mean over seeds with a 95% t interval.</p>{_png(fig)}"
            f"<table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{body}</table>{notes}")


def kept_apart_section(root: Path, rows: list[dict]) -> str:
    """Per generation (runs/<gen>/kept_apart.json): how its delta was split, the training records left
    out because they ask a test-part or a corrected question, what its generalization measures, and
    the scored test items that corrections retired (asked with the corrected answer from then on)."""
    items, retired = [], []
    for r in rows:
        path = root / "runs" / r["GEN_ID"] / "kept_apart.json"
        if not path.exists():
            continue
        k = read_json(path)
        n, m = k["test_answers_trained"]
        measures = ("rewording: the answer was trained under another question" if m and n * 2 > m else
                    "answers not trained as such")
        items.append(f"<li>{html.escape(r['GEN_ID'])}: split {html.escape(k['scheme'])} (val {k['val_fraction']}, "
                     f"test {k['test_fraction']}, as recorded when its delta was ingested); left out of the mix "
                     f"{k['left_out'].get('test', 0)} record(s) that ask a test-part question and "
                     f"{k['left_out'].get('retired', 0)} that ask a corrected question"
                     + (f" and {k['left_out']['deleted']} of deleted uploads" if k["left_out"].get("deleted") else "")
                     + f"; {n} of {m} test answers are "
                     f"training completions, so its generalization measures {measures}</li>")
        for gen, lst in sorted(k["retired_scored"].items()):
            for it in lst:
                now = f"scored against {it['now']!r}" if it["now"] else "no longer scored (its context states the error)"
                retired.append(f"<tr><td>{html.escape(r['GEN_ID'])}</td><td>{html.escape(gen)}</td>"
                               f"<td>{html.escape(it['prompt'])}</td><td>{html.escape(it['was'])}</td>"
                               f"<td>{html.escape(now)}</td></tr>")
    if not items:
        return "<p>No generation of this root recorded what it kept apart (written before split v3).</p>"
    table = ("<table><tr><th>scored in</th><th>test part of</th><th>question</th><th>answer it had</th>"
             f"<th>now</th></tr>{''.join(retired)}</table>" if retired else
             "<p>No scored test item asks a corrected question.</p>")
    return f"<ul>{''.join(items)}</ul><h3>Test items retired by corrections</h3>{table}"


def ledger_table(rows: list[dict]) -> str:
    cols = ["GEN_ID", "child_sha", "decision", "eval_recall", "eval_generalization", "eval_style_drift",
            "eval_perplexity", "eval_general", "eval_kl_base", "replay_k", "patterns_healed", "patterns_recurred",
            "split", "test_answers_trained", "trial", "reason"]
    body = "".join("<tr>" + "".join(f"<td>{html.escape((r.get(c) or '')[:12] if c == 'child_sha' else r.get(c) or '')}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{''.join(f'<th>{c}</th>' for c in cols)}</tr>{body}</table>"


STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f3f3f3}.ok{background:#e3f6e3}.bad{background:#fbe3e3}img{max-width:100%}"""


def build_report(root: str | Path, progress: Callable[[str], None] = print) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    root = Path(root)
    rows = Ledger(root).rows()
    if not rows:
        raise FileNotFoundError(f"{root / 'ledger.csv'}: no generations to report on")
    sections = [("Ledger", lambda: ledger_table(rows)), ("Evals across generations", lambda: evals_plot(rows)),
                ("Validation loss per generation", lambda: loss_plot(root, rows)),
                ("Lineage", lambda: tree_plot(root)), ("Self-healing: corrected patterns", lambda: healing_table(root, rows)),
                ("Quality per category", lambda: quality_table(root, rows)),
                ("General ability, degeneration, diversity", lambda: general_table(root, rows)),
                ("Kept apart: test questions, corrections, what generalization measures",
                 lambda: kept_apart_section(root, rows)),
                ("Sweeps", lambda: sweeps_section(root)), ("Targeted vs random data", lambda: experiment_section(root))]
    parts = []
    for n, (title, make) in enumerate(sections, start=1):
        progress(f"[{n}/{len(sections)}] {title}")
        parts.append(f"<h2>{html.escape(title)}</h2>{make()}")
    out = root / "report.html"
    atomic_write_text(out, f"<!doctype html><html><head><meta charset='utf-8'><title>evo report: {html.escape(str(root))}"
                           f"</title><style>{STYLE}</style></head><body><h1>evo lineage report</h1>"
                           f"<p>{html.escape(str(root))}: {len(rows)} generations</p>{''.join(parts)}</body></html>")
    return out


def cmd_report(root: str) -> int:
    """`evo report`: write ROOT/report.html."""
    local = open_root(root)
    if not (local / "ledger.csv").exists():
        raise ConfigError(f"{local / 'ledger.csv'}: no lineage here; run `evo run` or `evo demo` with this --root first")
    out = build_report(local, lambda msg: print(f"report {msg}", flush=True))
    print(f"wrote {out}")
    return 0
