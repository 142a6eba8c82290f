"""Broker account managers behind one interface; the paper broker is the first."""
