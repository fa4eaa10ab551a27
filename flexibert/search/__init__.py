"""The search: run-folder layout, journal, strategies (BOSHNAS and baselines), controller, candidate job and reports."""
