"""Cloud gateway: gRPC servicers, REST bridge, dynamic batching, backends (onnxruntime, Triton),
model registry, stores (sqlite/postgres, memory/redis) and metrics."""
