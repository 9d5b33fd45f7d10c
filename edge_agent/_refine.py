"""Cloud refinement over the device's session: what a cascade (``common.pipeline.Cascade``) or
any other caller uses to have a larger cloud model read an input the device holds.

:func:`session_refiner` gives an async function that codes a tensor (the original input or a
region of it — never the edge model's features), sends it on the open session as a full-model
request for the cloud model (``cut_point`` empty) and returns the model's outputs by name. Keep
answers small: an answer larger than the channel's receive limit (gRPC's default 4 MiB) ends the
stream, so a recogniser with a large character list is served with its best-path head
(``aiml021 ctc-head``). Requests carry a deadline and an idempotency key; failures raise the gateway's error
(``common.errors``), so the caller can keep its local answer.
"""

from __future__ import annotations

import hashlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from common.errors import Internal
from edge_agent._convert import OutboundRequest
from edge_agent._features import encode_features
from edge_agent._stream import SessionClient

if TYPE_CHECKING:  # common.pipeline needs the ocr extra (OpenCV); the agent does not
    from common.pipeline import CascadeSpec

Refiner = Callable[[npt.NDArray[np.float32]], Awaitable[dict[str, npt.NDArray[Any]]]]


def session_refiner(
    client: SessionClient,
    model: str,
    *,
    version: str = "",
    codec: str = "raw",
    deadline_s: float = 10.0,
) -> Refiner:
    """An async ``x -> cloud model output`` over ``client``'s session (see the module doc)."""
    prefix = uuid.uuid4().hex[:12]
    seq = itertools.count()

    async def refine(x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        features = encode_features(x, codec)
        rid = f"refine-{prefix}-{next(seq)}"
        req = OutboundRequest(
            request_id=rid,
            idempotency_key=rid,
            model_name=model,
            model_version=version,
            cut_point="",
            features=features,
            deadline=time.time() + deadline_s,
            digest=hashlib.sha256(features.payload).digest(),
        )
        answer = await client.submit(req)
        if not answer.outputs:
            raise Internal(f"cloud model {model!r} answered without output tensors")
        return answer.outputs

    return refine


def cascade_refiner(
    client: SessionClient, cascade: CascadeSpec, deadline_s: float = 10.0
) -> Refiner:
    """:func:`session_refiner` for a pipeline's ``cascade`` section: its cloud model, version
    and codec."""
    return session_refiner(
        client,
        cascade.cloud_model,
        version=cascade.cloud_version,
        codec=cascade.codec,
        deadline_s=deadline_s,
    )


__all__ = ["Refiner", "cascade_refiner", "session_refiner"]
