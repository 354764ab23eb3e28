"""Helpers every layer may use: atomic writes, and the runtime (device, autocast, machine)."""
