"""dqn-jax: functional deep Q-learning in JAX."""

__version__ = "0.1.0"
