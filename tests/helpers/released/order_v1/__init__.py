"""The order workflow as released at 495515c (before workflow versioning), frozen for the upgrade test.

Never edit these files: they are what production ran. tests/saga/test_upgrade.py starts orders on
this code, then moves them to today's workflow, as a deploy does.
"""
