"""capflow's domain: plain Python, no framework."""
