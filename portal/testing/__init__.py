"""Test helpers shipped with the portal: the Nylas v3 emulator and the pytest plugin."""
