"""Decisions: heuristic, LinUCB, Thompson sampling, DQN, cut-point selection, trace simulator and
off-policy evaluation. The core never imports grpc."""
