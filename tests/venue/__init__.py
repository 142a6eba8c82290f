"""Venue emulators for the tests: real HTTP servers on 127.0.0.1 that real venue clients
(ccxt) talk to, with switchable faults and a record of what they received."""
