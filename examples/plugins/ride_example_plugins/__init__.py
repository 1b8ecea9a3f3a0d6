"""Example ride-pipeline plugins: JPEG compression and Gaussian-noise majority-vote smoothing
(two defenders not in the RIDE paper) and a small MLP classifier."""
