"""Example ride-pipeline plugins: JPEG compression, Gaussian-noise majority-vote smoothing and
feature squeezing (three defenders not in the RIDE paper; the last a plain function) and a
small MLP classifier."""
