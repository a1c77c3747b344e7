"""The Gymnasium host loop on CleanRL dqn_jax.py's default work (the ``cleanrl-cartpole``
preset: CartPole-v1 on the host, 500,000 env steps, 1 env, an update of batch 128 every 10
steps), next to CleanRL's own ``dqn_jax.py`` run in the same invocation, each process timed
whole: ``benchmarks/cleanrl.py --algo dqn`` (see its docstring for the rows and columns).

    python benchmarks/gymnasium_throughput.py --cleanrl-python PATH --cleanrl-dir PATH
                                              [--total-steps N] [--repeats R]
                                              [--cleanrl-host-tuning]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cleanrl import main  # noqa: E402

if __name__ == "__main__":
    main(default_algo="dqn")
