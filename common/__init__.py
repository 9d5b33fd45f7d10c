"""Shared by the edge and the cloud: tensor <-> proto conversion, feature codecs, model bundles
(manifest, split, profile, calibrate), the error hierarchy, settings base and auth primitives."""
