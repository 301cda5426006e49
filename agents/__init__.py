"""Policies and meta-learners."""
