"""What a stage's report adds beyond the side-by-side evaluation: the base every stage's measurer
extends."""

from __future__ import annotations

from accel.core.stages import Settings, StageResult
from accel.evaluate import EvalConfig, Evaluation
from accel.report import Report


class Measurer:
    """Override what a stage's report needs; every default adds nothing.

    ``observe`` sees the model at the named points the stage passes (the prune stage: "pruned",
    before fine-tuning); ``extra_models`` are sampled in the same run as the original and the
    stage's model (a baseline sampler), and ``add_sections`` gets their evaluations beside the
    stage's result.
    """

    def __init__(
        self, original, settings: Settings, eval_config: EvalConfig, progress: bool = True
    ):
        self.original, self.settings, self.eval_config, self.progress = (
            original,
            settings,
            eval_config,
            progress,
        )

    def observe(self, point: str, model) -> None:
        """The stage reached ``point`` with ``model``."""

    def extra_models(self, model) -> list:
        return []

    def before_evaluation(self, model) -> None:
        """Right before the evaluation samples ``model``."""

    def add_sections(self, report: Report, result: StageResult, extras: list[Evaluation]) -> None:
        """What only this stage's report shows; ``extras`` are the evaluations of
        ``extra_models``."""

    def ablation(self, load_original) -> tuple[dict, str] | None:
        """The stage's ablation (``--ablation``): its data and markdown, or None where it has
        none."""
        return None
