"""Temporal from the core's side: the client (client), the messages sent to workflows (signals), and
the schedules the worker applies (schedules)."""
