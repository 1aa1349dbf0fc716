"""Training a student: the Ray Train worker loop, one step, checkpoints, epoch plan, DDP, β's rank table."""
