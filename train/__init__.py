"""Training side of ML-PulseChecker: event log -> features -> labels -> RandomForest -> evaluation."""
