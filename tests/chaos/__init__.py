"""The chaos suite (issue 14 §3): the daemon killed with SIGKILL at seeded points of a scripted live session against
the local world, restarted on the same state directory, and checked against the world's own truth at the end."""
