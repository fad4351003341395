"""Safety for real models: the bundled lab-safety scenarios, `datawall safety eval`, and the inspect-ai task.

The worlds' hazard cases live in datawall.tasks (Task.hazard), the rubric scorer and the safety metrics every
lever reports in datawall.rewards (rubric.py, rubric_judge.py, rubric_task.py), so the levers can use them.
"""
