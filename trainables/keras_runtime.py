"""Imports TensorFlow and Keras quietly, on the TensorFlow backend, within the trial's CPUs.

Every Keras module of tunepipe imports the frameworks through here (and nothing outside
``trainables/keras_*.py`` imports them at all), so the settings below are in force before
TensorFlow's runtime starts:

* ``KERAS_BACKEND=tensorflow``: the training step uses ``tf.GradientTape``;
* ``TF_CPP_MIN_LOG_LEVEL=2``: TensorFlow's C++ start-up lines (CPU instruction sets, oneDNN
  notices) stay out of the user's terminal; real errors still print. The level is also applied
  to the records TensorFlow writes through Abseil while it loads, which ignore the variable
  (:mod:`trainables.native_stderr`);
* Python-side TensorFlow and absl loggers at ERROR.
"""

from __future__ import annotations

import logging
import os

# Before the imports below: TensorFlow reads these once, when it loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_BACKEND"] = "tensorflow"

from trainables.native_stderr import min_log_level, native_log_threshold

# TensorFlow 2.21 prints some start-up records through Abseil regardless of the variable.
with native_log_threshold(min_log_level()):
    import keras
    import tensorflow as tf

logging.getLogger("tensorflow").setLevel(logging.ERROR)

# TensorFlow reserves nearly all of a GPU's memory when it first touches it: with that, a
# second trial packed on the same GPU (resources.gpu: 0.5) could not start. Growth on demand
# must be set before the GPUs are initialised, so it is set at import.
for _gpu in tf.config.list_physical_devices("GPU"):
    tf.config.experimental.set_memory_growth(_gpu, True)
logging.getLogger("absl").setLevel(logging.ERROR)

if keras.backend.backend() != "tensorflow":  # keras was imported earlier with another backend
    raise RuntimeError(
        f"the Keras trainable needs the TensorFlow backend, keras runs on "
        f"{keras.backend.backend()!r}: unset KERAS_BACKEND or set it to tensorflow"
    )

__all__ = ["keras", "limit_cpu_threads", "tf"]

_log = logging.getLogger(__name__)


def limit_cpu_threads(cpus: int) -> None:
    """Let TensorFlow compute with ``cpus`` threads, not one per core of the node.

    One intra-op pool of ``cpus`` threads and one inter-op thread: the small models here gain
    nothing from running independent ops side by side, and the two pools together then stay
    within what Ray reserved for the trial. TensorFlow fixes its pools when it first runs an
    op; a reused trial actor (same resources, so the same ``cpus``) keeps them.
    """
    cpus = max(1, int(cpus))
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(cpus)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        current = threading.get_intra_op_parallelism_threads()
        if current != cpus:
            _log.warning(
                "TensorFlow already started with %s intra-op threads; the trial asked for %s",
                current,
                cpus,
            )
