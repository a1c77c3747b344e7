"""Small configs shared by the tests (a few seconds per run on a 2-core CPU)."""

SMALL = dict(
    env="CartPole-v1",
    variant="ddqn",
    total_steps=2_000,
    num_envs=2,
    train_every=2,
    learning_starts=200,
    batch_size=32,
    buffer_size=1_000,
    num_chunks=2,
    eval_episodes=2,
    hidden_sizes=(16,),
    target_period=100,
)
