"""Missed-message recovery per order room: offsets, epochs, bounded history, replay on reconnect."""
