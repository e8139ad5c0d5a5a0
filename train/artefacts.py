"""Write a trained run's files into its .incomplete directory: model.keras, model_info.json (what convert
and the device read about the model), metrics.json, the plots and report.md."""

from __future__ import annotations

from pathlib import Path

from train import plots, report
from train.evaluate import THRESHOLD, SplitPredictions
from train.phases import FitResult
from train.rundir import Plan
from train.splits import split_summary

# (split, file, title) of the two prediction grids
PREDICTION_GRIDS = (
    ("seen_holdout", "predictions_seen.png", "seen persons, new images"),
    ("unseen_persons", "predictions_unseen.png", "unseen persons"),
)


def model_info(plan: Plan, built) -> dict:
    """model_info.json: labels, output, input size, backbone and the in-model preprocessing."""
    cfg, spec = plan.cfg, built.spec
    binary = built.output_kind == "sigmoid"
    return {
        "labels": plan.labels,
        "positive_label": plan.labels[1] if binary else None,
        "output_kind": built.output_kind,
        "threshold": THRESHOLD,
        "input_size": [cfg.model.input_size, cfg.model.input_size],
        "backbone": spec.name,
        "alpha": float(cfg.model.alpha) if spec.uses_alpha else None,
        "preprocessing": spec.preprocessing,
        "resize_method": "bilinear",
        "data_root": str(Path(plan.data_root).resolve()),
    }


def write_run_files(
    plan: Plan,
    built,
    *,
    metrics: dict,
    predictions: dict[str, SplitPredictions],
    history: list[dict],
    fitted: FitResult,
) -> None:
    work = plan.work
    info = model_info(plan, built)
    built.model.save(str(work / "model.keras"))
    report.write_json(work / "model_info.json", info)
    report.write_json(work / "metrics.json", metrics)
    fine_tune_from = fitted.first_phase_epochs if fitted.fine_tuned else None
    plots.plot_curves(history, work / "curves.png", fine_tune_from, title=f"{plan.final.name}: {built.spec.name}")
    for split, file_name, title in PREDICTION_GRIDS:
        _prediction_grid(plan, built, predictions[split], metrics[split], work / file_name, title)
    report.write_report(
        work,
        cfg=plan.cfg,
        info=info,
        metrics=metrics,
        summary=split_summary(plan.splits),
        history=history,
        index_info=plan.index_info,
        fit_info=fitted.info,
        title=plan.final.name,
    )


def _prediction_grid(
    plan: Plan, built, predictions: SplitPredictions, split_metrics: dict, path: Path, title: str
) -> None:
    """A grid of one split's images: every mistake first, then correct ones spread over persons."""
    from train import pipeline

    records, probs, pred = predictions.records, predictions.probs, predictions.pred
    right = [bool(p == t) for p, t in zip(pred, predictions.y)]
    shown = plots.pick_grid(right, [s.person for s in records])
    images = pipeline.load_images([records[i].path for i in shown], plan.cfg.model.input_size)
    if built.output_kind == "sigmoid":  # the probability of the predicted class
        confidence = [float(probs[i][0] if pred[i] else 1 - probs[i][0]) for i in shown]
    else:
        confidence = [float(probs[i].max()) for i in shown]
    plots.plot_predictions(
        images,
        [records[i].label for i in shown],
        [plan.labels[pred[i]] for i in shown],
        confidence,
        [records[i].person for i in shown],
        path,
        plots.grid_caption(title, split_metrics, right, shown),
    )
