"""Verifiable task worlds: deterministic problems, worked solutions, answer extraction and verifiers."""

from datawall.tasks.base import Problem, Task, TaskIndexError, TaskSettings, answers_match, extract_final_answer
from datawall.tasks.registry import TASKS, get_task, list_tasks, parse_task_args
from datawall.tasks.safe_eval import ExpressionError, Limits, safe_eval

__all__ = [
    "TASKS",
    "ExpressionError",
    "Limits",
    "Problem",
    "Task",
    "TaskIndexError",
    "TaskSettings",
    "answers_match",
    "extract_final_answer",
    "get_task",
    "list_tasks",
    "parse_task_args",
    "safe_eval",
]
