"""`python -m workbench.evaluation …` is `workbench eval …`."""

from workbench.evaluation.cli import eval_app

eval_app(prog_name="python -m workbench.evaluation")
