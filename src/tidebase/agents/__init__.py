"""What agents need beyond steps: approval gates, child runs and fan-out, usage, snapshots, time travel and forks.

Each feature talks to the run it serves through the narrow session of `tidebase.core.session`, never through the
run context's private parts or the facade.
"""
