"""Studies: levers x sizes x budgets as jobs in a content-addressed run store, run locally or on Ray."""
