"""Reinforcement learning with verifiable rewards: the GRPO family (datawall.train.objectives.grpo) on the one
loop, rollouts from datawall's own batched sampler, rewards from the task's verifier (or any reward function).

    from datawall.rl import RLConfig, run_rl
    run_rl("runs/base/checkpoint", RLConfig(task="arith", task_args={"digits": 3, "ops": "add"}), "runs/rl")
"""

from datawall.rl.config import RLConfig
from datawall.rl.rewards import Reward, RewardFn
from datawall.rl.run import run_rl

__all__ = ["RLConfig", "Reward", "RewardFn", "run_rl"]
