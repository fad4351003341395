"""Reinforcement learning with verifiable rewards: the GRPO family (datawall.train.objectives.grpo) on the one
loop, rollouts from datawall's own batched sampler, rewards from the task's verifier (or any reward function).

    from datawall.rl import RLConfig, run_rl
    run_rl("runs/base/checkpoint", RLConfig(task="arith", task_args={"digits": 3, "ops": "add"}), "runs/rl")

Importing the package is light (RLConfig is pydantic only); run_rl and Reward load torch when first used.
"""

from datawall.rl.config import RLConfig

__all__ = ["RLConfig", "Reward", "RewardFn", "run_rl"]


def __getattr__(name: str):
    if name == "run_rl":
        from datawall.rl.run import run_rl

        return run_rl
    if name in ("Reward", "RewardFn"):
        from datawall.rl import rewards

        return getattr(rewards, name)
    raise AttributeError(f"module 'datawall.rl' has no attribute {name!r}")
