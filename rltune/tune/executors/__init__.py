"""Executors: where trials run (local processes, a vmapped population, a Ray cluster).

The protocol, the typed events and the one registry are in `base`.
"""
