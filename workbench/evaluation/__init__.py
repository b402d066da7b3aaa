"""Evaluation: lip-sync scores (SyncNet LSE-C/LSE-D/AV offset, a weight-free landmark metric) and latency,
over test suites, with run reports, run comparison and a regression gate.

Entry points: `workbench.evaluation.runner.run_suite`, `workbench.evaluation.compare.compare_runs`, `workbench.evaluation.gate.compare_summaries`,
`workbench.evaluation.report.load_run`, and the CLI `workbench eval` (`workbench.evaluation.cli.eval_app`).
"""
