"""The hostile-client suite run as a benchmark: each attack's effect on a legitimate device,
repeated, with a baseline configuration side by side."""
