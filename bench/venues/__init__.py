"""Venue emulators on 127.0.0.1 that the real ccxt library talks to: for the tests of the live
adapters and for `bench/venue.py`, with no internet."""
