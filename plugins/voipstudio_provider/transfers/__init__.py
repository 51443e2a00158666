"""Transfers from VoIPstudio to other systems."""
