"""Privacy benchmarks: accuracy against ε with differential privacy on features
(``dp_accuracy``) and what an inversion decoder recovers from features (``leakage``)."""
