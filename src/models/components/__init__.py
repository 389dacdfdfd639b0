"""Plain ``nn.Module`` networks. Each takes its input shape and class count as arguments."""
