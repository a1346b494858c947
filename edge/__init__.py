"""Device runtime: preprocessing, labels and TFLite inference. Never imports TensorFlow."""
