"""Operators of the VoIPstudio provider."""
