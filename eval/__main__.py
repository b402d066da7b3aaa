"""`python -m eval …` is `workbench eval …`."""

from .cli import eval_app

eval_app(prog_name="python -m eval")
