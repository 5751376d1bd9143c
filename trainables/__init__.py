"""Framework implementations of the trainable contract, and the adapter that runs them in Tune.

Nothing here imports a framework at package import time: torch, TensorFlow and scikit-learn are
imported only inside their own modules, when a trial of that framework starts.
"""
