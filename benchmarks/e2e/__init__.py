"""End-to-end: the demo and hybrid vs cloud-only vs edge-only over an emulated network."""
