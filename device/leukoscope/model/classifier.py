"""A TFLite classifier: float input in, class probabilities out, on the LiteRT runtime."""

from __future__ import annotations

import logging
import threading

import numpy as np

from leukoscope.core.errors import BundleError
from leukoscope.model.runtime import interpreter_class, runtime_notes_silenced

logger = logging.getLogger(__name__)


class TFLiteClassifier:
    """Runs one .tflite model: one input at a time, or a batch when its batch is dynamic.

    Quantisation scale and zero-point are read from the interpreter, never assumed,
    so int8, uint8 and float models all take the same float input.
    """

    def __init__(self, model: bytes, *, name: str = "model.tflite", num_threads: int = 1) -> None:
        """Load a model from its bytes (already hash-checked by the caller).

        Args:
            model: the .tflite file's content.
            name: how errors refer to the model.
            num_threads: interpreter threads (from config).
        """
        interpreter_cls, self.runtime = interpreter_class()
        try:
            with runtime_notes_silenced():  # its XNNPACK note on every load
                self._interp = interpreter_cls(model_content=model, num_threads=num_threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{name}: the runtime cannot load this model ({exc})") from None
        inputs = self._interp.get_input_details()
        outputs = self._interp.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(
                f"{name}: expected one input and one output tensor, "
                f"got {len(inputs)} and {len(outputs)}"
            )
        self._in = inputs[0]
        self._out = outputs[0]
        self.num_threads = num_threads
        #: The batch size the interpreter's tensors are allocated for now.
        self._batch = int(self._in["shape"][0])
        # The interpreter is not thread-safe; the daemon and a bench may share one.
        self._lock = threading.Lock()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape, e.g. (1, 128, 128, 3)."""
        return tuple(int(d) for d in self._in["shape"])

    @property
    def dynamic_batch(self) -> bool:
        """True when the model was exported with a free batch dimension (shape signature -1).

        Only such a model can classify N inputs in one invoke (`predict_batch`).
        """
        signature = self._in.get("shape_signature")
        return signature is not None and len(signature) > 0 and int(signature[0]) == -1

    @property
    def input_dtype(self) -> str:
        """The input tensor's dtype name (int8 for the shipped models)."""
        return str(np.dtype(self._in["dtype"]).name)

    @property
    def num_outputs(self) -> int:
        """How many values the model returns (1 for a sigmoid, 2+ for a softmax)."""
        return int(np.prod(self._out["shape"]))

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in["dtype"])
        scale, zero = self._in["quantization"]
        if dtype.kind == "f" or scale == 0:
            return x.astype(dtype)
        info = np.iinfo(dtype)
        # In place: a batch of crops is megabytes, and temporaries cost as much as the maths.
        q = x / scale
        q += zero
        np.round(q, out=q)
        np.clip(q, info.min, info.max, out=q)
        return q.astype(dtype)

    def _dequantize(self, q: np.ndarray) -> np.ndarray:
        scale, zero = self._out["quantization"]
        if np.dtype(self._out["dtype"]).kind == "f" or scale == 0:
            return q.astype(np.float32)
        return ((q.astype(np.float32) - zero) * scale).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """One preprocessed float image (h, w, c) -> the model's outputs as float32."""
        want = self.input_shape[1:]
        if tuple(x.shape) != want:
            raise ValueError(f"input shape {tuple(x.shape)} != model input {want}")
        return self.predict_batch(x[None, ...]).reshape(-1)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """N preprocessed float images (N, h, w, c) -> (N, outputs) float32, in one invoke.

        The input tensor is resized (and the interpreter's tensors reallocated) only when N
        differs from the previous call's. N = 0 returns an empty (0, outputs) array without
        running the model. N > 1 needs a model exported with a dynamic batch.
        """
        want = self.input_shape[1:]
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(f"batch shape {tuple(x.shape)} != (N, {', '.join(map(str, want))})")
        n = int(x.shape[0])
        if n == 0:
            return np.zeros((0, self.num_outputs), np.float32)
        if n > 1 and not self.dynamic_batch:
            raise ValueError(
                f"this model has a fixed batch of {self.input_shape[0]}: it cannot classify "
                f"{n} inputs in one call (export it with a dynamic batch)"
            )
        q = self._quantize(x)
        with self._lock:
            if n != self._batch:
                self._interp.resize_tensor_input(self._in["index"], [n, *want], strict=True)
                self._interp.allocate_tensors()
                self._batch = n
            self._interp.set_tensor(self._in["index"], q)
            self._interp.invoke()
            out = self._interp.get_tensor(self._out["index"]).copy()
        return self._dequantize(out).reshape(n, -1)
