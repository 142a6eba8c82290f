"""capflow's benchmarks (`capflow bench`) and stress harness (`capflow stress`)."""
