"""The notebook API: `saeeval.evaluate`, `Results`, and the shared evaluator the command line runs too."""
