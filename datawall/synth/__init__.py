"""Synthetic data: teachers write worked solutions for unlabelled problems (generate), verified, deduplicated and
costed; how much the student resembles its teacher; self-improvement; model collapse over generations."""
