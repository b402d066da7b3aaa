"""Evaluation: lip-sync scores (SyncNet LSE-C/LSE-D/AV offset, a weight-free landmark metric) and latency,
over test suites, with run reports, run comparison and a regression gate.

Entry points: `eval.runner.run_suite`, `eval.compare.compare_runs`, `eval.gate.compare_summaries`,
`eval.report.load_run`, and the CLI `workbench eval` (`eval.cli.eval_app`).
"""
