"""What runs, saves and distributes an evolution for any application: checkpoints, islands over
torch.distributed, atomic result files and the benchmark harness. Uses only the engine."""
